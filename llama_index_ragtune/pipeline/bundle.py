"""The bundle: one versioned, verified folder with everything a tuned RAG system serves.

Layout (written by the pipeline's ``bundle`` step, atomically: a crash leaves the
previous version and ``CURRENT`` untouched)::

    <out>/bundles/CURRENT          the served version's name, e.g. "v3"
    <out>/bundles/.lock            held by writers while they add a version or move CURRENT
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
import errno
import logging
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.bundle_folders import (
    MANIFEST,
    REWRITE,
    BundleError,
    resolve_bundle_dir,
)
from llama_index_ragtune.pipeline.bundle_manifest import verify_bundle

logger = logging.getLogger(__name__)
# model weight files: never empty in a model that loads (an empty one is a save cut short)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf")


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
        from llama_index_ragtune.query_engine import CitationQueryEngine

        if isinstance(filters, Mapping):
            from llama_index_ragtune.pipeline.context import metadata_filters

            filters = metadata_filters(filters)
        retriever = self.retriever.with_filters(filters)
        options = {**self.settings, **kwargs}
        return CitationQueryEngine(
            retriever, llm=self.llm, node_postprocessors=self.postprocessors or None, **options
        )


class _QuietThreads(logging.Filter):
    """Drops records under ``ERROR`` logged by the threads inside :func:`_quiet`."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.depth: dict[int, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.thread not in self.depth


_QUIET_FILTERS: dict[str, _QuietThreads] = {}
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence the logger ``name`` below ``ERROR`` for this thread only.

    A filter keyed by thread, not the logger's level: concurrent loads (threads of a server)
    neither leave the level changed when they finish in another order than they started,
    nor silence the logger for the other threads meanwhile.
    """
    with _QUIET_LOCK:
        quiet = _QUIET_FILTERS.get(name)
        if quiet is None:
            quiet = _QUIET_FILTERS[name] = _QuietThreads()
            logging.getLogger(name).addFilter(quiet)
    me = threading.get_ident()
    with quiet.lock:
        quiet.depth[me] = quiet.depth.get(me, 0) + 1
    try:
        yield
    finally:
        with quiet.lock:
            quiet.depth[me] -= 1
            if not quiet.depth[me]:
                del quiet.depth[me]


def _model_path(folder: Path, entry: Mapping[str, Any], kind: str) -> str:
    """The folder of the bundle's ``kind`` model (checked to exist), else its hub reference."""
    from llama_index_ragtune.models import resolve_model

    if entry.get("path"):
        path = folder / entry["path"]
        if not path.is_dir():
            raise BundleError(
                f"{folder / MANIFEST}: models.{kind}.path names {entry['path']!r}, which is not a "
                f"folder in the bundle; {REWRITE}"
            )
        return str(path)
    with _loading(folder, f"models.{kind}", entry):
        return resolve_model(entry.get("reference"), kind=kind)  # type: ignore[arg-type]


def _unwritable(exc: OSError) -> bool:
    """Whether ``exc`` says a folder cannot be written (read-only, a file in the way)."""
    kinds = (PermissionError, NotADirectoryError, FileExistsError)
    return isinstance(exc, kinds) or exc.errno == errno.EROFS


def _embed_model(encoder: str, make: Any) -> Any:
    """The bundle's encoder as an embedding model: ONNX where installed, which exports the
    model once into the user cache (``RAGTUNE_CACHE_DIR``); a cache that cannot be written
    (read-only home, a file in the way) falls back to PyTorch with a warning, so a deployed
    bundle loads wherever it can be read."""
    try:
        return make(encoder)
    except OSError as exc:
        if not _unwritable(exc):  # e.g. a missing encoder: not a cache problem
            raise
        logger.warning(
            "load_bundle: the encoder's ONNX export could not be cached (%s: %s); encoding "
            "with PyTorch instead (same embeddings, slower); set RAGTUNE_CACHE_DIR to a "
            "writable folder to use ONNX",
            type(exc).__name__,
            " ".join(str(exc).split())[:300],
        )
        import tempfile

        # A local folder is read where it is: the hub cache LlamaIndex would otherwise create
        # is unused, so name the folder itself (a read-only container may have no temp folder).
        cache = encoder if Path(encoder).is_dir() else tempfile.gettempdir()
        return make(encoder, backend="torch", cache_folder=cache)


def _no_temp_folder() -> str | None:
    """Why this process has no usable temporary folder, or ``None`` when it has one."""
    import tempfile

    try:
        tempfile.gettempdir()
    except OSError as exc:
        return " ".join(str(exc).split())[:200]
    return None


