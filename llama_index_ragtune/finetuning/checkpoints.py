"""Where the engines keep their checkpoints and final model, and how a run resumes.

An engine's ``output_dir`` holds the trainer's ``checkpoint-<step>`` folders
(model, optimizer, scheduler and RNG state, written every ``save_steps``) and,
once training ends, ``final/``: a plain sentence-transformers folder.

The trainer writes a checkpoint in place, ``trainer_state.json`` last. A run killed
while writing one leaves a folder without it (or with it cut short): resuming skips
such a folder and continues from the last complete checkpoint, which restores the
weights, optimizer, scheduler, RNG states and the position in the data, so the
resumed run reaches the weights an uninterrupted run would have.

Each checkpoint also records the engine and a fingerprint of the starting model
(``RUN_MARKER``): a run resumes only its own checkpoints, never another engine's or one
trained from another starting model (skipped with a warning, or refused when named).
A checkpoint written before that file existed is compared by what its own files say
(``checkpoint_evidence``): one clearly of another kind of model or another model is
refused the same way; one that matches resumes with a warning that it could not be fully
checked.

Example::

    from llama_index_ragtune.finetuning.checkpoints import resolve_resume

    resolve_resume(True, "runs/encoder")      # "runs/encoder/checkpoint-100", or None
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from llama_index_ragtune.finetuning.checkpoint_evidence import (
    described,
    legacy_mismatch,
    model_signature,
)
from llama_index_ragtune.models import MODEL_LOADING_LOCK

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
TRAINER_STATE = "trainer_state.json"
RUN_MARKER = "ragtune_run.json"
"""Written into each checkpoint: the engine and the starting model's fingerprint, so that a
run resumes only its own checkpoints (``resolve_resume``)."""
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a checkpoint the trainer finished writing (its
    ``trainer_state.json``, written last, is there and whole).

    Example::

        is_complete_checkpoint("runs/encoder/checkpoint-100")   # False if killed mid-write
    """
    try:
        json.loads((Path(folder) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return damaged_weights(folder) is None


def check_weights(folder: str | os.PathLike) -> None:
    """``RuntimeError`` naming the file when a model folder's weights are cut short or garbled,
    or hold NaN or infinite values (a diverged run: such a model must never be served).

    Example::

        check_weights("runs/encoder/final")     # before loading a model someone may have damaged
    """
    bad = damaged_weights(folder)
    if bad is not None:
        raise RuntimeError(
            f"{bad} is damaged (cut short or garbled: its size does not match its header); "
            f"fine-tune again, or restore {folder} from a copy"
        )
    broken = nonfinite_weights(folder)
    if broken:
        raise RuntimeError(
            f"the model in {folder} has NaN or infinite weights ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}): its training diverged; do not serve it, "
            "fine-tune again with a lower learning rate"
        )


def nonfinite_tensors(named: Any) -> list[str]:
    """The names of the floating-point tensors holding a NaN or infinite value, from
    ``(name, tensor)`` pairs (``model.named_parameters()``, a state dict's ``items()``).

    Example::

        nonfinite_tensors(model.named_parameters())   # ["0.auto_model.pooler.dense.bias"] or []
    """
    import torch

    with torch.no_grad():
        return [
            name
            for name, tensor in named
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]


def nonfinite_weights(folder: str | os.PathLike) -> list[str]:
    """``file:tensor`` names of the weights under ``folder`` (``*.safetensors``) that hold a
    NaN or infinite value; read one tensor at a time.

    Example::

        nonfinite_weights("runs/encoder/final")   # [] for a healthy model
    """
    from safetensors import safe_open

    broken: list[str] = []
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            tensors = ((key, handle.get_tensor(key)) for key in handle.keys())  # noqa: SIM118
            broken.extend(f"{path.name}:{name}" for name in nonfinite_tensors(tensors))
    return broken


def damaged_weights(folder: str | os.PathLike) -> Path | None:
    """The first ``*.safetensors`` file under ``folder`` that is cut short or garbled (its
    header or its size disagree with the tensors it lists), or None when all are whole.

    Example::

        damaged_weights("runs/encoder/final")   # PosixPath('.../model.safetensors') if truncated
    """
    for path in sorted(Path(folder).rglob("*.safetensors")):
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                header_len = int.from_bytes(handle.read(8), "little")
                if size < 8 or header_len > size - 8:
                    return path
                header = json.loads(handle.read(header_len))
            ends = [
                int(info["data_offsets"][1])
                for name, info in header.items()
                if name != "__metadata__"
            ]
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return path
        if 8 + header_len + max(ends, default=0) != size:
            return path
    return None


def last_complete_checkpoint(
    output_dir: str | os.PathLike, run: dict[str, Any] | None = None
) -> str | None:
    """The newest complete ``checkpoint-<step>`` in ``output_dir`` (``None`` if there is none);
    newer folders a killed run left half-written, or (with ``run``) another run wrote
    (``foreign_checkpoint``), are skipped with a warning.

    Example::

        last_complete_checkpoint("runs/encoder")   # "runs/encoder/checkpoint-99" if 100 is cut short
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    )
    for _, path in reversed(steps):
        why = foreign_checkpoint(path, run)
        if why:
            logger.warning("%s is not of this run (%s); skipping it", path, why)
            continue
        if is_complete_checkpoint(path):
            _warn_unverified(path, run)
            return str(path)
        logger.warning(
            "%s is incomplete or damaged (no whole %s, or weights cut short); skipping it",
            path,
            TRAINER_STATE,
        )
    return None


def check_resume_argument(resume: Any) -> None:
    """``TypeError`` naming ``resume_from_checkpoint`` unless it is ``True``, ``False``,
    ``None`` or a path (``1`` or ``5`` failed after the "before" scores as a bare ``Path``
    error). The engines call it when ``finetune()`` starts.

    Example::

        check_resume_argument(True)   # fine
    """
    if resume is None or isinstance(resume, (bool, str, os.PathLike)):
        return
    raise TypeError(
        f"resume_from_checkpoint must be True (the last checkpoint in output_dir), a "
        f"checkpoint-<step> folder, or None / False (train from the start), got "
        f"{type(resume).__name__} {resume!r}"
    )


def resolve_resume(
    resume: bool | str | os.PathLike | None,
    output_dir: str | os.PathLike,
    run: dict[str, Any] | None = None,
) -> str | None:
    """The checkpoint to pass as ``trainer.train(resume_from_checkpoint=...)``.

    ``True`` picks the last complete ``checkpoint-*`` in ``output_dir`` and starts fresh
    (with a log line) when there is none; a path must be a complete checkpoint;
    ``None``/``False`` start fresh. With ``run`` (``run_identity``), a checkpoint another
    run wrote (another engine, another starting model: ``foreign_checkpoint``) is skipped
    with a warning (``True``) or refused with a ``ValueError`` (a path).
    """
    if resume is None or resume is False:
        return None
    check_resume_argument(resume)
    if resume is True:
        last = last_complete_checkpoint(output_dir, run)
        if last is None:
            logger.info("no checkpoint in %s to resume from; training from the start", output_dir)
        else:
            logger.info("resuming from %s", last)
        return last
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass a checkpoint-<step> folder of a previous run, "
            "or resume_from_checkpoint=True to pick the last one in output_dir"
        )
    if not is_complete_checkpoint(path):
        raise ValueError(
            f"checkpoint {path} is incomplete or damaged (no whole {TRAINER_STATE}, or weights "
            "cut short); pass an earlier checkpoint-<step> folder, or resume_from_checkpoint=True "
            "to pick the last complete one"
        )
    why = foreign_checkpoint(path, run)
    if why:
        raise ValueError(
            f"checkpoint {path} is not of this run: {why}; resuming would continue another "
            "model's training. Pass a checkpoint of this engine and starting model, or "
            "resume_from_checkpoint=False to train from the start"
        )
    _warn_unverified(path, run)
    return str(path)


def _warn_unverified(folder: Path, run: dict[str, Any] | None) -> None:
    """Warn that ``folder`` (a checkpoint resumed for ``run``) was written before checkpoints
    recorded ``RUN_MARKER``: only its model's kind and shape were checked."""
    if run is None or _run_marker(folder) is not None:
        return
    logger.warning(
        "%s was written before checkpoints recorded %s (or that record is unreadable): it "
        "could not be fully checked. Its files match this run's model (%s), but which engine "
        "and starting model trained it is unknown; resuming it. If it is another run's, pass "
        "resume_from_checkpoint=False",
        folder,
        RUN_MARKER,
        described(run.get("model")),
    )


def weights_fingerprint(model: Any) -> str:
    """A short fingerprint of ``model``'s starting weights: the names, shapes and a sample of
    the values of the weights it does not train (a LoRA run's base model), or of all of them
    when it trains all. Equal for the same model loaded again, on any device.

    Example::

        weights_fingerprint(SentenceTransformer("runs/encoder/final"))   # '3f1c...'
    """
    import hashlib

    import torch

    named = list(model.named_parameters())
    frozen = [(n, p) for n, p in named if not p.requires_grad]
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in frozen or named:
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            if tensor.is_meta or tensor.numel() == 0:
                continue
            try:  # a quantized weight that cannot be read as floats: its name and shape only
                flat = tensor.reshape(-1)
                sample = flat[:: max(1, flat.numel() // 16)][:16].to("cpu", torch.float32)
                digest.update(sample.numpy().tobytes())
            except (RuntimeError, TypeError, ValueError):
                continue
    return digest.hexdigest()[:16]


def run_identity(engine: str, model: Any) -> dict[str, Any]:
    """What a checkpoint records of the run that wrote it (``RUN_MARKER``): the engine's
    class name, ``weights_fingerprint`` of the starting model and its ``model_signature``
    (what an older checkpoint without ``RUN_MARKER`` is compared with).

    Example::

        run_identity("EncoderFinetuneEngine", model)   # {'engine': ..., 'start': '3f1c...', 'model': {...}}
    """
    return {
        "engine": engine,
        "start": weights_fingerprint(model),
        "model": model_signature(model),
    }


def _run_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``RUN_MARKER`` checkpoint ``folder`` holds, or None (none, or unreadable)."""
    try:
        written = json.loads((Path(folder) / RUN_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return written if isinstance(written, dict) else None


def foreign_checkpoint(folder: str | os.PathLike, run: dict[str, Any] | None) -> str | None:
    """Why checkpoint ``folder`` is another run's (written by another engine, or from another
    starting model), or None when it is this ``run``'s. An older checkpoint without
    ``RUN_MARKER`` is judged by its own files (``checkpoint_evidence.legacy_mismatch``):
    another kind of model, architecture, hidden size or vocabulary.

    Example::

        foreign_checkpoint("runs/x/checkpoint-50", run_identity("RerankerFinetuneEngine", m))
        # "it was written by EncoderFinetuneEngine, not RerankerFinetuneEngine"
    """
    if run is None:
        return None
    written = _run_marker(folder)
    if written is None:
        why = legacy_mismatch(folder, run.get("model"))
        return None if why is None else f"{why} (a checkpoint without {RUN_MARKER})"
    if written.get("engine") != run["engine"]:
        return f"it was written by {written.get('engine')}, not {run['engine']}"
    if written.get("start") != run["start"]:
        return (
            "it was trained from another starting model (weights fingerprint "
            f"{written.get('start')}, this run's {run['start']})"
        )
    return None


def mark_checkpoints(trainer: Any, run: dict[str, Any]) -> None:
    """Have ``trainer`` write ``run`` (``run_identity``) as ``RUN_MARKER`` into each checkpoint
    it saves, so that a later resume can tell its own checkpoints from another run's.

    Example::

        mark_checkpoints(trainer, run_identity("EncoderFinetuneEngine", model))
    """
    from transformers import TrainerCallback

    from llama_index_ragtune._atomic import atomic_write_json

    class _MarkCheckpoints(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                atomic_write_json(folder / RUN_MARKER, run)

    trainer.add_callback(_MarkCheckpoints())


_TRAINER_LOADERS = ("_load_from_checkpoint", "_load_best_model")


def lock_checkpoint_loads(trainer: Any) -> Any:
    """``trainer`` with its own checkpoint loads (resuming, and the best checkpoint reloaded
    at the end under ``load_best_model_at_end``) made under ``models.MODEL_LOADING_LOCK``.

    sentence-transformers reloads a checkpoint by building a whole model from the folder
    (``from_pretrained``), which must not run beside another thread's model load, and
    logs and carries on with the last weights if that fails. Training itself stays
    unlocked.

    Example::

        trainer = lock_checkpoint_loads(SentenceTransformerTrainer(model=model, args=args))
        trainer.train()
    """
    for name in _TRAINER_LOADERS:
        original = getattr(trainer, name, None)
        if original is None or getattr(original, "_holds_loading_lock", False):
            continue

        def locked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with MODEL_LOADING_LOCK:
                return _original(*args, **kwargs)

        locked._holds_loading_lock = True  # type: ignore[attr-defined]
        setattr(trainer, name, locked)
    return trainer
