"""The errors of persisted retriever folders, and the default fix.

Example::

    from llama_index_ragtune.retrievers.persist_errors import PersistenceError

    raise PersistenceError("idx/docstore.json is missing; " + DEFAULT_HINT)
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

__all__ = [
    "DEFAULT_HINT",
    "PersistWriteError",
    "PersistenceError",
    "read_only_as_persistence_error",
]

#: The fix named when the caller gives none.
DEFAULT_HINT = "rebuild the retriever and call persist() again"
#: errno values saying a folder cannot be written (a read-only mount, no permission).
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class PersistenceError(ValueError):
    """A persisted retriever folder is missing, corrupt, edited, or of another format/version,
    or cannot be written (:class:`PersistWriteError`)."""


class PersistWriteError(OSError, PersistenceError):
    """``persist`` met a folder it may not write (read-only mount, no permission): a
    :class:`PersistenceError` that is also the ``OSError`` it was (same ``errno``), naming
    the target folder. Nothing was changed there."""


@contextlib.contextmanager
def read_only_as_persistence_error(target: str | os.PathLike, what: str) -> Iterator[None]:
    """Raise an ``EROFS`` / ``EACCES`` / ``EPERM`` met inside the block (it names a temporary
    file or folder beside ``target``) as a :class:`PersistWriteError` naming ``target``.

    Example::

        with read_only_as_persistence_error(folder, "HybridRetriever.persist"):
            persist_hybrid(retriever, folder)
    """
    try:
        yield
    except PersistWriteError:
        raise
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise
        first = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc  # the system's
        cause = "read-only" if exc.errno == errno.EROFS else "not writable by this user"
        raise PersistWriteError(
            exc.errno,
            f"{what}: cannot write {os.fspath(target)}: the folder (or the one holding it) is "
            f"{cause} ({first.strerror or first}: {first.filename}); nothing was changed there "
            "(an index already there still loads): make it writable, or persist elsewhere",
            os.fspath(target),
        ) from exc
