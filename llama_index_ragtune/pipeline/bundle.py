"""The bundle: one versioned, verified folder with everything a tuned RAG system serves.

Layout (written by the pipeline's ``bundle`` step, atomically: a crash leaves the
previous version and ``CURRENT`` untouched)::

    <out>/bundles/CURRENT          the served version's name, e.g. "v3"
    <out>/bundles/v3/
        manifest.json              format "ragtune-bundle" v1: versions, data hashes, model ids,
                                   decisions, settings, and the SHA-256 + size of every file
        index/                     the persisted hybrid retriever (promoted encoder's vectors)
        encoder/                   the promoted encoder (absent: the manifest names the base)
        reranker/                  the promoted reranker (absent when none was promoted)
        decoder/                   the promoted decoder, merged (absent: the manifest names the base)
        evaluation.json            what the run measured (``ragtune report`` renders it)
        report/report.html, report/report.md

Older versions stay next to it; :func:`set_current_version` rolls back.

:func:`load_bundle` verifies the manifest (every file present, unchanged, and no
unlisted file) and returns a :class:`Bundle` whose ``query_engine`` is a ready
``CitationQueryEngine``: ``load_bundle("runs/demo").query_engine.query("...")``.

Example::

    from llama_index_ragtune.pipeline import load_bundle

    bundle = load_bundle("ragtune-demo")                   # the CURRENT version
    response = bundle.query_engine.query("Apple return policy?")
    response.metadata["cited_node_ids"], bundle.manifest["version"]
    grocery = bundle.as_query_engine(filters={"store": "grocery"})
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_write_text, recover_dir, sha256_file

FORMAT = "ragtune-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
BUNDLES_DIR = "bundles"
_VERSION = re.compile(r"^v(\d{1,9})$")
_REWRITE = "run the tuning pipeline again to write a fresh bundle"
_MAX_COUNT = 1_000_000  # upper bound of the manifest's counts (top k, tokens, sources)

logger = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle is missing, incomplete, edited, or of another format (the message names the file)."""


# ---------------------------------------------------------------------- versions


def bundles_root(path: str | Path) -> Path:
    """The ``bundles`` folder for a run's ``--out`` folder or the ``bundles`` folder itself."""
    path = Path(path).expanduser()
    return path if path.name == BUNDLES_DIR or _exists(path / CURRENT) else path / BUNDLES_DIR


def _exists(path: Path) -> bool:
    """``path`` exists (a dangling link counts); False for a name the system cannot look up."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    """``path`` is a file; False for a name the system cannot look up (too long, ...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bundle_versions(path: str | Path) -> list[str]:
    """Versions present under ``path`` (a run's ``--out`` or its ``bundles`` folder), oldest first.

    Example::

        bundle_versions("ragtune-demo")       # ['v1', 'v2']
    """
    root = bundles_root(path)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p.name)
        for p in root.iterdir()
        if p.is_dir() and (m := _VERSION.match(p.name)) and (p / MANIFEST).is_file()
    ]
    return [name for _, name in sorted(found)]


def next_version(path: str | Path) -> str:
    """The name the next bundle gets: ``v<highest + 1>`` (``v1`` for the first)."""
    root = bundles_root(path)
    numbers = [
        int(m.group(1))
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := _VERSION.match(p.name.split(".", 1)[0]))
    ]
    return f"v{max(numbers, default=0) + 1}"


