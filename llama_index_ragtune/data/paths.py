"""The paths the data loaders are given: what is there when it is not a plain file or folder.

``Path.is_file()`` and ``Path.is_dir()`` are false for a named pipe (FIFO), a device, a
socket and a broken symbolic link alike, so the loaders used to call all of them "not
found". :func:`check_file` and :func:`check_folder` name what is there instead (as the
command line does, with ``_atomic_reads.path_kind``), and :func:`open_plain` opens a file
without blocking and refuses anything but a plain file on the opened descriptor: a FIFO
given as ``corpus.jsonl`` or a ``--qa`` file is an error, never a reader waiting forever
for a writer, and ``/dev/zero`` is never read.

Example::

    from llama_index_ragtune.data.paths import check_file, open_plain

    path = check_file("dev-v2.0.json", "SQuAD 2.0 file")   # FileNotFoundError, ...
    with open_plain(path) as handle:
        head = handle.read(4)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

from llama_index_ragtune._atomic_reads import open_plain_fd, path_kind
from llama_index_ragtune.data.errors import DataError

__all__ = ["check_file", "check_folder", "open_plain", "path_kind"]

_NOT_READ = "it was not read (it could block or never end)"


def check_file(path: str | os.PathLike[str], what: str, error: type[DataError] = DataError) -> Path:
    """``Path(path)`` when it leads to a plain file, else an error naming what is there.

    Raises:
        FileNotFoundError: nothing is there, or a broken / looping link (named as such).
        IsADirectoryError: a folder.
        DataError (``error``): a named pipe, a device or a socket; it is not opened.

    Example::

        check_file("/dev/null", "dataset file")  # DataError: /dev/null: is a character device ...
    """
    path = Path(path)
    kind = path_kind(path)
    if kind == "a file":
        return path
    if kind is None:
        raise FileNotFoundError(f"{what} not found: {path}")
    if kind == "a folder":
        raise IsADirectoryError(f"{path} is a folder; pass the {what}")
    if "link" in kind or kind.startswith("unreachable"):
        raise FileNotFoundError(f"{what} {path} is {kind}, not a file; fix or remove the link")
    raise error(
        f"is {kind}, not a plain file; {_NOT_READ}",
        path=path,
        hint=f"pass the {what} as a regular file (save a stream to a file first)",
    )


def check_folder(path: str | os.PathLike[str], what: str, expected: str = "") -> Path:
    """``Path(path)`` when it leads to a folder, else an error naming what is there.

    ``expected`` (such as the layout the folder should have) ends the messages.

    Raises:
        FileNotFoundError: nothing is there, or a broken / looping link (named as such).
        NotADirectoryError: a file, a named pipe, a device or a socket.

    Example::

        check_folder("corpus.jsonl", "BEIR folder")  # NotADirectoryError: ... is a file ...
    """
    path = Path(path)
    kind = path_kind(path)
    tail = f" ({expected})" if expected else ""
    if kind == "a folder":
        return path
    if kind is None:
        raise FileNotFoundError(f"{what} not found: {path}{tail}")
    if "link" in kind or kind.startswith("unreachable"):
        raise FileNotFoundError(f"{what} {path} is {kind}, not a folder{tail}")
    raise NotADirectoryError(f"{path} is {kind}, not a {what}{tail}")


def open_plain(path: str | os.PathLike[str], error: type[DataError] = DataError) -> BinaryIO:
    """``path`` opened for reading in binary, when it is a plain file (checked on the opened
    descriptor, so a file swapped after a check is caught too). A named pipe is opened
    without waiting for a writer and refused, as are devices and sockets (``error`` naming
    the path and what it is); a folder is ``IsADirectoryError``, nothing there
    ``FileNotFoundError``.

    Example::

        with open_plain("corpus.jsonl") as handle:
            head = handle.read(4)
    """

    def refuse(kind: str) -> Exception:
        if kind == "a folder":
            return IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        return error(
            f"is {kind}, not a plain file; {_NOT_READ}",
            path=Path(path),
            hint="pass a regular file (save a stream to a file first)",
        )

    return os.fdopen(open_plain_fd(path, refuse), "rb")
