"""A refresh's set-up: the bundle's own settings and models, its nodes, feedback worth reading.

Used by :func:`~llama_index_ragtune.pipeline.refresh.refresh_bundle`; private to the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.refresh_data import RefreshError

# the refresh's one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.pipeline.refresh")


def _refresh_config(
    manifest: dict[str, Any], folder: Path, config: Any, time_budget: float | None
) -> Any:
    """The bundle's own settings (or ``config``) with the bundle's models as starting models."""
    from llama_index_ragtune.finetuning.budget import TrainingBudget
    from llama_index_ragtune.pipeline.config import PipelineConfig

    if config is None:
        saved = dict(manifest.get("config") or {})
        fields = {f.name for f in dataclasses.fields(PipelineConfig)}
        saved = {k: v for k, v in saved.items() if k in fields}
        saved["force_promotion"] = ()
        try:
            for part in ("encoder", "reranker", "decoder"):
                budget = saved.get(f"{part}_budget")
                if isinstance(budget, dict):
                    saved[f"{part}_budget"] = TrainingBudget(**budget)
            config = PipelineConfig(**saved)
        except (TypeError, ValueError) as exc:  # a manifest edited by hand
            raise _edited_config(folder, exc) from None
    models = manifest["models"]

    def start(part: str) -> str | None:
        entry = models.get(part) or {}
        if entry.get("path"):
            return str(folder / entry["path"])
        return entry.get("reference")

    reranker = models.get("reranker")
    try:  # the bundle's BM25 settings, checked as any config's (a hand-edited manifest)
        config = dataclasses.replace(
            config,
            **_bundle_bm25(manifest, config),
            encoder_model=start("encoder"),
            decoder_model=start("decoder"),
            reranker_model=str(folder / reranker["path"]) if reranker else config.reranker_model,
        )
    except (TypeError, ValueError) as exc:
        raise _edited_config(folder, exc) from None
    if time_budget is not None:
        config = config.with_time_budget(time_budget)
    return config


def _edited_config(folder: Path, exc: Exception) -> Exception:
    """The ``BundleError`` of a manifest whose recorded settings are not valid."""
    from llama_index_ragtune.pipeline.bundle_names import MANIFEST, BundleError

    return BundleError(
        f"{folder / MANIFEST}: its 'config' (the settings the refresh reuses) is not "
        f"valid: {str(exc)[:300]}; the manifest was edited: pass config= (a "
        "PipelineConfig) to refresh with other settings, or run the tuning pipeline "
        "again to write a fresh bundle"
    )


_BM25_SETTINGS = (
    ("bm25_analyzer", "analyzer", "plain"),
    ("bm25_language", "language", "english"),
    ("bm25_stopwords", "stopwords", "language"),
)
"""The BM25 settings a bundle records, the word for each, and what a bundle without it used."""


def _bundle_bm25(manifest: dict[str, Any], config: Any) -> dict[str, Any]:
    """The bundle's BM25 analyzer, language and stopwords (a config asking for others is
    warned about: a refresh retunes the models on the retriever the bundle serves)."""
    from llama_index_ragtune.pipeline.bundle_bm25 import shown_stopwords as _shown
    from llama_index_ragtune.retrievers.bm25_index import bm25_stopwords_value

    recorded = manifest.get("config") or {}
    kept = {}
    for name, word, default in _BM25_SETTINGS:
        kept[name] = recorded.get(name, default)
        if name == "bm25_stopwords":  # as the config holds it ("the,a" -> ['the', 'a'])
            try:
                kept[name] = bm25_stopwords_value(kept[name])
            except ValueError as exc:
                raise ValueError(f"PipelineConfig.bm25_stopwords: {exc}") from None
        if getattr(config, name) != kept[name]:
            logger.warning(
                "refresh: the bundle's BM25 %s %r is kept (the config asked for %r); "
                "a refresh retunes the models on the retriever the bundle serves: tune anew "
                "to change the %s",
                word,
                _shown(kept[name]),
                _shown(getattr(config, name)),
                word,
            )
    return kept


def _nodes_from_bundle(bundle: Any) -> list[Any]:
    nodes = list(bundle.retriever.index.docstore.docs.values())
    if not nodes:
        raise RefreshError(
            f"{bundle.path / 'index'} holds no nodes; pass docs= (--docs) to parse the documents"
        )
    return nodes


def _check_feedback(store: Any) -> None:
    """Raise ``RefreshError`` when the store has no record, or no record with a positive."""
    if len(store) == 0:
        raise RefreshError(
            f"nothing to learn from in {store.path}: the feedback store holds no records yet; "
            "record answers (FeedbackQueryEngine) and collect ratings or clicks first"
        )
    try:
        store.to_retrieval_dataset(split="all", negatives=False)
    except ValueError as exc:
        raise RefreshError(f"nothing to learn from in {store.path}: {exc}") from None
