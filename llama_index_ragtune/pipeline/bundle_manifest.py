"""A bundle version's ``manifest.json``: read with every field checked, and the folder verified.

:func:`read_manifest` raises a :class:`~.bundle_folders.BundleError` naming the file and
the field for anything malformed (types, ranges, paths leading outside the bundle, the
refusal policy record); :func:`verify_bundle` checks that every listed file is present
and unchanged (size, SHA-256) and that nothing unlisted was added.

Example::

    from llama_index_ragtune.pipeline.bundle_manifest import verify_bundle

    verify_bundle("ragtune-demo/bundles/v1")["version"]      # 'v1'
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath
from typing import Any

from llama_index_ragtune._atomic import atomic_write_json, sha256_file
from llama_index_ragtune.pipeline.bundle_folders import (
    MANIFEST,
    REWRITE,
    VERSION_LEFTOVER,
    VERSION_NAME,
    BundleError,
    bundle_path,
    short,
)
from llama_index_ragtune.pipeline.bundle_names import check_version_folder
from llama_index_ragtune.pipeline.bundle_reads import decode_text, read_capped
from llama_index_ragtune.retrievers.persist_files import leads_outside
from llama_index_ragtune.retrievers.persistence import (
    DuplicateKeyError,
    loads_unique_keys,
    not_a_file,
)

FORMAT = "ragtune-bundle"
FORMAT_VERSION = 1
MAX_COUNT = 1_000_000  # upper bound of the manifest's counts (top k, tokens, sources)
MAX_FILE_SIZE = 1 << 50  # bytes (1 PiB): a listed size above it is not a real file's
MAX_MANIFEST_BYTES = 16 << 20
"""The largest ``manifest.json`` read (16 MiB; a written one is some KB: settings and about
100 bytes per file): a bigger one is refused unread, a writer never writes one."""
_SHA256 = re.compile(r"[0-9a-f]{64}")  # as sha256_file writes it
# sections refresh_bundle reads (its settings, earlier questions): {name: type when present}
_OPTIONAL_SECTIONS = {"config": dict, "data": dict, "packages": dict, "decisions": list}


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of every file under ``folder`` but the manifest."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST:
            out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as ``folder/manifest.json`` (strict JSON) and read it back as
    loaders do (:func:`read_manifest`), so a version no reader accepts (a manifest over
    :data:`MAX_MANIFEST_BYTES`, a field out of range) is a ``BundleError`` before the
    folder is renamed into place; writers call it last, inside ``atomic_dir``.

    Example::

        with atomic_dir(root / "v3") as tmp:
            ...                                  # the version's files
            write_manifest(tmp, {..., "files": file_digests(tmp)})
    """
    path = atomic_write_json(folder / MANIFEST, manifest, strict=True, default=str)
    try:
        read_manifest(folder)
    except BundleError as exc:
        raise BundleError(
            f"the bundle version being written would not load ({exc}); nothing was written: "
            "the served version stays"
        ) from None
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked manifest of a version folder (``BundleError`` naming the file otherwise):
    a plain file of at most :data:`MAX_MANIFEST_BYTES` inside the folder (a link to a file
    outside, a pipe or a device in its place is never read)."""
    path = folder / MANIFEST
    try:
        outside = leads_outside(path, folder)
        if outside:
            raise BundleError(
                f"{path} leads outside the bundle folder (to {outside}) through a symbolic "
                f"link: a bundle's manifest is never read elsewhere; put the file itself there "
                f"(`cp -L`), or {REWRITE}"
            )
        raw = read_capped(path, MAX_MANIFEST_BYTES, REWRITE)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB (a manifest is a few KB: "
                f"settings and one line per file), so it is not read: it was edited or replaced; "
                f"{REWRITE}"
            )
        data = loads_unique_keys(decode_text(raw))  # edited in Notepad: a byte order mark
    except BundleError:
        raise
    except FileNotFoundError:
        raise BundleError(f"{path} not found; {REWRITE}") from None
    except DuplicateKeyError as exc:
        raise BundleError(f"{path} is damaged: {exc}; {REWRITE}") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, UTF-8, digits
        raise BundleError(f"{path} is not readable JSON ({exc}); {REWRITE}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{path} is not a {FORMAT} manifest; {REWRITE}")
    _check_format_version(data.get("format_version"), path)
    for key in ("version", "models", "retrieval", "generation", "files"):
        if key not in data:
            raise BundleError(f"{path} lacks the field {key!r}; {REWRITE}")
    version = data["version"]
    if not isinstance(version, str) or not VERSION_NAME.match(version):
        raise BundleError(
            f"{path}: version must be a version name (v1, v2, ...), got {short(version)}; {REWRITE}"
        )
    if version != _version_of(folder.name, version):
        raise BundleError(
            f"{path}: version is {version!r} but the manifest is in the folder {folder.name!r}: "
            f"the manifest was edited or moved; {REWRITE}"
        )
    if not isinstance(data["files"], dict):
        raise BundleError(f"{path}: 'files' must be an object; {REWRITE}")
    for rel, info in data["files"].items():
        _check_file_entry(rel, info, path)
    _check_sections(data, path)
    for key in ("models", "retrieval", "generation"):
        if not isinstance(data[key], dict):
            raise BundleError(f"{path}: {key!r} must be an object; {REWRITE}")
    for kind in ("encoder", "decoder", "reranker"):
        entry = data["models"].get(kind)
        if entry is None and kind == "reranker":
            continue
        if not isinstance(entry, dict):
            raise BundleError(f"{path}: models.{kind} must be an object; {REWRITE}")
        if entry.get("path") is not None:
            _inside(entry["path"], f"models.{kind}.path", path)
        elif kind == "reranker":
            raise BundleError(f"{path}: models.reranker.path is missing; {REWRITE}")
        reference = entry.get("reference")
        if reference is not None and (not isinstance(reference, str) or not reference.strip()):
            raise BundleError(
                f"{path}: models.{kind}.reference must be a model id (a string) or null, got "
                f"{short(reference)}; {REWRITE}"
            )
        weight = entry.get("retrieval_weight")
        if weight is not None and not (_number(weight) and 0.0 <= weight <= 1.0):
            raise BundleError(
                f"{path}: models.{kind}.retrieval_weight must be a number in [0, 1], got "
                f"{short(weight)}; {REWRITE}"
            )
    counts = (
        ("retrieval", "similarity_top_k", False),
        ("retrieval", "rerank_candidates", True),
        ("generation", "max_new_tokens", False),
        ("generation", "max_sources", True),
        ("generation", "max_source_chars", True),
    )
    for section, key, optional in counts:
        value = data[section].get(key)
        if optional and value is None:
            continue
        if type(value) is not int or not 1 <= value <= MAX_COUNT:
            raise BundleError(
                f"{path}: {section}.{key} must be a whole number from 1 to {MAX_COUNT}"
                f"{' or null' if optional else ''}, got {short(value)}; {REWRITE}"
            )
    threshold = data["generation"].get("refusal_threshold")
    if threshold is not None and not (_number(threshold) and 0.0 <= threshold <= 1.0):
        raise BundleError(
            f"{path}: generation.refusal_threshold must be a number in [0, 1] or null, got "
            f"{short(threshold)}; {REWRITE}"
        )
    _check_policy(data["generation"].get("refusal_policy"), path)
    return data


def _version_of(name: str, default: str) -> str:
    """The version a folder named ``name`` holds: ``v2`` for ``v2`` and for what writers
    leave of it (``v2.tmp-*``, ``v2.old-*``, read when ``v2`` is missing); ``default`` for
    any other name (a version copied alone to ``my-bundle/``)."""
    found = VERSION_NAME.match(name) or VERSION_LEFTOVER.match(name)
    return default if found is None else found.group(0).split(".")[0]


def _check_format_version(found: Any, path: Path) -> None:
    """``BundleError`` unless ``found`` is :data:`FORMAT_VERSION`; the message says whether
    the bundle is older (rewrite it) or newer (upgrade llama-index-ragtune) than this reader."""
    if type(found) is int and found == FORMAT_VERSION:
        return
    if type(found) is not int:
        fix = "format_version must be a whole number: the manifest was edited"
    elif found < FORMAT_VERSION:
        fix = (
            "an older bundle format, written by an earlier llama-index-ragtune: load it with "
            "that release"
        )
    else:
        fix = "a newer bundle format: upgrade llama-index-ragtune (pip install -U llama-index-ragtune)"
    raise BundleError(
        f"{path} has format version {short(found)}; this version of llama-index-ragtune reads "
        f"{FORMAT_VERSION}: {fix}, or {REWRITE}"
    )


def _check_file_entry(rel: Any, info: Any, manifest: Path) -> None:
    """``BundleError`` naming ``files[rel]`` unless ``rel`` is a file path inside the folder as
    writers spell it (``a/b.txt``: no ``.`` or empty parts, no backslash or drive) and ``info``
    is ``{"sha256": 64 lowercase hex digits, "size": 0 to MAX_FILE_SIZE}``; checked even when
    hashes are not (``verify=False``)."""
    field_name = f"files[{short(rel)}]"
    _inside(rel, field_name, manifest)
    if any(part in ("", ".") for part in rel.split("/")):
        raise BundleError(
            f"{manifest}: {field_name} must be a file path as the bundle writer spells it "
            f"(parts joined by '/', without '.' or empty parts), e.g. 'index/docstore.json'; "
            f"{REWRITE}"
        )
    sha = info.get("sha256") if isinstance(info, dict) else None
    size = info.get("size") if isinstance(info, dict) else None
    if not (
        isinstance(sha, str)
        and _SHA256.fullmatch(sha)
        and type(size) is int
        and 0 <= size <= MAX_FILE_SIZE
    ):
        raise BundleError(
            f"{manifest}: {field_name} must be {{'sha256': 64 lowercase hex digits, 'size': a "
            f"whole number of bytes from 0 to {MAX_FILE_SIZE}}}, got {short(info, 160)}; "
            f"{REWRITE}"
        )


def _check_sections(data: dict[str, Any], manifest: Path) -> None:
    """``BundleError`` naming the field when a section other readers use (``config``,
    ``data``, ``retrieval.fusion``, ...) is present with another type."""
    found = [(key, data.get(key), kind) for key, kind in _OPTIONAL_SECTIONS.items()]
    if isinstance(data.get("data"), dict):
        found += [
            (f"data.{k}", data["data"].get(k), dict) for k in ("documents", "nodes", "queries")
        ]
    if isinstance(data.get("retrieval"), dict):
        found.append(("retrieval.fusion", data["retrieval"].get("fusion"), dict))
    if isinstance(data.get("decisions"), list):
        found += [(f"decisions[{i}]", d, dict) for i, d in enumerate(data["decisions"])]
    for name, value, kind in found:
        if value is not None and not isinstance(value, kind):
            what = "an object" if kind is dict else "a list"
            raise BundleError(
                f"{manifest}: {name} must be {what} or null, got {short(value)}; {REWRITE}"
            )


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_policy(recorded: Any, manifest: Path) -> None:
    """``BundleError`` naming ``generation.refusal_policy...`` unless the recorded policy
    (None: none) can be loaded; a trained scorer's folder must be inside the bundle."""
    from llama_index_ragtune.llms.refusal_policy_records import check_policy_record

    if recorded is None:
        return
    field_name = "generation.refusal_policy"
    try:
        record = check_policy_record(recorded, str(manifest), prefix=field_name + ".")
    except ValueError as exc:
        raise BundleError(f"{str(exc).rstrip('.')}; {REWRITE}") from None
    if record.get("scorer") is not None and record.get("scorer_kind") != "similarity":
        _inside(record["scorer"], field_name + ".scorer", manifest)


