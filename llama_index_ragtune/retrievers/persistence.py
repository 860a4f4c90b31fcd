"""Versioned JSON manifests with content hashes for persisted retrievers; errors say how to fix.

A persisted retriever folder holds its artifacts plus one manifest JSON file::

    {"format": "ragtune-bm25", "format_version": 2,
     "params": {...constructor parameters...},
     "files": {"bm25s/vocab.index.json": {"sha256": "...", "bytes": 1234}, ...},
     ...other sections, e.g. "dense": {"kind": "faiss", "index_type": "IndexFlatIP"}}

Loading checks the manifest first (format, version, the type of every field) and then
every file against its recorded SHA-256 and size, before any file is parsed. So a folder
written by another retriever or an incompatible version, a file edited, truncated or
swapped after ``persist()``, or a file that does not belong there, fails with a
:class:`PersistenceError` naming the file and saying how to fix it, instead of a stack
trace from deep inside numpy or faiss (or, worse, a silently different index). The
hashes detect accidents and tampering with the data files; they are not a signature
(whoever can rewrite the files can rewrite the manifest too).

Nothing here, nor in the loaders that use it, unpickles: manifests and docstores are
JSON, FAISS indexes use FAISS' own binary format, bm25s arrays are read with
``np.load(allow_pickle=False)``.

Folders are written through :func:`llama_index_ragtune._atomic.atomic_dir`, so a crash
leaves the old or the new folder (see that module for the protocol).

Example::

    write_manifest(path, "bm25_retriever.json", "ragtune-bm25", 2, {"k1": 1.5},
                   files=file_digests(path, exclude={"bm25_retriever.json"}))
    manifest = read_manifest(path, "bm25_retriever.json", "ragtune-bm25", (1, 2))
    verify_files(path, manifest, "bm25_retriever.json")
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_write_json, recover_dir
from llama_index_ragtune._atomic import atomic_write_text as _atomic_write_text
from llama_index_ragtune._atomic_reads import read_capped
from llama_index_ragtune.retrievers.persist_errors import DEFAULT_HINT as _DEFAULT_HINT
from llama_index_ragtune.retrievers.persist_errors import PersistenceError
from llama_index_ragtune.retrievers.persist_files import (
    MAX_MANIFEST_BYTES,
    check_nothing_unrecorded,
    file_digests,
    not_a_file,
    refuse_outside_link,
    refuse_special_files,
    verify_files,
)

__all__ = [
    "DuplicateKeyError",
    "PersistenceError",
    "atomic_write_text",
    "check_metadata_depth",
    "check_nothing_unrecorded",
    "field",
    "file_digests",
    "load_snapshot",
    "loads_unique_keys",
    "not_a_file",
    "persist_dir_path",
    "read_manifest",
    "refuse_special_files",
    "require_file",
    "verify_files",
    "write_manifest",
]

_MISSING = object()
_ATTEMPTS = 5


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no half-written file).

    Example::

        atomic_write_text(Path("out/report.md"), "# Report\\n")
    """
    _atomic_write_text(path, text)


