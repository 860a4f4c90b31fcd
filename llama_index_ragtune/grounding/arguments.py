"""Checks of what the grounded format's functions are given: text where text is expected.

Part of :mod:`llama_index_ragtune.grounding`. An answer of ``None`` (an LLM's message
without content), ``bytes``, or a single string where a list of source texts is expected
were read character by character or failed deep inside (``'NoneType' object is not
iterable``); a string as the sources made each of its characters a numbered source.

Example::

    from llama_index_ragtune.grounding.arguments import require_text, require_texts

    require_text("Paris [1].", "parse_answer: raw")          # 'Paris [1].'
    require_texts(["Rome.", "Paris."], "check_quotes: source_texts")
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["require_text", "require_texts"]


def require_text(value: Any, name: str) -> str:
    """``value`` when it is a ``str``; a ``TypeError`` naming ``name`` otherwise.

    Example::

        require_text(None, "parse_answer: raw")   # TypeError: ... must be a str, got None
    """
    if isinstance(value, str):
        return value
    hint = " (decode it first: value.decode('utf-8'))" if isinstance(value, bytes) else ""
    raise TypeError(f"{name} must be a str, got {_shown(value)}{hint}")


def require_texts(values: Any, name: str) -> list[str]:
    """``values`` as a list of ``str`` (one per source); a ``TypeError`` naming ``name`` and the
    first item that is not text, or a single string given for the list.

    Example::

        require_texts("Rome.", "build_messages: source_texts")   # TypeError: a list of str
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(
            f"{name} must be a list of str (one text per source), got {_shown(values)}; "
            "wrap a single text in a list"
        )
    values = list(values)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a str, got {_shown(value)}")
    return values


def _shown(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"{type(value).__name__} {value!r}"[:120]
