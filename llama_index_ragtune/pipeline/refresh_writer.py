"""Write a refreshed bundle as the next version, and the log of refreshes and rollbacks.

The new version holds the refresh's served index and, for each model, the part
the refresh promoted or else the one the previous version served (hard-linked
from it where the file system allows, else copied), so every version loads on
its own even after older ones are deleted. It is written like every bundle
(``_atomic.atomic_dir``: the folder appears complete or not at all, the manifest
with every file's hash is written last) and only then does ``CURRENT`` move, all
holding the bundles folder's writer lock (``bundle_folders.bundle_lock``).

``bundles/history.jsonl`` records every refresh decision (promoted or not) and
every rollback, one JSON object a line, rewritten atomically under a lock.

Example::

    from llama_index_ragtune.pipeline.refresh_writer import read_history

    for entry in read_history("runs/shop"):
        print(entry["action"], entry["served"], entry.get("reason"))
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import (
    _parent_lock,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)
from llama_index_ragtune.pipeline.bundle import link_or_copy, package_versions
from llama_index_ragtune.pipeline.bundle_folders import (
    CURRENT,
    MANIFEST,
    bundle_lock,
    bundles_root,
    check_current_replaceable,
    next_version,
)
from llama_index_ragtune.pipeline.bundle_manifest import FORMAT, FORMAT_VERSION, file_digests
from llama_index_ragtune.pipeline.context import RunContext

HISTORY = "history.jsonl"
logger = logging.getLogger(__name__)


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=link_or_copy)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _models(ctx: RunContext, champion_dir: Path, old: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Each model entry of the new manifest: refreshed (from the work folder) or carried over."""
    state = ctx.state
    models: dict[str, Any] = {}
    for part in ("encoder", "decoder"):
        entry = dict(old.get(part) or {"path": None, "promoted": False})
        if state.get(part, "promoted"):
            served = ctx.served_encoder if part == "encoder" else ctx.served_decoder
            _copy_tree(Path(served), tmp / part)
            entry.update(path=part, promoted=True, refreshed=True)
        else:
            if entry.get("path"):
                _copy_tree(champion_dir / entry["path"], tmp / part)
                entry["path"] = part
            entry["refreshed"] = False
        models[part] = entry
    served = ctx.served_reranker
    old_reranker = old.get("reranker")
    if state.get("reranker", "promoted") and served:
        _copy_tree(Path(served["path"]), tmp / "reranker")
        models["reranker"] = {
            **(old_reranker or {}),
            "path": "reranker",
            "promoted": True,
            "refreshed": True,
            "retrieval_weight": served.get("retrieval_weight"),
        }
    elif old_reranker:
        _copy_tree(champion_dir / old_reranker["path"], tmp / "reranker")
        models["reranker"] = {**old_reranker, "path": "reranker", "refreshed": False}
    else:
        models["reranker"] = None
    return models


