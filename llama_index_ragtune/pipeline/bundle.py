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
``CitationQueryEngine``. Loading each part lives in
:mod:`~llama_index_ragtune.pipeline.bundle_parts`, its errors in
:mod:`~llama_index_ragtune.pipeline.bundle_load_errors`, copying model files in
:mod:`~llama_index_ragtune.pipeline.bundle_files` (all importable from here too).

Example::

    from llama_index_ragtune.pipeline import load_bundle

    bundle = load_bundle("ragtune-demo")                   # the CURRENT version
    response = bundle.query_engine.query("Apple return policy?")
    response.metadata["cited_node_ids"], bundle.manifest["version"]
    grocery = bundle.as_query_engine(filters={"store": "grocery"})
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.bundle_bm25 import check_served_bm25
from llama_index_ragtune.pipeline.bundle_files import (  # noqa: F401 - importable here too
    WEIGHT_SUFFIXES,
    _umask,
    empty_weights,
    link_or_copy,
)
from llama_index_ragtune.pipeline.bundle_folders import (
    BundleError,
    bundle_path,
    resolve_bundle_dir,
)
from llama_index_ragtune.pipeline.bundle_load_errors import (  # noqa: F401 - importable here too
    _loading,
    _no_temp_folder,
    _unreadable,
    _unreadable_error,
)
from llama_index_ragtune.pipeline.bundle_manifest import verify_bundle
from llama_index_ragtune.pipeline.bundle_parts import (  # noqa: F401 - importable here too
    _embed_model,
    _model_path,
    _refusal_policy,
    _unwritable,
)
from llama_index_ragtune.pipeline.package_versions import package_versions  # noqa: F401
from llama_index_ragtune.pipeline.quiet_logging import (  # noqa: F401 - importable here too
    _QUIET_FILTERS,
    _QUIET_LOCK,
    _quiet,
    _QuietThreads,
)

logger = logging.getLogger(__name__)


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

    The served hybrid's BM25 reads text as the run's BM25 settings say (its analyzer,
    stemmer language and stopwords: ``PipelineConfig.bm25_*``, recorded in the manifest's
    ``config`` and in ``index/``); a bundle whose index and manifest disagree is refused.

    Raises ``BundleError`` naming the file (and field) for a missing, incomplete or edited
    bundle or an empty ``path``, ``TypeError`` for a ``path``, ``llm``, ``refusal_policy``,
    ``verify`` or ``device`` of another type, or for ``llm_kwargs`` given with ``llm=``
    (they would not be used); ``ValueError`` for a device this machine lacks.
    """
    from llama_index.core.base.llms.base import BaseLLM

    from llama_index_ragtune.embeddings import default_embed_model
    from llama_index_ragtune.llms.refusal_policy import RefusalPolicy
    from llama_index_ragtune.query_engine import CitationQueryEngine
    from llama_index_ragtune.retrievers import HybridRetriever

    path = bundle_path(path, "load_bundle: path")  # None, 5, "" (an unset setting), ...
    if not isinstance(verify, bool):  # verify=None from an unset setting skipped every hash
        raise TypeError(f"load_bundle: verify must be True or False, got {verify!r:.60}.")
    if device is not None:  # before any model loads, not after the encoder and the index
        from llama_index_ragtune.llms.loading import check_device

        check_device(device, "load_bundle")
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
    if llm_kwargs:  # before any model loads; LocalChatLLM drops unknown names silently
        _check_decoder_settings(llm_kwargs)
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
    _check_utf8_path(folder)
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
    # the served BM25 reads text as the manifest's settings say (a refresh tunes on them)
    check_served_bm25(folder, manifest, retriever)
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


def _check_decoder_settings(settings: dict[str, Any]) -> None:
    """``TypeError`` naming the ``llm_kwargs`` of :func:`load_bundle` that ``LocalChatLLM``
    has no setting for (a typo such as ``max_new_token=64`` was dropped silently), or that
    the bundle sets itself (``model``); ``TypeError`` / ``ValueError`` for a value
    ``LocalChatLLM`` refuses (``max_new_tokens="64"``), all before any model loads."""
    from llama_index_ragtune.llms.local import LocalChatLLM, check_llm_settings

    known = set(LocalChatLLM.model_fields) - {"model"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(
            f"load_bundle: {unknown} {'is not a setting' if len(unknown) == 1 else 'are not settings'}"
            f" of the bundled decoder (LocalChatLLM); its settings: {sorted(known)}"
        )
    check_llm_settings(settings)


def _check_utf8_path(folder: Path) -> None:
    """``BundleError`` naming the folder whose name holds bytes that are not UTF-8 (written
    by a system using another encoding, e.g. Latin-1 ``caf\\xe9``): the bundled models'
    weights (safetensors) open only by a UTF-8 path (``SafetensorError``: "is not valid
    UTF-8", after the index had loaded; the index itself reads such paths)."""
    for part in (folder, *folder.parents):
        name = os.fsencode(part.name)
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            shown = os.fsencode(part).decode("utf-8", "backslashreplace")
            raise BundleError(
                f"{shown} is a folder name that is not UTF-8 (bytes from another encoding); "
                f"the bundle {os.fsencode(folder).decode('utf-8', 'backslashreplace')} cannot "
                "be loaded through it: its models' weight files (safetensors) open only by a "
                "UTF-8 path; rename that folder to a UTF-8 name (e.g. `convmv -f latin1 -t utf8 "
                "--notest`) or move the bundle elsewhere"
            ) from None
