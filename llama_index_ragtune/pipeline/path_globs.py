"""Glob patterns and path keys: how ``metadata.json`` names the files of a docs folder.

``glob_match`` matches a relative path against a glob (``*`` stays inside a folder, ``**``
crosses folders) in time proportional to ``len(pattern) * len(path)``; ``path_key`` is
the one spelling that ``./grocery\\returns.md`` and ``grocery/returns.md`` share.

Example::

    from llama_index_ragtune.pipeline.path_globs import glob_match, path_key

    glob_match("grocery/**/*.md", path_key("./grocery/fresh/apples.md"))   # True
"""

from __future__ import annotations

import bisect
import functools
import itertools
import unicodedata
from collections.abc import Iterable


def _glob_tokens(pattern: str) -> list[str]:
    """``**/``, ``**``, ``*``, ``?`` or one literal character per token."""
    tokens, i = [], 0
    while i < len(pattern):
        for token in ("**/", "**", "*", "?"):
            if pattern.startswith(token, i):
                break
        else:
            token = pattern[i]
        if not (token == "**/" and tokens[-1:] == ["**/"]):  # a run of **/ is one **/
            tokens.append(token)
        i += len(token)
    return tokens


_WILDCARDS = ("**/", "**", "*", "?")


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> tuple[list[str], list[str], bool, bool]:
    """``(tokens, literal chunks, starts with a literal, ends with a literal)`` of a glob,
    kept for the many paths one metadata entry is matched against."""
    tokens = _glob_tokens(pattern)
    chunks: list[str] = []
    current: list[str] = []
    for token in tokens:
        if token in _WILDCARDS:
            if current:
                chunks.append("".join(current))
                current = []
        else:
            current.append(token)
    if current:
        chunks.append("".join(current))
    starts = bool(tokens) and tokens[0] not in _WILDCARDS
    ends = bool(tokens) and tokens[-1] not in _WILDCARDS
    return tokens, chunks, starts, ends


