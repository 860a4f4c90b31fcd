"""Default fusion parameters of the HybridRetriever, chosen on SciFact *train* queries.

The values come from ``ragtune bench retrieval --split train --sweep`` (bundled
MiniLM through ONNX Runtime + our BM25; grid over fusion mode, RRF k, dense
weight ``alpha`` and per-side depth; best mean nDCG@10 over the 809 train
queries, ties within 0.001 broken by Recall@100; the test split is never used).
Its output is recorded in ``benchmarks/results/fusion_sweep_scifact_train.md``.
``FUSION_PRESETS`` holds the best setting found for each mode;
``DEFAULT_FUSION_MODE`` names the best mode overall.

Example::

    from llama_index_ragtune.retrievers.defaults import DEFAULT_FUSION_MODE, FUSION_PRESETS

    FUSION_PRESETS[DEFAULT_FUSION_MODE]   # {'alpha': ..., 'rrf_k': ..., 'dense_top_k': ..., 'sparse_top_k': ...}
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_FUSION_MODE", "FUSION_PRESETS", "fusion_mode_name", "fusion_preset"]

#: best mode on SciFact train (see module docstring): z-score fusion, train nDCG@10 0.7327
#: (dense alone 0.6602, BM25 alone 0.6960, best RRF 0.7278)
DEFAULT_FUSION_MODE = "zscore"

#: per-mode parameters: alpha = weight of the dense side (1 - alpha for BM25),
#: rrf_k = RRF smoothing constant (RRF only), *_top_k = candidates fetched per side.
FUSION_PRESETS: dict[str, dict[str, Any]] = {
    "rrf": {"alpha": 0.45, "rrf_k": 5.0, "dense_top_k": 200, "sparse_top_k": 200},
    "minmax": {"alpha": 0.45, "rrf_k": 60.0, "dense_top_k": 200, "sparse_top_k": 200},
    "zscore": {"alpha": 0.5, "rrf_k": 60.0, "dense_top_k": 100, "sparse_top_k": 200},
}


def fusion_preset(mode: str | None = None) -> dict[str, Any]:
    """A copy of the preset for ``mode`` (``None``: the default mode), with ``fusion_mode`` set."""
    mode = DEFAULT_FUSION_MODE if mode is None else mode
    if mode not in FUSION_PRESETS:
        raise ValueError(f"unknown fusion mode {mode!r}; choose one of {', '.join(FUSION_PRESETS)}")
    return {"fusion_mode": mode, **FUSION_PRESETS[mode]}


def fusion_mode_name(value: Any, name: str = "fusion_mode") -> str:
    """``value`` if it names a fusion mode; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    Example::

        fusion_mode_name("rrf")    # 'rrf'; fusion_mode_name("bogus") raises ValueError
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if value not in FUSION_PRESETS:
        raise ValueError(f"{name} must be one of {', '.join(FUSION_PRESETS)}, got {value!r}")
    return value
