"""Training and evaluation data: BEIR loading, retrieval training sets, hard negatives, grounded SFT and preference pairs.

Names are imported lazily from their modules, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "load_beir": "beir",
    "BeirDataset": "beir",
    "DataError": "errors",
    "RetrievalDataset": "schema",
    "Negative": "schema",
    "generate_synthetic_queries": "synthetic",
    "CopyFilter": "synthetic",
    "HardNegativeMiner": "negatives",
    "MiningStats": "negatives",
    "QAExample": "qa",
    "load_squad_v2": "qa",
    "load_scifact_claims": "qa",
    "GroundedSFTBuilder": "grounded",
    "PreferenceBuilder": "preference",
    "MultiHopExample": "multihop",
    "MultiHopSet": "multihop",
    "build_squad_multihop": "multihop",
    "answerability_pairs": "answerability",
    "with_gold_removed": "answerability",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