def _may_match(chunks: list[str], starts: bool, ends: bool, path: str) -> bool:
    """Whether ``path`` holds the glob's literal chunks in order (at its start / end when the
    glob starts / ends with one): a test at C speed that a path must pass to match, so a
    metadata file of a glob per product ("*/sku-123-*.md") does not walk the matcher over
    every file for every entry (500 globs x 5,000 files: 71 s)."""
    if not chunks:
        return True
    pos, inner = 0, chunks
    if starts:
        if not path.startswith(chunks[0]):
            return False
        pos, inner = len(chunks[0]), chunks[1:]
    last = None
    if ends and inner:
        last, inner = inner[-1], inner[:-1]
    for chunk in inner:
        found = path.find(chunk, pos)
        if found < 0:
            return False
        pos = found + len(chunk)
    return last is None or (path.endswith(last) and len(path) - len(last) >= pos)


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern`` (``*`` = any characters but ``/``, ``**/`` = any
    folders or none, ``**`` = anything, ``?`` = one character but ``/``).

    Runs in time proportional to ``len(pattern) * len(path)`` whatever the pattern
    (a regular expression backtracks for minutes on ``**/**/**/...`` against a deep path).

    Example::

        glob_match("grocery/**/*.md", "grocery/fresh/apples.md")      # True
    """
    tokens, chunks, starts, ends = _compiled(pattern)
    if not _may_match(chunks, starts, ends, path):
        return False
    end = len(tokens)
    # States: token index i (about to match tokens[i]) or -1 - i (inside the ".*" of a
    # "**/" at i, which must still end in "/").

    def closure(states: set[int]) -> set[int]:
        todo, out = list(states), set(states)
        while todo:
            i = todo.pop()
            if 0 <= i < end and tokens[i] in ("**/", "**", "*") and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return out

    states = closure({0})
    for ch in path:
        step: set[int] = set()
        for i in states:
            if i < 0:  # inside a "**/"
                step.add(i)
                if ch == "/":
                    step.add(-i)  # -1 - i is the token; its successor is -i
                continue
            if i == end:
                continue
            token = tokens[i]
            if token == "**/":
                step.add(-1 - i)
                if ch == "/":
                    step.add(i + 1)
            elif token == "**" or (token == "*" and ch != "/"):
                step.add(i)
            elif (token == "?" and ch != "/") or token == ch:
                step.add(i + 1)
        if not step:
            return False
        states = closure(step)
    return end in states


class GlobIndex:
    """Many file names to match many globs against: a glob is compared only with the names
    that start with its literal head (``grocery/`` of ``grocery/*.md``) and hold its longest
    literal part (``/sku-123-`` of ``*/sku-123-*.md``), found by ``str.find`` over all the
    names at once; so a metadata file of a glob per product stays fast (500 such globs
    against 5,000 files: 71 s when each glob was matched against every name).

    Example::

        index = GlobIndex([("grocery/a.md", "grocery/a.md"), ("tv/b.md", "tv/b.md")])
        index.matches("*/b.md")     # ['tv/b.md']
    """

    def __init__(self, keyed: Iterable[tuple[str, str]]) -> None:
        """``keyed``: ``(key, name)`` pairs; a glob matches against the key (NFC), and the
        names are returned."""
        self._rows = sorted(keyed)
        keys = [key for key, _ in self._rows]
        self._text = "\0".join(keys)  # a file name holds no NUL
        self._starts = list(itertools.accumulate((len(key) + 1 for key in keys), initial=0))

    def matches(self, pattern: str) -> list[str]:
        """The names whose key ``pattern`` matches (:func:`glob_match`), in key order."""
        return [name for key, name in self.candidates(pattern) if glob_match(pattern, key)]

    def candidates(self, pattern: str) -> list[tuple[str, str]]:
        """The ``(key, name)`` pairs that may match ``pattern``: those starting with its
        literal head and holding its longest literal part (a superset of the matches)."""
        _, chunks, _, _ = _compiled(pattern)
        head = pattern[: min((i for i, c in enumerate(pattern) if c in "*?"), default=len(pattern))]
        low = bisect.bisect_left(self._rows, (head,))
        high = bisect.bisect_left(self._rows, (_after(head),)) if head else len(self._rows)
        if high <= low:
            return []
        longest = max(chunks, key=len, default="")
        rows: Iterable[int] = range(low, high)
        if longest and longest != head:
            rows = self._holding(longest, low, high)
        return [self._rows[r] for r in rows]

    def _holding(self, part: str, low: int, high: int) -> list[int]:
        """The rows in ``[low, high)`` whose key holds ``part``: ``str.find`` over their text."""
        found: list[int] = []
        end = self._starts[high] - 1
        at = self._text.find(part, self._starts[low], end)
        while at >= 0:
            row = bisect.bisect_right(self._starts, at) - 1
            found.append(row)
            at = self._text.find(part, self._starts[row + 1], end)
        return found


def _after(head: str) -> str:
    """The least string above every string starting with ``head`` (not empty)."""
    stripped = head.rstrip(chr(0x10FFFF))
    if not stripped:
        return chr(0x10FFFF) * (len(head) + 1)  # above all but strings of U+10FFFF
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def path_key(name: str) -> str:
    """The form two spellings of one relative path share: NFC, ``/`` separators, no ``./``.

    A leading ``/`` is kept: an absolute path is not the relative path after it (with
    the docs folder at ``/a``, ``/a/x.md`` is its ``x.md``, not ``a/x.md``).

    Example::

        path_key("./grocery\\returns.md"), path_key("/grocery/returns.md")
        # ('grocery/returns.md', '/grocery/returns.md')
    """
    text = unicodedata.normalize("NFC", name).replace("\\", "/")
    relative = "/".join(part for part in text.split("/") if part not in ("", "."))
    return "/" + relative if text.startswith("/") else relative