def check_version_name(version: Any, source: str, root: Path) -> str:
    """``version`` when it is a version name (``v<number>``), else ``BundleError`` naming
    ``source`` (``CURRENT`` or the argument): a name never leads outside ``root``."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise BundleError(
            f"{source} names {_short(version)}, which is not a bundle version (v1, v2, ...); "
            f"versions here: {bundle_versions(root) or 'none'}; pass one of them, or "
            f"`ragtune rollback --to VERSION` to rewrite {root / CURRENT}"
        )
    return version


def current_version(path: str | Path) -> str | None:
    """The version ``CURRENT`` names (None when there is no bundle yet).

    Raises ``BundleError`` when ``CURRENT`` holds anything but a version name
    (``../elsewhere``, an absolute path, binary junk).
    """
    root = bundles_root(path)
    pointer = root / CURRENT
    if not _exists(pointer):
        return None
    if not _is_file(pointer):
        raise BundleError(
            f"{pointer} is not a file; it must hold the served version's name; versions here: "
            f"{bundle_versions(root) or 'none'}; `ragtune rollback --to VERSION` rewrites it"
        )
    try:
        text = pointer.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        text = pointer.read_bytes()[:40].decode("utf-8", "backslashreplace")
        check_version_name(text + "…", str(pointer), root)
    if not text:
        raise BundleError(
            f"{pointer} is empty; versions here: {bundle_versions(root) or 'none'}; "
            "`ragtune rollback --to VERSION` rewrites it"
        )
    return check_version_name(text, str(pointer), root)


def set_current_version(path: str | Path, version: str) -> Path:
    """Point ``CURRENT`` at ``version`` (atomically): roll back or forward between kept versions.

    Example::

        set_current_version("ragtune-demo", "v1")      # serve the previous bundle again
    """
    root = bundles_root(path)
    folder = root / check_version_name(version, "the version argument", root)
    recover_dir(folder)
    if not _is_file(folder / MANIFEST):
        raise BundleError(
            f"{folder / MANIFEST} not found: {version!r} is not a bundle version here "
            f"(versions: {bundle_versions(root) or 'none'})"
        )
    return atomic_write_text(root / CURRENT, version + "\n")


def resolve_bundle_dir(path: str | Path, version: str | None = None) -> Path:
    """The version folder for ``path``: a version folder, a ``bundles`` folder or a run's
    ``--out`` (their ``CURRENT`` version unless ``version`` is given)."""
    path = Path(path).expanduser()
    if version is None and _is_file(path / MANIFEST):
        return path
    root = bundles_root(path)
    if version is None:
        if not root.is_dir() and not _exists(path):
            raise BundleError(f"bundle not found: {path} does not exist")
        version = current_version(root)
        if version is None:
            raise BundleError(
                f"{root / CURRENT} not found: {path} holds no bundle (pass the --out folder of a "
                "tuning run, its bundles/ folder, or a version folder)"
            )
    else:
        check_version_name(version, "the version argument", root)
    folder = root / version
    recover_dir(folder)
    if not _is_file(folder / MANIFEST):
        raise BundleError(
            f"{folder / MANIFEST} not found: version {version!r} is missing or incomplete; "
            f"versions here: {bundle_versions(root) or 'none'}; {_REWRITE}"
        )
    return folder


# ---------------------------------------------------------------------- manifest


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of every file under ``folder`` but the manifest."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST:
            out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked manifest of a version folder (``BundleError`` naming the file otherwise)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} not found; {_REWRITE}") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, UTF-8, digits
        raise BundleError(f"{path} is not readable JSON ({exc}); {_REWRITE}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{path} is not a {FORMAT} manifest; {_REWRITE}")
    if type(data.get("format_version")) is not int or data["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{path} has format version {data.get('format_version')!r}; this version of "
            f"llama-index-ragtune reads {FORMAT_VERSION}: upgrade it, or {_REWRITE}"
        )
    for key in ("version", "models", "retrieval", "generation", "files"):
        if key not in data:
            raise BundleError(f"{path} lacks the field {key!r}; {_REWRITE}")
    version = data["version"]
    if not isinstance(version, str) or not _VERSION.match(version):
        raise BundleError(
            f"{path}: version must be a version name (v1, v2, ...), got {_short(version)}; "
            f"{_REWRITE}"
        )
    if _VERSION.match(folder.name) and version != folder.name:
        raise BundleError(
            f"{path}: version is {version!r} but the manifest is in the folder {folder.name!r}: "
            f"the manifest was edited or moved; {_REWRITE}"
        )
    if not isinstance(data["files"], dict):
        raise BundleError(f"{path}: 'files' must be an object; {_REWRITE}")
    for rel, info in data["files"].items():
        _inside(rel, f"files[{rel!r}]", path)
        if not (
            isinstance(info, dict)
            and isinstance(info.get("sha256"), str)
            and type(info.get("size")) is int
        ):
            raise BundleError(
                f"{path}: files[{rel!r}] must be {{'sha256': str, 'size': int}}; {_REWRITE}"
            )
    for key in ("models", "retrieval", "generation"):
        if not isinstance(data[key], dict):
            raise BundleError(f"{path}: {key!r} must be an object; {_REWRITE}")
    for kind in ("encoder", "decoder", "reranker"):
        entry = data["models"].get(kind)
        if entry is None and kind == "reranker":
            continue
        if not isinstance(entry, dict):
            raise BundleError(f"{path}: models.{kind} must be an object; {_REWRITE}")
        if entry.get("path") is not None:
            _inside(entry["path"], f"models.{kind}.path", path)
        elif kind == "reranker":
            raise BundleError(f"{path}: models.reranker.path is missing; {_REWRITE}")
        reference = entry.get("reference")
        if reference is not None and (not isinstance(reference, str) or not reference.strip()):
            raise BundleError(
                f"{path}: models.{kind}.reference must be a model id (a string) or null, got "
                f"{_short(reference)}; {_REWRITE}"
            )
        weight = entry.get("retrieval_weight")
        if weight is not None and not (_number(weight) and 0.0 <= weight <= 1.0):
            raise BundleError(
                f"{path}: models.{kind}.retrieval_weight must be a number in [0, 1], got "
                f"{_short(weight)}; {_REWRITE}"
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
        if type(value) is not int or not 1 <= value <= _MAX_COUNT:
            raise BundleError(
                f"{path}: {section}.{key} must be a whole number from 1 to {_MAX_COUNT}"
                f"{' or null' if optional else ''}, got {_short(value)}; {_REWRITE}"
            )
    threshold = data["generation"].get("refusal_threshold")
    if threshold is not None and not (_number(threshold) and 0.0 <= threshold <= 1.0):
        raise BundleError(
            f"{path}: generation.refusal_threshold must be a number in [0, 1] or null, got "
            f"{_short(threshold)}; {_REWRITE}"
        )
    _check_policy(data["generation"].get("refusal_policy"), path)
    return data


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_policy(recorded: Any, manifest: Path) -> None:
    """``BundleError`` naming ``generation.refusal_policy...`` unless the recorded policy
    (None: none) can be loaded; a trained scorer's folder must be inside the bundle."""
    from llama_index_ragtune.llms.refusal_policy import check_policy_record

    if recorded is None:
        return
    field_name = "generation.refusal_policy"
    try:
        record = check_policy_record(recorded, str(manifest), prefix=field_name + ".")
    except ValueError as exc:
        raise BundleError(f"{str(exc).rstrip('.')}; {_REWRITE}") from None
    if record.get("scorer") is not None and record.get("scorer_kind") != "similarity":
        _inside(record["scorer"], field_name + ".scorer", manifest)