def _unreadable(folder: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` files or folders under ``folder`` that this process may not read (their
    permissions; links, dangling or not, are the verification's to name, not counted here)."""
    found: list[str] = []

    def denied(path: str, mode: int) -> bool:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
        return not os.access(path, mode)

    def walk_error(exc: OSError) -> None:
        if isinstance(exc, PermissionError) and exc.filename:
            found.append(str(exc.filename))

    for top, dirs, files in os.walk(folder, onerror=walk_error):
        found += [
            os.path.join(top, d) for d in dirs if denied(os.path.join(top, d), os.R_OK | os.X_OK)
        ]
        found += [os.path.join(top, f) for f in files if denied(os.path.join(top, f), os.R_OK)]
        if len(found) >= limit:
            break
    return found[:limit]


def _unreadable_error(folder: Path, found: list[str]) -> BundleError:
    uid = getattr(os, "getuid", lambda: "?")()
    return BundleError(
        f"{folder}: {', '.join(found)} cannot be read by this user (uid {uid}): the bundle was "
        "written by another user and its files are private to them; make the bundle readable "
        f"to the server (`chmod -R a+rX {folder}`), or serve it as the user who wrote it"
    )


@contextlib.contextmanager
def _loading(folder: Path, part: str, entry: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn an error raised while loading ``part`` into a ``BundleError`` naming the manifest,
    the part and its folder (or hub reference)."""
    try:
        yield
    except (BundleError, MemoryError):
        raise
    except Exception as exc:
        unreadable = _unreadable(folder)
        if unreadable:
            raise _unreadable_error(folder, unreadable) from exc
        no_temp = _no_temp_folder()
        if no_temp:  # not the bundle's fault: torch / dill need a temporary folder
            raise BundleError(
                f"{folder / MANIFEST}: could not load {part}: this process has no writable "
                f"temporary folder ({no_temp}), which the model libraries need; mount a "
                "writable /tmp (a tmpfs or emptyDir volume) or set TMPDIR to a writable "
                "folder; the bundle itself may stay read-only"
            ) from exc
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        entry = entry or {}
        if entry.get("path"):
            where = f"from the bundle folder {folder / entry['path']}"
            empty = empty_weights(folder / entry["path"])
            hint = (
                f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty (0 bytes): the "
                f"model was saved incompletely before the bundle was written; {REWRITE}"
                if empty
                else f"it does not hold a model of this kind; {REWRITE}"
            )
        elif part.startswith("models."):
            where = f"from its reference {entry.get('reference') or 'the default model'!r}"
            hint = (
                "the bundle holds no folder for it (incomplete), or the hub id cannot be "
                f"reached offline; install or download the model, or {REWRITE}"
            )
        else:
            where, hint = f"in {folder}", REWRITE
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
        llm_kwargs: passed to ``LocalChatLLM`` (e.g. ``max_new_tokens=128``); not with ``llm=``.

    Raises ``BundleError`` naming the file (and field) for a missing, incomplete or edited
    bundle, ``TypeError`` for an ``llm`` or ``refusal_policy`` of another type, or for
    ``llm_kwargs`` given with ``llm=`` (they would not be used).
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
    if llm is not None and llm_kwargs:
        raise TypeError(
            f"load_bundle: {sorted(llm_kwargs)} configure the bundled decoder (LocalChatLLM), "
            "which llm= replaces; set them on your own LLM instead."
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
    try:
        manifest = verify_bundle(folder, hashes=verify)
    except BundleError:
        unreadable = _unreadable(folder)
        if unreadable:  # not a damaged bundle: another user's private files
            raise _unreadable_error(folder, unreadable) from None
        raise
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
        embed_model = _embed_model(encoder, default_embed_model)
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
    from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy

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
                f"not a folder in the bundle; {REWRITE}"
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


def empty_weights(folder: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` model weight files (:data:`WEIGHT_SUFFIXES`) under ``folder`` that are
    empty (0 bytes), as paths relative to ``folder``.

    Example::

        empty_weights(Path("runs/shop/bundles/v2/encoder"))      # ['model.safetensors']
    """
    found = []
    for top, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(top, name)
            with contextlib.suppress(OSError):
                if name.endswith(WEIGHT_SUFFIXES) and os.path.getsize(path) == 0:
                    found.append(os.path.relpath(path, folder))
        if len(found) >= limit:
            break
    return found[:limit]


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link ``src`` to ``dst`` (no second copy of model weights), else copy it.

    The file gets the read permissions the user's umask gives new files: transformers saves
    weights private to their owner (``0600``), which a server running as another user
    (a container's non-root user) could not read from a deployed bundle. An empty weight
    file (:data:`WEIGHT_SUFFIXES`, a save cut short) is a ``BundleError`` naming it: a
    version holding it would verify, then fail to load once served.
    """
    import shutil

    if str(src).endswith(WEIGHT_SUFFIXES) and os.path.getsize(src) == 0:
        raise BundleError(
            f"{src} is empty (0 bytes): the model was saved incompletely, so no bundle version "
            "is written from it (the served version stays); train or save that model again"
        )
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    with contextlib.suppress(OSError):  # a file system without modes, another owner's file
        mode = os.stat(dst).st_mode
        shared = mode | (0o444 & ~_umask())
        if shared != mode:
            os.chmod(dst, shared & 0o7777)
    return dst


def _umask() -> int:
    """This process's umask, read without changing it (``0o022`` where it cannot be read)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
