"""Training and evaluation data: BEIR loading, retrieval training sets, hard negatives, grounded SFT and preference pairs.

Names are imported lazily from their modules, so importing this package is cheap.
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.data.answerability import answerability_pairs, with_gold_removed
    from llama_index_ragtune.data.beir import BeirDataset, load_beir
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.data.grounded import GroundedSFTBuilder
    from llama_index_ragtune.data.multihop import MultiHopExample, MultiHopSet, build_squad_multihop
    from llama_index_ragtune.data.negatives import HardNegativeMiner, MiningStats
    from llama_index_ragtune.data.preference import PreferenceBuilder
    from llama_index_ragtune.data.qa import QAExample, load_scifact_claims, load_squad_v2
    from llama_index_ragtune.data.qa_jsonl import GroundedQAExample, load_grounded_qa
    from llama_index_ragtune.data.schema import Negative, RetrievalDataset
    from llama_index_ragtune.data.synthetic import (
        CopyFilter,
        QualityFilter,
        SyntheticQueryError,
        generate_synthetic_queries,
    )

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "load_beir": "beir",
    "BeirDataset": "beir",
    "DataError": "errors",
    "RetrievalDataset": "schema",
    "Negative": "schema",
    "generate_synthetic_queries": "synthetic",
    "CopyFilter": "synthetic",
    "QualityFilter": "synthetic",
    "SyntheticQueryError": "synthetic",
    "HardNegativeMiner": "negatives",
    "MiningStats": "negatives",
    "QAExample": "qa",
    "load_squad_v2": "qa",
    "load_scifact_claims": "qa",
    "load_grounded_qa": "qa_jsonl",
    "GroundedQAExample": "qa_jsonl",
    "GroundedSFTBuilder": "grounded",
    "PreferenceBuilder": "preference",
    "MultiHopExample": "multihop",
    "MultiHopSet": "multihop",
    "build_squad_multihop": "multihop",
    "answerability_pairs": "answerability",
    "with_gold_removed": "answerability",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
