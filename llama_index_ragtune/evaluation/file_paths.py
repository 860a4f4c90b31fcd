"""The paths evaluation files are read from and written to: checked, ``~`` expanded.

``EvaluationResults.save`` / ``load``, ``RetrievalReport`` / ``GenerationReport``
``to_json`` / ``from_json`` and ``write_report`` take a path from a setting or a command
line. ``None`` or a number is a ``TypeError`` naming the argument; ``""`` (an unset
variable: it named the current folder), a NUL character, or a ``~`` that names no home
folder is a ``ValueError`` naming it; a leading ``~`` is the home folder, as everywhere
else in the package (``save("~/runs/e.json")`` made a folder literally named ``~``).

Example::

    from llama_index_ragtune.evaluation.file_paths import checked_path

    checked_path("~/runs/evaluation.json", "EvaluationResults.save")   # /home/ann/runs/...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["checked_path"]


def checked_path(value: Any, what: str) -> Path:
    """``value`` as a :class:`~pathlib.Path` with ``~`` expanded; ``TypeError`` /
    ``ValueError`` naming ``what`` for no path, an empty one or one holding a NUL.

    Example::

        checked_path("runs/report.json", "RetrievalReport.to_json")   # PosixPath('runs/...')
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a file path (str or Path), got {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected a text path, got {type(text).__name__}; decode it")
    if not text.strip():
        raise ValueError(f"{what}: the path is empty; name the file (or folder) to use")
    if "\0" in text:
        raise ValueError(
            f"{what}: the path {text!r} holds a NUL character (\\0), which no file name can hold"
        )
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~user/..." of an unknown user, or no home folder
        raise ValueError(
            f"{what}: cannot expand the '~' of {text!r} (no such home folder); give the full path"
        ) from None