def _inside(rel: Any, field_name: str, manifest: Path) -> None:
    """``BundleError`` unless ``rel`` is a relative path that stays inside the version folder."""
    if (
        not isinstance(rel, str)
        or not rel
        or "\0" in rel
        or Path(rel).is_absolute()
        or ".." in Path(rel).parts
    ):
        raise BundleError(
            f"{manifest}: {field_name} must be a path inside the bundle folder, got {rel!r}; "
            f"{_REWRITE}"
        )


def verify_bundle(folder: str | Path, hashes: bool = True) -> dict[str, Any]:
    """Check every file the manifest lists (present, same size, same SHA-256 when ``hashes``)
    and that nothing unlisted was added (files, links, dangling or not); return the manifest.

    Example::

        verify_bundle("ragtune-demo/bundles/v1")      # BundleError naming an edited file
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = manifest["files"]
    for rel, info in listed.items():
        path = folder / rel
        try:
            if not path.is_file():
                raise BundleError(f"{path} is missing from the bundle; {_REWRITE}")
            size = path.stat().st_size
            if size != info.get("size"):
                raise BundleError(
                    f"{path} was changed after the bundle was written (size {size}, "
                    f"manifest {info.get('size')}); {_REWRITE}"
                )
            if hashes and sha256_file(path) != info.get("sha256"):
                raise BundleError(
                    f"{path} was changed after the bundle was written (SHA-256 differs from "
                    f"{folder / MANIFEST}); {_REWRITE}"
                )
        except OSError as exc:
            raise BundleError(f"{path} cannot be read ({exc}); {_REWRITE}") from None
    for path in _entries(folder):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or rel in listed:
            continue
        if path.is_symlink():
            raise BundleError(
                f"{path} is a symbolic link not listed in {folder / MANIFEST}: the bundle was "
                f"edited; remove the link, or {_REWRITE}"
            )
        if not path.is_dir():
            raise BundleError(
                f"{path} is not listed in {folder / MANIFEST}: the bundle was edited; remove the "
                f"file, or {_REWRITE}"
            )
    return manifest


def _entries(folder: Path) -> list[Path]:
    """Every entry under ``folder`` but hidden ones, links not followed (a linked folder is
    one entry)."""

    def fail(exc: OSError) -> None:
        raise BundleError(f"{exc.filename} cannot be read ({exc.strerror}); {_REWRITE}")

    out = []
    for top, dirs, files in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *sorted(files)]:
            if not name.startswith("."):
                out.append(Path(top) / name)
    return out


# ---------------------------------------------------------------------- loading


@dataclass
class Bundle:
    """A loaded bundle: the ready query engine and its parts.

    Attributes:
        path: the version folder.
        manifest: the verified ``manifest.json``.
        retriever: the hybrid retriever (served encoder, chosen fusion).
        postprocessors: ``[CrossEncoderRerank]`` when a reranker was promoted, else ``[]``.
        llm: the served decoder (``LocalChatLLM`` with the chosen refusal threshold).
        query_engine: ``CitationQueryEngine`` over all of them.
    """

    path: Path
    manifest: dict[str, Any]
    retriever: Any
    postprocessors: list[Any]
    llm: Any
    query_engine: Any
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def as_query_engine(self, filters: Mapping[str, Any] | Any = None, **kwargs: Any) -> Any:
        """Another ``CitationQueryEngine`` over the same parts, with metadata ``filters``
        (``{key: value}`` or ``MetadataFilters``) and engine ``kwargs`` (e.g. ``streaming=True``).

        Example::

            bundle.as_query_engine(filters={"store": "grocery"}).query("apple return policy?")
        """
        from llama_index_ragtune.pipeline.context import metadata_filters
        from llama_index_ragtune.query_engine import CitationQueryEngine

        if isinstance(filters, Mapping):
            filters = metadata_filters(filters)
        retriever = self.retriever.with_filters(filters)
        options = {**self.settings, **kwargs}
        return CitationQueryEngine(
            retriever, llm=self.llm, node_postprocessors=self.postprocessors or None, **options
        )


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _model_path(folder: Path, entry: Mapping[str, Any], kind: str) -> str:
    """The folder of the bundle's ``kind`` model (checked to exist), else its hub reference."""
    from llama_index_ragtune.models import resolve_model

    if entry.get("path"):
        path = folder / entry["path"]
        if not path.is_dir():
            raise BundleError(
                f"{folder / MANIFEST}: models.{kind}.path names {entry['path']!r}, which is not a "
                f"folder in the bundle; {_REWRITE}"
            )
        return str(path)
    with _loading(folder, f"models.{kind}", entry):
        return resolve_model(entry.get("reference"), kind=kind)  # type: ignore[arg-type]


