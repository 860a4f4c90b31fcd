"""Write a refreshed bundle as the next version, and the log of refreshes and rollbacks.

The new version holds the refresh's served index and, for each model, the part
the refresh promoted or else the one the previous version served (hard-linked
from it where the file system allows, else copied), so every version loads on
its own even after older ones are deleted. It is written like every bundle
(``_atomic.atomic_dir``: the folder appears complete or not at all, the manifest
with every file's hash is written last) and only then does ``CURRENT`` move, all
holding the bundles folder's writer lock (``bundle_folders.bundle_lock``).

``bundles/history.jsonl`` records every refresh decision (promoted or not) and
every rollback, one JSON object a line, appended under a lock.

Example::

    from llama_index_ragtune.pipeline.refresh_writer import read_history

    for entry in read_history("runs/shop"):
        print(entry["action"], entry["served"], entry.get("reason"))
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import logging
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import (
    _fsync_dir,
    _parent_lock,
    atomic_dir,
    atomic_write_text,
    sha256_file,
    strict_json,
)
from llama_index_ragtune.pipeline.bundle_files import copy_tree
from llama_index_ragtune.pipeline.bundle_folders import (
    CURRENT,
    NEW_VERSION,
    BundleError,
    bundle_lock,
    bundles_root,
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
from llama_index_ragtune.retrievers.persistence import _unique_pairs

HISTORY = "history.jsonl"
logger = logging.getLogger(__name__)


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
            copy_tree(Path(served), tmp / part)
            entry.update(path=part, promoted=True, refreshed=True)
        else:
            if entry.get("path"):
                copy_tree(champion_dir / entry["path"], tmp / part)
                entry["path"] = part
            entry["refreshed"] = False
        models[part] = entry
    served = ctx.served_reranker
    old_reranker = old.get("reranker")
    if state.get("reranker", "promoted") and served:
        copy_tree(Path(served["path"]), tmp / "reranker")
        models["reranker"] = {
            **(old_reranker or {}),
            "path": "reranker",
            "promoted": True,
            "refreshed": True,
            "retrieval_weight": served.get("retrieval_weight"),
        }
    elif old_reranker:
        copy_tree(champion_dir / old_reranker["path"], tmp / "reranker")
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
    if bundles_root(root) != root:  # next_version would count the versions of another folder
        raise BundleError(
            f"{champion_dir} is not inside a bundles folder ({root} is not named 'bundles' and "
            "holds no CURRENT): no version is written beside it"
        )
    config = ctx.config
    retriever = ctx.served_retriever()
    index_folder = ctx.path(
        "index", "baseline" if retriever is ctx.baseline_retriever else "served"
    )
    report_files = None
    # the name stays ours until CURRENT names it (bundle_folders.bundle_lock)
    with bundle_lock(root):
        reconcile_history(root)  # the champion's own line, when its refresh was stopped
        version = next_version(root)
        with atomic_dir(root / version, NEW_VERSION, "the bundle writer") as tmp:
            copy_tree(index_folder, tmp / "index")
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
            write_manifest(tmp, manifest)  # read back as loaders do, before it is served
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
    """Add ``entry`` (with the time) to ``bundles/history.jsonl``, under a lock.

    Appends one line (the work does not grow with the log): the line is written by one
    ``O_APPEND`` write and synced, so a crash keeps every earlier line; an entry a killed
    writer left torn (an unterminated line that is not a JSON object) is removed by the
    next append with a warning quoting it, and skipped with a warning by
    :func:`read_history` meanwhile. The log never undoes what it records: when it cannot
    be written (a folder or a symbolic link in its place, a read-only or full disk) a
    warning names it and the entry is not kept, and lines already there are left as they
    are, even damaged ones (an unterminated one is ended with a newline first).

    Example::

        append_history("runs/shop", {"action": "rollback", "from": "v2", "served": "v1"})
    """
    root = bundles_root(path)
    target = root / HISTORY
    line = json.dumps(  # ASCII, strict JSON (NaN as null)
        strict_json({"time": _now(), **entry}), default=str, sort_keys=True, allow_nan=False
    )
    try:
        with _parent_lock(root):
            if target.is_symlink():  # its content is not this log's: never appended to
                raise OSError(errno.ELOOP, "a symbolic link, not followed", str(target))
            _append_line(target, line.encode("ascii"))
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


_TAIL_SCAN = 16 << 20  # an entry is at most this long, so a longer tail is not a torn one


def _torn_entry(raw: bytes) -> bool:
    """Whether an unterminated last line is what a killed :func:`append_history` left: the
    start of one of its lines (ASCII, from ``{``) that is not a whole JSON object."""
    if not raw.startswith(b"{") or not raw.isascii():
        return False
    try:
        return not isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return True


def _read_at(fd: int, offset: int, count: int) -> bytes:
    """``count`` bytes from ``offset`` (``os.pread`` is POSIX only; appends ignore the
    position, so moving it is harmless)."""
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, count)


def _last_line_start(fd: int, size: int) -> int | None:
    """Offset of the last line of an open file (reading backwards from the end), or None
    when it is longer than :data:`_TAIL_SCAN` bytes (then not one of our entries)."""
    end = size
    while end > 0 and size - end < _TAIL_SCAN:
        begin = max(0, end - (64 << 10))
        newline = _read_at(fd, begin, end - begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0 if end == 0 else None


def _append_line(target: Path, line: bytes) -> None:
    """Append ``line`` and a newline to the log by one ``O_APPEND`` write, then sync it;
    a write that fails part-way is cut off again, so no torn line is left."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    created = not target.exists()
    fd = os.open(target, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(target))
        size = os.fstat(fd).st_size
        prefix = b""
        if size and _read_at(fd, size - 1, 1) != b"\n":
            start = _last_line_start(fd, size)
            raw = b"" if start is None else _read_at(fd, start, size - start)
            if start is not None and _torn_entry(raw):
                logger.warning(
                    "%s ended with an entry a writer left torn (it stopped mid-append); "
                    "removed: %s",
                    target,
                    raw.decode("ascii"),
                )
                os.ftruncate(fd, start)
                size = start
            else:  # a whole entry without its newline, or someone else's bytes: kept
                prefix = b"\n"
        data = prefix + line + b"\n"
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no part of this entry stays behind
            raise
    finally:
        os.close(fd)
    if created:
        _fsync_dir(target.parent)


def reconcile_history(path: str | Path) -> dict[str, Any] | None:
    """Log the refresh that wrote the served version when its line is missing; return the
    entry added (None: nothing was missing).

    A refresh moves ``CURRENT`` first and then appends its line, so one killed in between
    (or whose disk filled there) served its version unlogged. Writers (refresh, rollback,
    :func:`~.bundle_folders.set_current_version`, the bundle step) call this holding the
    writer lock before they change anything: when ``CURRENT`` names a version a refresh
    wrote (its manifest holds ``refresh``) and the log's last promoting refresh line serves
    an older version (or there is none), the line is added from that manifest, marked
    ``"recovered": true``, with the version's creation time. Reads the log from its end, a
    few lines as a rule; never raises (a damaged ``CURRENT``, manifest or log is left to the
    caller's own checks). A rollback stopped the same way is logged first
    (:func:`~.rollback.settle_pending_switch`).

    Example::

        reconcile_history("runs/shop")      # {'action': 'refresh', 'served': 'v3', ...} or None
    """
    from llama_index_ragtune.pipeline.bundle_folders import current_version
    from llama_index_ragtune.pipeline.bundle_manifest import read_manifest
    from llama_index_ragtune.pipeline.bundle_names import check_version_folder
    from llama_index_ragtune.pipeline.rollback import settle_pending_switch

    root = bundles_root(path)
    settle_pending_switch(root)  # a rollback stopped between moving CURRENT and its line
    try:
        served = current_version(root)
        if served is None:
            return None
        # a version linked outside the bundles folder is never read (check_version_folder)
        manifest = read_manifest(check_version_folder(root / served))
        record = manifest.get("refresh")
        target = root / HISTORY
        if not isinstance(record, dict) or (target.is_symlink() or target.is_dir()):
            return None  # not a refresh's version; a log in the way is named by its writers
        number = int(served[1:])
        for entry in _entries_from_end(target):
            if entry.get("action") != "refresh" or entry.get("promoted") is not True:
                continue
            logged = entry.get("served")
            if logged == served or (_number(logged) or 0) > number:
                return None  # logged, or a newer version was logged after it
            break  # the last promotion logged is of an older version: this one's is missing
    except (OSError, ValueError, BundleError):
        return None
    decision = record.get("decision")
    reason = decision.get("reason") if isinstance(decision, dict) else None
    entry = {
        **record,
        "action": "refresh",
        "promoted": True,
        "served": served,
        "recovered": True,
        "reason": (
            f"{reason or 'promoted'} (recorded afterwards: the refresh that wrote {served} "
            "stopped after serving it, before logging it)"
        ),
    }
    if isinstance(manifest.get("created"), str):
        entry["time"] = manifest["created"]
    logger.warning(
        "%s: the refresh that wrote %s (served now) was not logged (it was stopped after moving "
        "CURRENT); its line is added from %s",
        target,
        served,
        root / served / "manifest.json",
    )
    append_history(root, entry)
    return entry


def _number(version: Any) -> int | None:
    """The number of a version name (``v3``: 3), None for anything else."""
    from llama_index_ragtune.pipeline.bundle_names import VERSION_NAME

    if isinstance(version, str) and (m := VERSION_NAME.match(version)):
        return int(m.group(1))
    return None


def _entries_from_end(target: Path, block: int = 64 << 10) -> Any:
    """The log's entries newest first, read backwards a block at a time (a line that is not
    a JSON object is skipped, and one longer than any entry is passed over unread, so the
    work is linear in what is read); nothing when there is no log."""
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        end = os.fstat(fd).st_size
        later: list[bytes] = []  # the pieces of the line being read, last piece first
        length, skipping = 0, False
        while end > 0:
            begin = max(0, end - block)
            parts = _read_at(fd, begin, end - begin).split(b"\n")
            end = begin
            first = parts.pop(0) if end > 0 else None  # its line starts in an earlier block
            if parts:  # the line of `later` starts in this block
                if not skipping:
                    entry = _entry_or_none(b"".join([parts.pop(), *reversed(later)]))
                    if entry is not None:
                        yield entry
                else:
                    parts.pop()
                later, length, skipping = [], 0, False
                for raw in reversed(parts):
                    entry = _entry_or_none(raw)
                    if entry is not None:
                        yield entry
            if first is not None and not skipping:
                later.append(first)
                length += len(first)
                if length > _TAIL_SCAN:  # no entry is this long: not one of ours
                    later, length, skipping = [], 0, True
        if later and not skipping:
            entry = _entry_or_none(b"".join(reversed(later)))
            if entry is not None:
                yield entry
    finally:
        os.close(fd)


def _entry_or_none(raw: bytes) -> dict[str, Any] | None:
    raw = raw.strip().removeprefix(codecs.BOM_UTF8)
    if not raw:
        return None
    try:
        entry = json.loads(raw.decode("utf-8"), parse_constant=lambda name: None)
    except (ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Every refresh decision and rollback recorded for a bundle folder, oldest first.

    Raises ``ValueError`` naming the file and line of an entry that is not a JSON object
    (also one naming a key twice, or longer than any entry a writer makes), and naming the
    file when a symbolic link, a folder, a named pipe or a device stands in its place (never
    followed or read, as :func:`append_history` never writes through one). A byte order mark
    is accepted, NaN / infinite numbers read as None; an entry a killed writer left torn at
    the end is skipped with a warning (the next :func:`append_history` removes it). Read a
    line at a time: memory is that of the entries, not of the file twice over. A rollback
    killed after it moved ``CURRENT`` but before it logged its switch is shown last, marked
    ``"recovered": true`` (the next writer logs it: ``rollback.settle_pending_switch``).

    Example::

        [e["action"] for e in read_history("runs/shop")]      # ['refresh', 'rollback']
    """
    from llama_index_ragtune._atomic_reads import open_plain_fd

    target = bundles_root(path) / HISTORY

    def refuse(kind: str) -> ValueError:
        return ValueError(
            f"{target} is {kind}, not the log file; it is not read (nor written by "
            "append_history): move it away"
        )

    from llama_index_ragtune.pipeline.rollback import pending_switch

    try:
        fd = open_plain_fd(target, refuse, follow_links=False)
    except FileNotFoundError:
        fd = None
    except OSError as exc:
        what = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a folder"}.get(exc.errno)
        if what is None:
            raise
        raise refuse(what) from None
    entries = []
    if fd is not None:
        with open(fd, "rb") as handle:
            entries = _history_entries(handle, target)
    pending = pending_switch(target.parent)  # a rollback stopped before its line: shown
    return entries if pending is None else [*entries, pending]


def _history_entries(handle: Any, target: Path) -> list[dict[str, Any]]:
    out = []
    n = 0
    while raw := handle.readline(_TAIL_SCAN + 1):
        n += 1
        if n == 1 and raw.startswith(codecs.BOM_UTF8):  # saved by a Windows editor
            raw = raw[len(codecs.BOM_UTF8) :]
        ended = raw.endswith(b"\n")
        if not ended and len(raw) > _TAIL_SCAN:
            raise ValueError(
                f"{target}:{n}: a line longer than {_TAIL_SCAN >> 20} MiB (an entry is a few "
                "hundred bytes): not an entry this library wrote; fix or remove that line"
            )
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        if not ended and _torn_entry(raw):  # unterminated: the last line
            logger.warning(
                "%s:%d: an entry a writer left torn (it stopped mid-append); skipped: %s",
                target,
                n,
                raw[:200].decode("ascii"),
            )
            continue
        try:
            entry = json.loads(
                raw.decode("utf-8"),
                object_pairs_hook=_unique_pairs,
                parse_constant=lambda name: None,  # NaN / Infinity as no value (strict_json)
            )
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