def persist_dir_path(value: Any, what: str) -> Path:
    """``value`` as a :class:`~pathlib.Path`; ``TypeError`` / ``ValueError`` naming ``what``.

    ``None``, a number, ``bytes`` or a list is refused (pathlib's own error does not say
    which argument), and so is ``""``, which pathlib reads as the current folder: a
    ``persist("")`` from an unset setting would replace the working directory. A leading
    ``~`` is expanded, for writers and loaders alike (``persist("~/idx")`` and
    ``from_persist_dir("~/idx")`` name the same folder).

    Example::

        folder = persist_dir_path(persist_dir, "HybridRetriever.persist")
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{what}: persist_dir must be a str or a path, got {type(value).__name__} {value!r:.60}"
        )
    path = Path(value)  # an os.PathLike returning bytes raises TypeError here
    if not os.fspath(value).strip():
        raise ValueError(
            f"{what}: persist_dir is empty; name the folder (use '.' for the current one)"
        )
    try:
        return path.expanduser()
    except RuntimeError:  # "~user/..." of an unknown user, or no home folder
        raise ValueError(
            f"{what}: cannot expand the '~' of persist_dir {os.fspath(value)!r} (no such home "
            "folder); give the full path"
        ) from None


def write_manifest(
    folder: str | Path,
    name: str,
    fmt: str,
    version: int,
    params: dict[str, Any],
    files: dict[str, dict[str, Any]] | None = None,
    **sections: Any,
) -> Path:
    """Write ``folder/name``: format tag, version, parameters, file digests and extra sections.

    Example::

        write_manifest("idx", "m.json", "ragtune-x", 2, {"k": 1}, files=file_digests("idx"))
    """
    path = Path(folder) / name
    payload: dict[str, Any] = {"format": fmt, "format_version": version, "params": params}
    payload.update(sections)
    if files is not None:
        payload["files"] = files
    atomic_write_json(path, payload, strict=True, indent=2, sort_keys=True)
    return path


def _missing_folder_error(folder: Path, hint: str) -> PersistenceError:
    leftovers = (
        sorted(
            p.name
            for p in folder.parent.glob(f"{folder.name}.old-*")
            if p.is_dir() and not p.is_symlink()
        )
        if folder.parent.is_dir()
        else []
    )
    extra = ""
    if leftovers:
        extra = (
            f" ({leftovers[0]} beside it is the previous version left by an interrupted persist(); "
            f"rename it to {folder.name} to use it)"
        )
    return PersistenceError(f"persist directory {folder} does not exist{extra}; {hint}")


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (readers disagree on which value counts)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; only a short dict means a key came twice
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKeyError(
                f"the key {key!r} appears twice in one JSON object (a hand edit or damage: "
                "JSON readers disagree on which value counts, so none is taken)"
            )
        seen.add(key)
    return out  # not reached


def loads_unique_keys(text: str) -> Any:
    """``json.loads`` refusing an object with a duplicate key (:class:`DuplicateKeyError`,
    a ``ValueError`` naming the key) instead of keeping the last value silently.

    Example::

        loads_unique_keys('{"a": 1, "a": 2}')   # DuplicateKeyError: the key 'a' appears twice ...
    """
    return json.loads(text, object_pairs_hook=_unique_pairs)


def _read_manifest_bytes(path: Path, hint: str) -> bytes:
    """The manifest's bytes: a plain file of at most :data:`MAX_MANIFEST_BYTES`, read without
    blocking (a named pipe, a device, a link to ``/dev/zero`` are named, never read)."""
    try:
        raw = read_capped(path, MAX_MANIFEST_BYTES, hint, error=PersistenceError)
    except FileNotFoundError:  # removed since the check: a writer swapping the folder
        raise PersistenceError(f"{path} is missing; {hint}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PersistenceError(
            f"{path} holds more than {MAX_MANIFEST_BYTES >> 20} MiB (persist() writes a few KiB): "
            f"it is not a manifest this library wrote, and was not read whole; {hint}"
        )
    return raw


def read_manifest(
    folder: str | Path,
    name: str,
    fmt: str,
    version: int | Collection[int],
    rebuild_hint: str = "",
) -> dict[str, Any]:
    """Read and check ``folder/name`` (format, version, shape); raise :class:`PersistenceError`.

    ``version`` is the version this code writes, or all the versions it reads. A folder
    missing because a writer was killed mid-swap is first restored (:func:`recover_dir`).
    The manifest must be a plain file of at most 16 MiB inside ``folder`` (a named pipe, a
    device, a link to ``/dev/zero`` or to a file outside, a longer file: named, never read
    whole).

    Example::

        manifest = read_manifest("idx", "bm25_retriever.json", "ragtune-bm25", (1, 2))
        manifest["format_version"], manifest["params"]["k1"]
    """
    folder = Path(folder)
    hint = rebuild_hint or _DEFAULT_HINT
    versions = (version,) if isinstance(version, int) else tuple(version)
    if not folder.exists():
        with contextlib.suppress(OSError):
            recover_dir(folder)
    if folder.exists() and not folder.is_dir():
        raise PersistenceError(
            f"{folder} is a file, not a persist directory; pass the folder given to persist()"
        )
    if not folder.is_dir():
        raise _missing_folder_error(folder, hint)
    path = folder / name
    if path.is_dir():
        raise PersistenceError(
            f"{path} is not a file (a folder stands in its place); it is not "
            f"a persisted {fmt} folder as written — pass the directory given to persist(), or {hint}"
        )
    if not path.exists():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise PersistenceError(
            f"{path} is missing (the folder holds: {present}); it is not a persisted {fmt} folder — "
            f"pass the directory given to persist(), or {hint}"
        )
    refuse_outside_link(path, folder, path, hint)
    raw = _read_manifest_bytes(path, hint)
    try:
        payload = loads_unique_keys(raw.decode("utf-8"))
    except DuplicateKeyError as exc:
        raise PersistenceError(f"{path} is corrupt: {exc}; {hint}") from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, an int of 5,000 digits
        raise PersistenceError(f"{path} is corrupt (not valid JSON: {exc}); {hint}") from exc
    if (
        not isinstance(payload, dict)
        or "params" not in payload
        or not isinstance(payload["params"], dict)
    ):
        raise PersistenceError(f"{path} is corrupt (no 'params' object); {hint}")
    if payload.get("format") != fmt:
        raise PersistenceError(
            f"{path} holds format {payload.get('format')!r}, expected {fmt!r}: this folder was written by "
            f"another class; load it with that class, or {hint}"
        )
    found = payload.get("format_version")
    if isinstance(found, bool) or found not in versions:
        readable = " or ".join(str(v) for v in versions)
        raise PersistenceError(
            f"{path} has format_version {found!r}, this version of llama-index-ragtune reads {readable}; "
            f"install the matching llama-index-ragtune version, or {hint}"
        )
    return payload


def _describe(kinds: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def field(
    section: dict[str, Any],
    key: str,
    kinds: tuple[type, ...],
    path: Path,
    hint: str = "",
    where: str = "params",
    default: Any = _MISSING,
) -> Any:
    """``section[key]`` checked against ``kinds``, else :class:`PersistenceError` naming the key.

    ``int`` never accepts a bool; ``float`` accepts an int and must be finite.
    Without ``default`` the key is required.

    Example::

        k1 = field(manifest["params"], "k1", (float,), manifest_path)
    """
    hint = hint or _DEFAULT_HINT
    name = f"{where}.{key}" if where else key
    if key not in section:
        if default is not _MISSING:
            return default
        raise PersistenceError(f"{path} is corrupt: '{name}' is missing; {hint}")
    value = section[key]
    ok = False
    for kind in kinds:
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        elif kind is type(None):
            ok = value is None
        else:
            ok = isinstance(value, kind)
        if ok:
            break
    if not ok:
        raise PersistenceError(
            f"{path} is corrupt: '{name}' must be {_describe(kinds)}, got "
            f"{type(value).__name__} {str(value)[:60]!r}; {hint}"
        )
    return float(value) if kinds[0] is float and isinstance(value, int) else value


MAX_METADATA_DEPTH = 100
"""How deeply lists and dicts may nest inside node metadata that is persisted. JSON readers
recurse once per level, with the caller's stack below them: metadata a few hundred levels
deep saved but then failed to load (``RecursionError``), so ``persist`` refuses it first."""


def _json_shape_problem(value: Any, depth_only: bool = False) -> tuple[str, str] | None:
    """``(where, what)`` for the first part of ``value`` that JSON would not give back as it
    is: a key that is not a ``str``, a ``tuple`` (read back as a list), nesting deeper than
    :data:`MAX_METADATA_DEPTH`; ``None`` when there is none (``depth_only``: only the
    nesting is checked). Walked with a stack, not recursion, so any depth is named rather
    than raising ``RecursionError``."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)) and depth >= MAX_METADATA_DEPTH:
            return path or "(the metadata)", "depth"
        if isinstance(item, tuple) and not depth_only:
            return path, "tuple"
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, str) and not depth_only:
                    return (f"{path}[{key!r}]" if path else repr(key)), "key"
                children.append((child, f"{path}[{key!r}]", depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, (list, tuple)):
            stack.extend(
                (child, f"{path}[{index}]", depth + 1)
                for index, child in reversed(list(enumerate(item)))
            )
    return None


def _short(where: str, limit: int = 80) -> str:
    return where if len(where) <= limit else f"{where[: limit - 20]}...{where[-17:]}"


def check_json_metadata(nodes: Any, what: str) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the node and key when a node's metadata
    cannot be saved as JSON, or would come back changed or not at all: a key that is not a
    string (``1`` is loaded as ``"1"``), a ``tuple`` (loaded as a list, so filters match
    otherwise), nesting deeper than :data:`MAX_METADATA_DEPTH` levels (the loader would fail).

    Run before anything is written, so a failed persist leaves the old folder as it was.

    Example::

        check_json_metadata(retriever.nodes, "BM25Retriever.persist")
    """
    for node in nodes:
        check_json_mapping(node.metadata, f"node {node.node_id!r}", what)


def check_metadata_depth(nodes: Any, what: str) -> None:
    """``ValueError`` naming the node and where, when a node's metadata nests lists or dicts
    deeper than :data:`MAX_METADATA_DEPTH` (the limit ``persist`` holds to): LlamaIndex
    formats metadata recursively (``str(metadata)`` for the node hash, ``get_metadata_str``),
    so about a thousand levels failed deep inside the index build with ``RecursionError``,
    and a few hundred built an index ``persist`` then refused. Run before anything is
    embedded or indexed; items that are not nodes are left to the node checks.

    Example::

        check_metadata_depth(nodes, "HybridRetriever.from_defaults")
    """
    for node in nodes:
        metadata = getattr(node, "metadata", None)
        if not isinstance(metadata, dict) or not _too_deep(metadata):
            continue
        problem = _json_shape_problem(metadata, depth_only=True)  # where: named in the error
        if problem is not None:
            raise ValueError(
                f"{what}: the metadata of node {node.node_id!r} is nested too deeply "
                f"({_short(problem[0])} is more than {MAX_METADATA_DEPTH} lists or dicts deep, "
                "the limit persist holds to; about a thousand failed inside LlamaIndex with "
                "RecursionError); flatten it (e.g. store it as a JSON string) and build again"
            )


def _too_deep(value: Any) -> bool:
    """Whether lists, tuples and dicts nest in ``value`` deeper than :data:`MAX_METADATA_DEPTH`
    (:func:`_json_shape_problem`'s depth, walked without building paths: only containers are
    stacked, so a long list of numbers costs one pass over it)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_METADATA_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))
    return False


