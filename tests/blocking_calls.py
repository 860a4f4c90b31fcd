"""Run a call that may block (a reader opening a named pipe) in a daemon thread, so that a
test fails on a block instead of hanging the whole run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def call_in_thread(call: Callable[[], Any], seconds: float = 30) -> dict[str, Any]:
    """``{"done": bool, "error": exception or None}`` of ``call()`` given ``seconds`` to end.

    Example::

        result = call_in_thread(lambda: verify_bundle(folder))
        assert result["done"], "verify_bundle blocked"
    """
    result: dict[str, Any] = {"done": False, "error": None}

    def work() -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            result["error"] = exc
        result["done"] = True

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return result
