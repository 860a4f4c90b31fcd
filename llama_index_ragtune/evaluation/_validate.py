"""Typed reads from parsed JSON that fail with the dotted path of the bad field.

Used by :mod:`llama_index_ragtune.evaluation.results`; ``Invalid`` carries the field
path (``generation[1].refusal.threshold``) and what is wrong with it.

Example::

    fields = Fields({"name": "hybrid", "latency_ms": [1.0, -2.0]}, "retrieval[0]",
                    required=("name",), optional=("latency_ms",))
    fields.text("name")                   # "hybrid"
    fields.numbers("latency_ms", low=0)   # Invalid: retrieval[0].latency_ms[1] ... >= 0
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from llama_index_ragtune._invisible import is_invisible


class Invalid(Exception):
    """A bad field: ``field`` is its dotted path, ``message`` what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


MAX_SHOWN_CHARS = 200
"""Characters of a value (a key, a number) an error message shows: an unknown 1 MB key
was echoed whole, in the message and in the field path."""


def shown(text: str, cap: int = MAX_SHOWN_CHARS) -> str:
    """``text``, or its first ``cap`` characters and how many more there are.

    Example::

        shown("k" * 1_000_000)[-27:]   # '… (999,800 more characters)'
    """
    return text if len(text) <= cap else f"{text[:cap]}… ({len(text) - cap:,} more characters)"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return shown(repr(value))  # a 4,000-digit integer
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def shows_nothing(text: str) -> bool:
    """True when ``text`` is empty or only white space and invisible characters (zero-width
    space, bidi marks, variation selectors): a report shows it as nothing. A control
    character is shown (as U+FFFD), so it is not nothing.

    Example::

        shows_nothing("\\u200b "), shows_nothing("a\\u200b"), shows_nothing("\\x00")
        # (True, False, False)
    """
    return all(ch.isspace() or is_invisible(ch) for ch in text)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
    """A JSON object at ``base`` (a dotted path) with typed, path-naming accessors."""

    def __init__(
        self,
        data: Any,
        base: str,
        required: Sequence[str] = (),
        optional: Sequence[str] | None = None,
    ):
        if not isinstance(data, dict):
            where = base or "the top level"
            raise Invalid(base, f"expected a JSON object at {where}, got {_kind(data)}")
        self.data = data
        self.base = base
        self.check_keys(required, optional)

    def check_keys(self, required: Sequence[str] = (), optional: Sequence[str] | None = ()) -> None:
        """Every ``required`` key is present; with ``optional`` given, no other key is."""
        for key in required:
            if key not in self.data:
                raise Invalid(self.path(key), "missing (required)")
        if optional is None:
            return
        known = (*required, *optional)
        for key in self.data:
            if key not in known:
                raise Invalid(self.path(key), f"unknown field; known fields here: {list(known)}")

    def path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.base}[{key}]"
        key = shown(key)
        return f"{self.base}.{key}" if self.base else key

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def names(self, what: str | None = None) -> list[str]:
        """The object's keys; with ``what`` (``"metric"``), each must show as a name: one
        of only spaces or invisible characters (``""``, ``"\\u200b"``) is ``Invalid``
        (it made a blank table row, indistinguishable from the next)."""
        if what is not None:
            for key in self.data:
                if shows_nothing(key):
                    raise Invalid(
                        self.base,
                        f"a {what} is named {shown(repr(key))}, which shows as nothing (only spaces or "
                        "invisible characters); give it a visible name",
                    )
        return list(self.data)

    def text(self, key: str, allow_empty: bool = False) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise Invalid(self.path(key), f"expected a string, got {_kind(value)}")
        if not allow_empty and shows_nothing(value):  # "\u200b" passed strip() and showed nothing
            raise Invalid(self.path(key), "expected a non-empty string with a visible character")
        return value

    def boolean(self, key: str) -> bool:
        value = self.data.get(key)
        if not isinstance(value, bool):
            raise Invalid(self.path(key), f"expected true or false, got {_kind(value)}")
        return value

    def number(
        self,
        key: str,
        low: float | None = None,
        high: float | None = None,
        nullable: bool = False,
    ) -> float | None:  # type: ignore[return]
        return _number(self.data.get(key), self.path(key), low, high, nullable)

    def count(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Invalid(self.path(key), f"expected a whole number >= 0, got {_kind(value)}")
        return value

    def _list(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if not isinstance(value, list):
            raise Invalid(self.path(key), f"expected a list, got {_kind(value)}")
        return value

    def numbers(self, key: str, low: float | None = None, high: float | None = None) -> list[float]:
        values = self._list(key)
        lowest = -sys.float_info.max if low is None else low  # so an infinity is out of bounds
        highest = sys.float_info.max if high is None else high
        # one check per value; the field path is built only for a bad one (a path string per
        # latency made a million-query file slow)
        if all(type(v) is float and lowest <= v <= highest for v in values):
            return list(values)  # in bounds, so finite (a NaN fails every comparison)
        base = self.path(key)
        return [
            _number(v, f"{base}[{i}]", low, high, False)  # type: ignore[misc]
            for i, v in enumerate(values)
        ]

    def flags(self, key: str) -> list[int]:
        """A list of 0/1 (``true``/``false`` accepted)."""
        out = []
        for i, value in enumerate(self._list(key)):
            if value not in (0, 1) or isinstance(value, float):
                raise Invalid(f"{self.path(key)}[{i}]", f"expected 0 or 1, got {_kind(value)}")
            out.append(int(value))
        return out

    def child(
        self, key: str, required: Sequence[str] = (), optional: Sequence[str] | None = None
    ) -> Fields:
        return Fields(self.data.get(key), self.path(key), required, optional)

    def items(self, key: str) -> list[Fields]:
        """The objects of an optional list field (absent or null: none)."""
        if self.data.get(key) is None:
            return []
        base = self.path(key)
        return [Fields(item, f"{base}[{i}]") for i, item in enumerate(self._list(key))]


def _number(
    value: Any, field: str, low: float | None, high: float | None, nullable: bool
) -> float | None:
    if value is None and nullable:
        return None
    if not _is_number(value) or not _finite(value):
        expected = "a finite number or null" if nullable else "a finite number"
        raise Invalid(field, f"expected {expected}, got {_kind(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"in [{low:g}, {high:g}]"
            if low is not None and high is not None
            else (f">= {low:g}" if low is not None else f"<= {high:g}")
        )
        hint = ""
        if low == 0 and high == 1 and 1 < value <= 100:  # a share written in percent
            hint = f"; given in percent? divide by 100 ({value / 100:g})"
        raise Invalid(field, f"expected a number {bounds}, got {_kind(value)}{hint}")
    return float(value)


def _finite(value: float) -> bool:
    """``math.isfinite``, False for an integer past floats (``10**400`` raised OverflowError)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
