"""The pipeline's last step: write the served parts of a run as the next bundle version.

Everything goes into ``<out>/bundles/<version>.tmp-*`` first (model folders are
hard-linked from the work folder where the file system allows, else copied),
the manifest with every file's hash is written last, the folder is renamed into
place (``_atomic.atomic_dir``), and only then does ``CURRENT`` move to it. A
failure at any point leaves the previous version served and loadable. The version
name is picked, written and served holding the bundles folder's writer lock
(:func:`~.bundle_folders.bundle_lock`), so concurrent writers get distinct versions. See
:mod:`~llama_index_ragtune.pipeline.bundle` for the layout.

Example::

    outputs = write_bundle(ctx, out="runs/my-shop")   # {'version': 'v2', 'path': ...}
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import (
    atomic_dir,
    atomic_write_text,
    sha256_file,
)
from llama_index_ragtune.pipeline.bundle_files import copy_tree
from llama_index_ragtune.pipeline.bundle_folders import (
    BUNDLES_DIR,
    CURRENT,
    MANIFEST,
    NEW_VERSION,
    bundle_lock,
    check_current_replaceable,
    next_version,
)
from llama_index_ragtune.pipeline.bundle_manifest import (
    FORMAT,
    FORMAT_VERSION,
    file_digests,
    write_manifest,
)
from llama_index_ragtune.pipeline.context import RunContext
from llama_index_ragtune.pipeline.package_versions import package_versions

_copy_tree = copy_tree  # one name for every copy of this writer (a test pauses it mid-write)


def _reference(value: str | None, resolved: str) -> str | None:
    """How the manifest names a starting model: None for the bundled default, else the
    absolute folder (a local path) or the hub id."""
    if value is None:
        return None
    path = Path(resolved)
    return str(path.resolve()) if path.exists() else resolved


def _models(ctx: RunContext, tmp: Path) -> dict[str, Any]:
    config, state = ctx.config, ctx.state
    models: dict[str, Any] = {}
    if state.get("encoder", "promoted"):
        _copy_tree(Path(ctx.served_encoder), tmp / "encoder")
        models["encoder"] = {"path": "encoder", "promoted": True}
    else:
        models["encoder"] = {"path": None, "promoted": False}
    models["encoder"]["reference"] = _reference(config.encoder_model, ctx.base_encoder)
    models["encoder"]["base"] = ctx.base_encoder
    served = ctx.served_reranker
    if served:
        _copy_tree(Path(served["path"]), tmp / "reranker")
        models["reranker"] = {
            "path": "reranker",
            "promoted": True,
            "retrieval_weight": served.get("retrieval_weight"),
            "base": config.reranker_model or ctx.base_encoder,
        }
    else:
        models["reranker"] = None
    if state.get("decoder", "promoted"):
        _copy_tree(Path(ctx.served_decoder), tmp / "decoder")
        models["decoder"] = {"path": "decoder", "promoted": True}
    else:
        models["decoder"] = {"path": None, "promoted": False}
    models["decoder"]["reference"] = _reference(config.decoder_model, ctx.base_decoder)
    models["decoder"]["base"] = ctx.base_decoder
    return models


def _data(ctx: RunContext) -> dict[str, Any]:
    from llama_index_ragtune.pipeline.state import hash_inputs

    nodes = ctx.path("nodes.json")
    queries = ctx.path("data", "queries.json")
    source = ctx.queries_source
    return {
        "documents": {
            "count": len(ctx.documents),
            "sha256": hash_inputs(ctx.documents, None),
        },
        "nodes": {"count": len(ctx.nodes), "sha256": sha256_file(nodes)},
        "queries": {
            "source": ctx.state.get("data", "queries_source"),
            "file": None if source is None else str(Path(source).resolve()),
            "file_sha256": None if source is None else sha256_file(source),
            "resolved_sha256": sha256_file(queries),
            "train": len(ctx.split("train")),
            "test": len(ctx.split("test")),
            "dev": len(ctx.split("dev")),
        },
    }


def write_bundle(ctx: RunContext, out: str | Path, report: bool = True) -> dict[str, Any]:
    """Write the next bundle version under ``<out>/bundles`` and point ``CURRENT`` at it."""
    from llama_index_ragtune.evaluation.results import EvaluationResults

    root = Path(out) / BUNDLES_DIR
    root.mkdir(parents=True, exist_ok=True)
    config = ctx.config
    retriever = ctx.served_retriever()
    index_folder = ctx.path(
        "index", "baseline" if retriever is ctx.baseline_retriever else "served"
    )
    evaluation = ctx.path("evaluation.json")
    # the lock makes the version name ours until CURRENT names it: another writer (a second
    # run, a refresh, a rollback) waits, and what a killed writer left is removed first
    with bundle_lock(root):
        from llama_index_ragtune.pipeline.refresh_writer import reconcile_history

        reconcile_history(root)  # a stopped refresh's line, before CURRENT leaves its version
        version = next_version(root)
        decisions = []
        with atomic_dir(root / version, NEW_VERSION, "the bundle writer") as tmp:
            _copy_tree(index_folder, tmp / "index")
            models = _models(ctx, tmp)
            report_files = None
            if evaluation.is_file():
                results = EvaluationResults.load(evaluation)
                results.bundle_version = version
                results.save(tmp / "evaluation.json")
                decisions = [d.__dict__ for d in results.decisions]
                if report:
                    from llama_index_ragtune.evaluation.dashboard import write_report

                    write_report(results, tmp / "report", source="evaluation.json")
                    report_files = {"html": "report/report.html", "markdown": "report/report.md"}
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "version": version,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "packages": package_versions(),
                "config": config.to_dict(),
                "config_fingerprint": config.fingerprint(),
                "data": _data(ctx),
                "models": models,
                "retrieval": {
                    "fusion": retriever.params(),
                    "similarity_top_k": config.similarity_top_k,
                    "rerank_candidates": config.rerank_candidates,
                },
                "generation": {
                    # the decoder threshold of bundles written before refusal policies; a
                    # recorded policy carries its own threshold
                    "refusal_threshold": None
                    if ctx.state.get("evaluate", "refusal_policy")
                    else ctx.state.get("evaluate", "refusal_threshold"),
                    "refusal_policy": ctx.state.get("evaluate", "refusal_policy"),
                    "max_sources": config.max_sources,
                    "max_source_chars": config.max_source_chars,
                    "max_new_tokens": config.max_new_tokens,
                },
                "decisions": decisions or _decisions_from_state(ctx),
                "evaluation": "evaluation.json" if evaluation.is_file() else None,
                "report": report_files,
                "files": file_digests(tmp),
            }
            write_manifest(tmp, manifest)  # read back as loaders do, before it is served
        check_current_replaceable(root, version)
        atomic_write_text(root / CURRENT, version + "\n")
    return {
        "version": version,
        "path": str(root / version),
        "report": None if report_files is None else str(root / version / report_files["html"]),
        "manifest_sha256": hashlib.sha256((root / version / MANIFEST).read_bytes()).hexdigest(),
    }


def _decisions_from_state(ctx: RunContext) -> list[dict[str, Any]]:
    out = []
    for part in ("encoder", "fusion", "reranker", "decoder"):
        decision = ctx.state.get(part, "decision")
        if decision:
            out.append({"part": part, **decision})
    return out
