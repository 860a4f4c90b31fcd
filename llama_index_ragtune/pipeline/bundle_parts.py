"""Loading a bundle's parts: model folders (or hub references), the encoder, the refusal policy.

Used by :func:`~llama_index_ragtune.pipeline.bundle.load_bundle`; each part's
failure is a ``BundleError`` naming the manifest field
(:mod:`~llama_index_ragtune.pipeline.bundle_load_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.bundle_folders import MANIFEST, REWRITE, BundleError
from llama_index_ragtune.pipeline.bundle_load_errors import _loading

# the bundle loader's one logger: users configure it by this name
logger = logging.getLogger("llama_index_ragtune.pipeline.bundle")


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
