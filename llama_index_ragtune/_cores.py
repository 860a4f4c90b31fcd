"""How many CPU cores this process may use.

Example::

    from llama_index_ragtune._cores import available_cores

    threads = available_cores()
"""

from __future__ import annotations

import os

__all__ = ["available_cores"]


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware: a ``taskset`` or container limit counts).

    Example::

        available_cores()   # 2 on a two-core machine
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
