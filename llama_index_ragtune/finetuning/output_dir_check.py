"""An engine's ``output_dir`` checked when the engine is built, not when training saves.

A symbolic link that leads nowhere (a loop, or a link to a missing folder) or a file
among the folders above ``output_dir`` made the trainer fail with a bare
``FileExistsError`` / ``[Errno 40] Too many levels of symbolic links`` only after the
model, the index and the "before" scores were built. ``check_output_dir`` names the
entry and the fix instead.

Example::

    from llama_index_ragtune.finetuning.output_dir_check import check_output_dir

    check_output_dir("EncoderFinetuneEngine", "runs/encoder")
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def check_output_dir(owner: str, output_dir: str | os.PathLike) -> None:
    """``NotADirectoryError`` naming the entry when ``output_dir``, or a folder above it, is a
    file, a symbolic link loop or a symbolic link to a missing place."""
    path = Path(output_dir)
    for entry in (path, *path.parents):
        if not os.path.lexists(entry):
            continue
        try:
            os.stat(entry)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                why = "a symbolic link loop (it leads back to itself)"
            elif entry.is_symlink():
                why = f"a symbolic link to {os.readlink(entry)!s}, which does not exist"
            else:
                raise
            where = "output_dir" if entry == path else f"a folder above output_dir {path}:"
            raise NotADirectoryError(
                f"{owner}: {where} {entry} is {why}; remove or repoint the link, or choose "
                "another output_dir"
            ) from exc
        if not entry.is_dir():
            if entry == path:
                raise NotADirectoryError(f"{owner}: output_dir {path} is a file; choose a folder")
            raise NotADirectoryError(
                f"{owner}: output_dir {path} lies under {entry}, which is a file, not a "
                "folder; choose another output_dir"
            )
        return  # the first existing entry is a folder: the rest can be created


def check_apart_from_start_model(
    owner: str,
    output_dir: str | os.PathLike,
    model: object,
    replaced: tuple[str, ...] = (),
) -> None:
    """``ValueError`` when ``output_dir`` is the starting model's folder or lies inside it (the
    run would write checkpoints, model folders and ``decision.json`` among the model's files),
    or when the starting model lies in a folder of ``output_dir`` that the run replaces or
    removes: one of ``replaced`` (``challenger/``, the decoder's ``merged/``) or a
    ``checkpoint-N`` (rotated away by ``save_total_limit``). ``final/`` may hold it: a run
    replaces ``final/`` only with a model that beat it. ``model`` that is not a local folder (a
    hub id, a loaded model, ``None``) is not checked.

    Example::

        check_apart_from_start_model("EncoderFinetuneEngine", "runs/e", "models/base")
    """
    if not isinstance(model, (str, os.PathLike)) or not Path(model).is_dir():
        return
    start, out = Path(model).resolve(), Path(output_dir).resolve()
    if out == start or start in out.parents:
        where = "is" if out == start else "lies inside"
        raise ValueError(
            f"{owner}: output_dir {output_dir} {where} the starting model's folder {model}: "
            "the run would write its checkpoints, model folders and decision.json among the "
            "model's files; choose an output_dir outside the model's folder"
        )
    if out not in start.parents:
        return
    parts = start.relative_to(out).parts
    if parts[0] in replaced or any(part.startswith("checkpoint-") for part in parts):
        raise ValueError(
            f"{owner}: the starting model {model} lies in {out / parts[0]}, which this run "
            f"replaces or removes in output_dir {output_dir}; copy the model elsewhere first, "
            "or choose another output_dir"
        )