def check_json_mapping(metadata: Any, owner: str, what: str) -> None:
    """:func:`check_json_metadata` for one mapping, ``owner`` naming whose it is in the error.

    Example::

        check_json_mapping({"when": b"x"}, "node 'a'", "persist")   # TypeError naming 'when'
    """
    problem = _json_shape_problem(metadata)
    if problem is not None:
        where, kind = problem
        if kind == "key":
            raise TypeError(
                f"{what}: {owner} has the metadata key {where}, which is not a "
                "string: JSON would save it as a string (1 as '1', True as 'true'), so the "
                "loaded node would differ; make every metadata key a str"
            )
        if kind == "tuple":
            raise TypeError(
                f"{what}: {owner} has a tuple as metadata {_short(where)}: JSON saves it as a list, so "
                "the loaded node would differ (a filter `== [...]` would match after loading but "
                "not before); store a list instead"
            )
        raise ValueError(
            f"{what}: the metadata of {owner} is nested too deeply to be saved and loaded as "
            f"JSON ({_short(where)} is more than {MAX_METADATA_DEPTH} lists or dicts deep); "
            "flatten it"
        )
    try:
        json.dumps(metadata, allow_nan=True)
    except RecursionError:  # not reached: the depth was checked above
        raise ValueError(
            f"{what}: the metadata of {owner} is nested too deeply to be saved as JSON "
            "(lists or dicts inside one another hundreds of levels deep); flatten it"
        ) from None
    except (TypeError, ValueError):
        for key, value in metadata.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{what}: {owner} has metadata {key!r} of type "
                    f"{type(value).__name__}, which cannot be saved as JSON; convert it to a "
                    "str, int, float, bool, list or dict before building the index"
                ) from None
        raise TypeError(
            f"{what}: the metadata of {owner} cannot be saved as JSON; convert "
            "its values to str, int, float, bool, list or dict before building the index"
        ) from None


