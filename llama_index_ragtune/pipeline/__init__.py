"""The tuning pipeline: your documents (+ questions) -> a tuned, evaluated, versioned bundle.

- ``TuningPipeline`` / ``tune``: parse -> hybrid index -> training data -> tune encoder,
  fusion, reranker, decoder (each promoted only when it beats the part it replaces)
  -> evaluate on held-out questions -> bundle + report (``ragtune tune``, ``ragtune demo``);
- ``PipelineConfig``: models, time budgets, evaluation settings;
- ``load_bundle``: the bundle as a ready ``CitationQueryEngine`` plus its parts;
- ``read_documents`` / ``load_queries``: the input formats;
- ``refresh_bundle`` / ``rollback_bundle``: retrain from user feedback and promote only a
  measured win as the next bundle version; serve an earlier version again.

Names are imported lazily from their modules, so importing this package is cheap.

Example::

    from llama_index_ragtune.pipeline import TuningPipeline, load_bundle

    TuningPipeline("docs/", out="runs/shop", queries="queries.jsonl").run()
    response = load_bundle("runs/shop").query_engine.query("apple return policy?")
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "TuningPipeline": "runner",
    "PipelineResult": "runner",
    "tune": "runner",
    "PipelineConfig": "config",
    "STEPS": "config",
    "SKIPPABLE": "config",
    "Bundle": "bundle",
    "BundleError": "bundle_folders",
    "load_bundle": "bundle",
    "verify_bundle": "bundle_manifest",
    "bundle_versions": "bundle_folders",
    "current_version": "bundle_folders",
    "set_current_version": "bundle_folders",
    "LabelledQuery": "queries",
    "load_queries": "queries",
    "split_queries": "queries",
    "read_documents": "sources",
    "parse_documents": "sources",
    "synthetic_queries": "query_sources",
    "feedback_queries": "query_sources",
    "PipelineStateError": "state",
    "refresh_bundle": "refresh",
    "rollback_bundle": "rollback",
    "RefreshResult": "refresh",
    "RefreshError": "refresh_data",
    "read_history": "refresh_writer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