@contextlib.contextmanager
def _loading(folder: Path, part: str, entry: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn an error raised while loading ``part`` into a ``BundleError`` naming the manifest,
    the part and its folder (or hub reference)."""
    try:
        yield
    except (BundleError, MemoryError):
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        entry = entry or {}
        if entry.get("path"):
            where = f"from the bundle folder {folder / entry['path']}"
            hint = f"it does not hold a model of this kind; {_REWRITE}"
        elif part.startswith("models."):
            where = f"from its reference {entry.get('reference') or 'the default model'!r}"
            hint = (
                "the bundle holds no folder for it (incomplete), or the hub id cannot be "
                f"reached offline; install or download the model, or {_REWRITE}"
            )
        else:
            where, hint = f"in {folder}", _REWRITE
        raise BundleError(
            f"{folder / MANIFEST}: could not load {part} {where} ({reason}): {hint}"
        ) from exc


def load_bundle(
    path: str | Path,
    version: str | None = None,
    *,
    llm: Any = None,
    refusal_policy: Any = "bundle",
    device: str | None = None,
    verify: bool = True,
    **llm_kwargs: Any,
) -> Bundle:
    """Load (and verify) a bundle: ``load_bundle(out).query_engine.query(question)``.

    Args:
        path: a run's ``--out`` folder, its ``bundles/`` folder, or a version folder.
        version: a version to load instead of ``CURRENT`` (e.g. ``"v1"``).
        llm: any LlamaIndex LLM to answer with instead of the bundled decoder.
        refusal_policy: ``"bundle"`` (the policy the run chose), ``None`` (answer every
            question that has sources), or any ``RefusalPolicy`` to decide instead.
        device: torch device for the reranker and the decoder.
        verify: check every file's SHA-256 (sizes and presence are always checked).
        llm_kwargs: passed to ``LocalChatLLM`` (e.g. ``max_new_tokens=128``).

    Raises ``BundleError`` naming the file (and field) for a missing, incomplete or edited
    bundle, ``TypeError`` for an ``llm`` or ``refusal_policy`` of another type.
    """
    from llama_index.core.base.llms.base import BaseLLM

    from llama_index_ragtune.embeddings import default_embed_model
    from llama_index_ragtune.llms.refusal_policy import RefusalPolicy
    from llama_index_ragtune.query_engine import CitationQueryEngine
    from llama_index_ragtune.retrievers import HybridRetriever

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"load_bundle: path must be a folder path (str or Path), got {type(path).__name__}."
        )
    if llm is not None and not isinstance(llm, BaseLLM):
        raise TypeError(
            f"load_bundle: llm must be a LlamaIndex LLM or None (the bundled decoder), got "
            f"{type(llm).__name__}."
        )
    if isinstance(refusal_policy, str):
        if refusal_policy != "bundle":
            raise BundleError(
                f"load_bundle: refusal_policy={refusal_policy!r}; pass 'bundle', None "
                "or a RefusalPolicy"
            )
    elif refusal_policy is not None and not isinstance(refusal_policy, RefusalPolicy):
        raise TypeError(
            "load_bundle: refusal_policy must be 'bundle', None or a RefusalPolicy, got "
            f"{type(refusal_policy).__name__}."
        )
    folder = resolve_bundle_dir(path, version)
    manifest = verify_bundle(folder, hashes=verify)
    models, retrieval, generation = (
        manifest["models"],
        manifest["retrieval"],
        manifest["generation"],
    )
    encoder = _model_path(folder, models["encoder"], "encoder")
    reranker_entry = models.get("reranker")
    top_k = retrieval["similarity_top_k"]
    candidates = retrieval.get("rerank_candidates") or top_k
    with _loading(folder, "models.encoder", models["encoder"]):
        embed_model = default_embed_model(encoder)
    with (
        _quiet("llama_index_ragtune.retrievers.persist_hybrid"),
        _loading(folder, "the index (index/) with models.encoder", models["encoder"]),
    ):
        # The index names the encoder folder it was built from (in the work folder); the
        # manifest pairs it with the bundle's copy, whose files were just verified.
        retriever = HybridRetriever.from_persist_dir(
            folder / "index",
            embed_model=embed_model,
            similarity_top_k=candidates if reranker_entry else top_k,
        )
    postprocessors = []
    if reranker_entry:
        from llama_index_ragtune.postprocessor import CrossEncoderRerank

        reranker = _model_path(folder, reranker_entry, "reranker")
        with _loading(folder, "models.reranker", reranker_entry):
            postprocessors.append(
                CrossEncoderRerank(
                    model=reranker,
                    top_n=top_k,
                    retrieval_weight=float(reranker_entry.get("retrieval_weight") or 0.0),
                    device=device,
                )
            )
    if isinstance(refusal_policy, str):
        policy = _refusal_policy(generation, retriever, llm is None, folder, device)
    else:
        policy = refusal_policy
    if llm is None:
        from llama_index_ragtune.llms import LocalChatLLM

        options = {
            "max_new_tokens": generation["max_new_tokens"],
            # a bundle written before refusal policies existed records a decoder threshold
            "refusal_threshold": None if policy else generation.get("refusal_threshold"),
            "dtype": "auto",
            "device": device,
            **llm_kwargs,
        }
        decoder = _model_path(folder, models["decoder"], "decoder")
        with _loading(folder, "models.decoder", models["decoder"]):
            llm = LocalChatLLM(decoder, **options)
    settings = {
        "max_sources": generation.get("max_sources"),
        "max_source_chars": generation.get("max_source_chars"),
        "refusal_policy": policy,
    }
    engine = CitationQueryEngine(
        retriever, llm=llm, node_postprocessors=postprocessors or None, **settings
    )
    return Bundle(folder, manifest, retriever, postprocessors, llm, engine, settings)


def _refusal_policy(
    generation: dict[str, Any],
    retriever: Any,
    bundled_llm: bool,
    folder: Path | None = None,
    device: str | None = None,
) -> Any:
    """The bundle's refusal policy (its similarity signal reads the bundle's encoder; a trained
    scorer is loaded from its folder inside the bundle), or None.

    A policy that reads the decoder's P(refusal) is left out when another LLM answers:
    only the bundled decoder gives that probability.
    """
    from llama_index_ragtune.llms.refusal_policy import load_refusal_policy

    recorded = generation.get("refusal_policy")
    if recorded is None:
        return None
    field_name = "generation.refusal_policy"
    scorer = None
    if (
        folder is not None
        and recorded.get("scorer") is not None
        and recorded.get("scorer_kind") != "similarity"
    ):
        from llama_index_ragtune.llms.answerability import AnswerabilityScorer

        entry = {"path": recorded["scorer"]}
        if not (folder / entry["path"]).is_dir():
            raise BundleError(
                f"{folder / MANIFEST}: {field_name}.scorer names {entry['path']!r}, which is "
                f"not a folder in the bundle; {_REWRITE}"
            )
        with _loading(folder, f"{field_name}.scorer", entry):
            scorer = AnswerabilityScorer(folder / entry["path"], device=device)
    with _loading(folder, field_name) if folder else contextlib.nullcontext():
        policy = load_refusal_policy(recorded, scorer=scorer, embed_model=retriever.embed_model)
    if policy.uses_decoder and not bundled_llm:
        logger.warning(
            "load_bundle: the bundle's %s reads the bundled decoder's refusal probability; "
            "with llm= it is not applied (the LLM answers every question with sources)",
            type(policy).__name__,
        )
        return None
    return policy


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a bundle depends on (None: not installed)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    names = (
        "llama-index-ragtune",
        "llama-index-core",
        "sentence-transformers",
        "transformers",
        "trl",
        "peft",
        "torch",
        "faiss-cpu",
        "bm25s",
        "onnxruntime",
    )
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link ``src`` to ``dst`` (no second copy of model weights), else copy it."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