def _identity(folder: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(folder)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_ctime_ns


def load_snapshot(folder: str | Path, load: Callable[[], Any]) -> Any:
    """Run ``load()`` until ``folder`` is the same directory before and after it.

    Writers never change a persisted folder in place; they swap in a new directory
    (:func:`~llama_index_ragtune._atomic.atomic_dir`). So if ``folder`` is the same
    directory (device, inode, change time) when loading starts and ends, every file came
    from one ``persist()``; otherwise a concurrent ``persist()`` replaced it mid-read and
    the load is repeated (up to 5 times). A ``PersistenceError`` or ``OSError`` (a file or
    folder vanishing under the reader) raised while the folder was being replaced is
    retried too.

    Example::

        retriever = load_snapshot(path, lambda: BM25Retriever.from_persist_dir(path))
    """
    folder = Path(folder)
    for _ in range(_ATTEMPTS):
        before = _identity(folder)
        try:
            result = load()
        except (PersistenceError, OSError):
            if _identity(folder) != before:
                continue  # replaced mid-read: read the new generation
            raise
        if before is not None and _identity(folder) == before:
            return result
    raise PersistenceError(
        f"{folder} was replaced {_ATTEMPTS} times while it was being loaded (another process keeps "
        "persisting to it); load it again when the writer is done"
    )


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a file, else raise :class:`PersistenceError` naming it.

    Example::

        require_file(folder / "docstore.json", "the nodes")
    """
    if not path.is_file():
        raise PersistenceError(
            f"{path} ({what}) is missing from the persist directory; {hint or _DEFAULT_HINT}"
        )
    return path
