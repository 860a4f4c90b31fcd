"""Silence a logger below ``ERROR`` for one thread while it loads a bundle's part.

Used by :func:`~llama_index_ragtune.pipeline.bundle.load_bundle`; private to the pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator


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