def _inside(rel: Any, field_name: str, manifest: Path) -> None:
    """``BundleError`` unless ``rel`` is a relative path that stays inside the version folder."""
    if (
        not isinstance(rel, str)
        or not rel
        or "\0" in rel
        or "\\" in rel  # a separator elsewhere: ..\x leaves the folder on Windows
        or PureWindowsPath(rel).anchor  # C:x, //host/share
        or Path(rel).is_absolute()
        or ".." in Path(rel).parts
    ):
        raise BundleError(
            f"{manifest}: {field_name} must be a path inside the bundle folder (relative, parts "
            f"joined by '/'), got {short(rel)}; {REWRITE}"
        )


def verify_bundle(folder: str | Path, hashes: bool = True) -> dict[str, Any]:
    """Check every file the manifest lists (present, same size, same SHA-256 when ``hashes``)
    and that nothing unlisted was added (files, links, dangling or not); return the manifest.

    Example::

        verify_bundle("ragtune-demo/bundles/v1")      # BundleError naming an edited file
    """
    if not isinstance(hashes, bool):  # None from an unset setting would skip every hash
        raise TypeError(f"verify_bundle: hashes must be True or False, got {short(hashes)}")
    folder = check_version_folder(bundle_path(folder, "verify_bundle: folder"))
    manifest = read_manifest(folder)
    listed = manifest["files"]
    for rel, info in listed.items():
        path = folder / rel
        try:
            if not path.is_file():
                if path.is_dir():
                    raise BundleError(
                        f"{path} is a folder, but {folder / MANIFEST} lists it as a file "
                        f"(files[{rel!r}]): the manifest was edited; {REWRITE}"
                    )
                what = not_a_file(path)
                if what == "missing":
                    raise BundleError(f"{path} is missing from the bundle; {REWRITE}")
                raise BundleError(
                    f"{path} is {what}: the bundle was copied incompletely or changed after it "
                    f"was written; {REWRITE}"
                )
            real = leads_outside(path, folder)
            if real:
                raise BundleError(
                    f"{path} leads outside the bundle folder (to {real}) through a symbolic "
                    f"link: a bundle's files are never read elsewhere (they could change after "
                    f"verification); put the file itself there (`cp -L`), or {REWRITE}"
                )
            size = path.stat().st_size
            if size != info.get("size"):
                raise BundleError(
                    f"{path} was changed after the bundle was written (size {size}, "
                    f"manifest {info.get('size')}); {REWRITE}"
                )
            if hashes and sha256_file(path) != info.get("sha256"):
                raise BundleError(
                    f"{path} was changed after the bundle was written (SHA-256 differs from "
                    f"{folder / MANIFEST}); {REWRITE}"
                )
        except OSError as exc:
            raise BundleError(f"{path} cannot be read ({exc}); {REWRITE}") from None
    for path in _entries(folder):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or rel in listed:
            continue
        if path.is_symlink():
            raise BundleError(
                f"{path} is a symbolic link not listed in {folder / MANIFEST}: the bundle was "
                f"edited; remove the link, or {REWRITE}"
            )
        if not path.is_dir():
            raise BundleError(
                f"{path} is not listed in {folder / MANIFEST}: the bundle was edited; remove the "
                f"file, or {REWRITE}"
            )
    return manifest


def _entries(folder: Path) -> list[Path]:
    """Every entry under ``folder`` but hidden ones, links not followed (a linked folder is
    one entry)."""

    def fail(exc: OSError) -> None:
        raise BundleError(f"{exc.filename} cannot be read ({exc.strerror}); {REWRITE}")

    out = []
    for top, dirs, files in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *sorted(files)]:
            if not name.startswith("."):
                out.append(Path(top) / name)
    return out
