"""Cross-encoders loaded once per process: rerankers built over the same folder share one model.

Part of :mod:`llama_index_ragtune.postprocessor` (used by :class:`CrossEncoderRerank`).

Each reranker loaded its own copy of the weights, so two rerankers over one folder (an
engine per tenant, a bundle loaded per request, two threads building one each) held the
model twice in memory. :func:`shared_model` keeps one model per load key -- the folder (or
hub id), device, ``max_length``, ``trust_remote_code`` -- and the folder's files as they
are on disk (size and modification time), so a model saved again into the same folder is
loaded afresh. A model no reranker holds any more is freed (weak references). Threads
asking for the same key load it once; calls into the shared model are serialised by its
one lock (``pair_input.model_lock``).

Example::

    from llama_index_ragtune.postprocessor.shared_models import shared_model

    model = shared_model(("runs/reranker", "cpu", None, False), lambda: CrossEncoder(...))
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

__all__ = ["folder_stamp", "shared_model"]

_models: weakref.WeakValueDictionary[Hashable, Any] = weakref.WeakValueDictionary()
_loading: dict[Hashable, threading.Lock] = {}
_guard = threading.Lock()


def folder_stamp(model: str) -> tuple:
    """Size and modification time of each file directly in the folder ``model`` (``()`` for
    a hub id): what tells a model saved again into the same folder from the one loaded."""
    path = Path(model)
    if not path.is_dir():
        return ()
    stamp = []
    for entry in sorted(path.iterdir()):
        try:
            info = entry.stat()
        except OSError:
            continue
        stamp.append((entry.name, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def shared_model(key: Hashable, load: Callable[[], Any]) -> Any:
    """The model loaded for ``key`` while any holder keeps it, else ``load()`` (once, however
    many threads ask at the same time)."""
    with _guard:
        lock = _loading.setdefault(key, threading.Lock())
    with lock:
        model = _models.get(key)
        if model is None:
            model = load()
            with contextlib.suppress(TypeError):  # not weak-referenceable: not shared
                _models[key] = model
    with _guard:
        if _loading.get(key) is lock and not lock.locked():
            del _loading[key]
    return model
