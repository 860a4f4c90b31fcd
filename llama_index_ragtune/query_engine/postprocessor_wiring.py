"""Node postprocessors reporting their events to the callback manager of the engine that uses them.

Example::

    reranker = wired(CrossEncoderRerank(top_n=3), engine.callback_manager)
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel

__all__ = ["wired"]

# postprocessors an engine has set its callback manager on, by id (entries leave with them)
_WIRED: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_WIRED_LOCK = threading.Lock()


def wired(postprocessor: Any, callback_manager: Any) -> Any:
    """``postprocessor`` reporting its events (RERANKING...) to ``callback_manager``.

    Like core, the first engine sets its callback manager on the postprocessor. One that
    another engine already set its own manager on is not rewired (that engine's events
    would go to this one's handlers, e.g. another request's tracer): this engine gets a
    shallow copy (a ``CrossEncoderRerank`` copy shares the loaded model).
    """
    with _WIRED_LOCK:
        current = getattr(postprocessor, "callback_manager", None)
        if current is callback_manager or id(postprocessor) not in _WIRED:
            with contextlib.suppress(TypeError):  # not weakly referable: rewired, as core does
                _WIRED[id(postprocessor)] = postprocessor
            postprocessor.callback_manager = callback_manager
            return postprocessor
    if isinstance(postprocessor, BaseModel):
        copied = postprocessor.model_copy()
    else:
        copied = copy.copy(postprocessor)
    copied.callback_manager = callback_manager
    return copied
