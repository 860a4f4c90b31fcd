"""How a path is written into a benchmark result: relative to the working directory.

Results are committed, so they must not name the machine they ran on: an
absolute path (the checkout, a temporary folder, the model cache) is written
relative to the working directory the command ran in, and a bundled model by
its folder name.

Example::

    display_path("/home/me/ragtune/benchmarks/results")  # 'benchmarks/results' (run from /home/me/ragtune)
    display_path("runs/encoder")                    # 'runs/encoder' (left as given)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def display_path(value: str | os.PathLike[str]) -> str:
    """``value`` as recorded in a result: relative to the working directory, never absolute.

    Example::

        display_path(Path.cwd() / "runs" / "x")      # 'runs/x'
    """
    text = os.fspath(value)
    path = Path(text).expanduser()
    if not path.is_absolute():
        return text
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows): no relative form exists
        return path.name


def display_value(value: Any) -> Any:
    """``display_path`` for an absolute path (a string or a path object), inside dicts and lists too.

    Example::

        {k: display_value(v) for k, v in vars(args).items()}
    """
    if isinstance(value, os.PathLike):
        return display_path(value)
    if isinstance(value, str) and Path(value).expanduser().is_absolute():
        return display_path(value)
    if isinstance(value, dict):
        return {key: display_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [display_value(item) for item in value]
    return value
