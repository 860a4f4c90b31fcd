"""Where the engines keep their checkpoints and final model, and how a run resumes.

An engine's ``output_dir`` holds the trainer's ``checkpoint-<step>`` folders
(model, optimizer, scheduler and RNG state, written every ``save_steps``) and,
once training ends, ``final/``: a plain sentence-transformers folder.

Example::

    from llama_index_ragtune.finetuning.checkpoints import resolve_resume

    resolve_resume(True, "runs/encoder")      # "runs/encoder/checkpoint-100", or None
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

FINAL_DIR = "final"


def resolve_resume(
    resume: bool | str | os.PathLike | None, output_dir: str | os.PathLike
) -> str | None:
    """The checkpoint to pass as ``trainer.train(resume_from_checkpoint=...)``.

    ``True`` picks the last ``checkpoint-*`` in ``output_dir`` and starts fresh (with
    a log line) when there is none; a path must exist; ``None``/``False`` start fresh.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
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
    return str(path)