def write_refreshed_version(
    ctx: RunContext,
    champion_dir: Path,
    old_manifest: dict[str, Any],
    evaluation: Any,
    refresh: dict[str, Any],
    generation: dict[str, Any],
    data: dict[str, Any],
    report: bool = True,
) -> dict[str, Any]:
    """Write the refreshed parts as the next version beside ``champion_dir``; move ``CURRENT``.

    Returns ``{"version", "path", "report"}``. ``refresh_bundle`` calls it when the
    refreshed stack won.

    Example::

        written = write_refreshed_version(ctx, Path("runs/shop/bundles/v1"), manifest, results,
                                          refresh_info, manifest["generation"], data)
        written["version"]      # 'v2'
    """
    root = champion_dir.parent
    config = ctx.config
    retriever = ctx.served_retriever()
    index_folder = ctx.path(
        "index", "baseline" if retriever is ctx.baseline_retriever else "served"
    )
    report_files = None
    # the name stays ours until CURRENT names it (bundle_folders.bundle_lock)
    with bundle_lock(root):
        version = next_version(root)
        with atomic_dir(root / version) as tmp:
            _copy_tree(index_folder, tmp / "index")
            models = _models(ctx, champion_dir, old_manifest["models"], tmp)
            evaluation.bundle_version = version
            evaluation.save(tmp / "evaluation.json")
            if report:
                from llama_index_ragtune.evaluation.dashboard import write_report

                write_report(evaluation, tmp / "report", source="evaluation.json")
                report_files = {"html": "report/report.html", "markdown": "report/report.md"}
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "version": version,
                "parent": old_manifest["version"],
                "created": _now(),
                "packages": package_versions(),
                "config": config.to_dict(),
                "config_fingerprint": config.fingerprint(),
                "data": data,
                "models": models,
                "retrieval": {
                    "fusion": retriever.params(),
                    "similarity_top_k": config.similarity_top_k,
                    "rerank_candidates": config.rerank_candidates,
                },
                "generation": generation,
                "decisions": [d.__dict__ for d in evaluation.decisions],
                "refresh": refresh,
                "evaluation": "evaluation.json",
                "report": report_files,
                "files": file_digests(tmp),
            }
            atomic_write_json(tmp / MANIFEST, manifest, default=str)
        check_current_replaceable(root, version)
        atomic_write_text(root / CURRENT, version + "\n")
    return {
        "version": version,
        "path": root / version,
        "report": None if report_files is None else root / version / report_files["html"],
    }


def nodes_digest(ctx: RunContext) -> dict[str, Any]:
    """Count and SHA-256 of the nodes the refresh served (for the manifest).

    Example::

        nodes_digest(ctx)       # {'count': 212, 'sha256': '9f2c...'}
    """
    return {"count": len(ctx.nodes), "sha256": sha256_file(ctx.path("nodes.json"))}


# ---------------------------------------------------------------------- history


def append_history(path: str | Path, entry: dict[str, Any]) -> Path:
    """Add ``entry`` (with the time) to ``bundles/history.jsonl``, atomically and under a lock.

    The log never undoes what it records: when it cannot be written (a folder or a
    symbolic link in its place, a read-only or full disk) a warning names it and the entry
    is not kept, and lines already there are copied as they are, even damaged ones.

    Example::

        append_history("runs/shop", {"action": "rollback", "from": "v2", "served": "v1"})
    """
    root = bundles_root(path)
    target = root / HISTORY
    line = json.dumps({"time": _now(), **entry}, default=str, sort_keys=True)
    try:
        with _parent_lock(root):
            if target.is_symlink():  # its content is not this log's: never copied into it
                raise OSError(errno.ELOOP, "a symbolic link, not followed", str(target))
            old = target.read_bytes() if target.is_file() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            atomic_write_bytes(target, old + line.encode("utf-8") + b"\n")
    except OSError as exc:
        logger.warning(
            "%s could not be updated (%s: %s), so this %s is not in the log: %s; move it away "
            "(or make the folder writable) to keep the next entries",
            target,
            type(exc).__name__,
            exc.strerror or exc,
            entry.get("action", "entry"),
            line,
        )
    return target


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Every refresh decision and rollback recorded for a bundle folder, oldest first.

    Raises ``ValueError`` naming the file and line of an entry that is not a JSON object.

    Example::

        [e["action"] for e in read_history("runs/shop")]      # ['refresh', 'rollback']
    """
    target = bundles_root(path) / HISTORY
    if not target.is_file():
        return []
    out = []
    for n, raw in enumerate(target.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, 5,000 digits
            reason = (
                exc.msg
                if isinstance(exc, json.JSONDecodeError)
                else "nested too deeply"
                if isinstance(exc, RecursionError)
                else exc
            )
            raise ValueError(
                f"{target}:{n}: not valid JSON ({str(reason)[:200]}); fix or remove that line"
            ) from None
        if not isinstance(entry, dict):
            raise ValueError(
                f'{target}:{n}: not a JSON object (an entry is {{"action": ..., ...}}); fix or '
                "remove that line"
            )
        out.append(entry)
    return out
