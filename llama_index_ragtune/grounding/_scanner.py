"""The scanner behind :mod:`llama_index_ragtune.grounding`'s citation grammar (private).

Two stages, each reading its input once: :class:`Lexer` turns characters into
tokens (text, citation marks, backtick/tilde runs, newlines), removing the
citations that map to no source as it goes and holding back at most one
bracket group; :class:`CodeReader` decides which tokens are code (fenced
blocks, inline spans) and holds back at most one inline span's reach. Both
decide from the text with removed citations already gone, so cleaning a
cleaned text changes nothing. The rules are documented in ``grounding``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import NamedTuple

from llama_index_ragtune._invisible import is_invisible

MAX_MARKER_CHARS = 64
"""A bracket group (nested groups included) longer than this is text, not a citation."""
MAX_RANGE = 100
"""A range names at most this many numbers; a bracket with a wider one is text, not a citation."""
MAX_CODE_SPAN_CHARS = 500
"""An inline code span must close within this many characters, or its backticks are text."""
_MAX_SPACE = 64  # whitespace held back in case a removed citation takes it along
_MAX_DEBRIS = 4 * MAX_MARKER_CHARS  # raw characters held in open bracket groups at most
_MAX_NESTING = 8  # a bracket opened inside 8 open groups ends them: they are text
MAX_HELD_CHARS = MAX_CODE_SPAN_CHARS + 3 * MAX_MARKER_CHARS + _MAX_SPACE + 1
"""Visible characters a ``CitationFilter`` holds back at most between two chunks."""


_CLOSE = {"[": "]", "\uff3b": "\uff3d", "\u3010": "\u3011"}
_SEPS = ",;\uff0c\uff1b\u3001"
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"
_IN_GROUP = frozenset(_SEPS + _DASHES + "sourceSOURCE:#\uff1a")
_ITEM = rf"(\d+)(?:\s*[{_DASHES}]\s*(\d+))?"
_LEAD = r"(?:sources?\s*[:#\uff1a]?\s*)?"
_GROUP = re.compile(
    rf"[\s{_SEPS}]*{_LEAD}{_ITEM}(?:(?:\s*[{_SEPS}]\s*|\s+){_LEAD}{_ITEM})*[\s{_SEPS}]*",
    re.IGNORECASE,
)
_ITEMS = re.compile(_ITEM)


@lru_cache(maxsize=1024)
def _read_as(ch: str) -> str:
    """What ``ch`` reads as inside a bracket group: nothing for an invisible character (a
    zero-width space, word joiner, BOM or soft hyphen: the reader sees ``[1]``), the ASCII
    digits of a digit form equal to them under NFKC (``¹``, ``①``: decimal digits of any
    script, ``١``, are read by value already), else ``ch`` itself."""
    if is_invisible(ch):
        return ""
    if not ch.isdecimal():
        form = unicodedata.normalize("NFKC", ch)
        if form.isascii() and form.isdigit():
            return form
    return ch


def _visible_content(content: str) -> str:
    """A bracket group's content as it reads (:func:`_read_as` on each character)."""
    return content if content.isascii() else "".join(map(_read_as, content))


@lru_cache(maxsize=4096)
def _group_numbers(content: str) -> tuple[int, ...] | None:
    """The numbers a bracket group names (ranges expanded), or None if it is not a citation."""
    content = _visible_content(content)
    if not _GROUP.fullmatch(content):
        return None
    out: list[int] = []
    for match in _ITEMS.finditer(content):
        a = int(match.group(1))
        b = a if match.group(2) is None else int(match.group(2))
        a, b = min(a, b), max(a, b)
        if b - a >= MAX_RANGE:
            return None
        out.extend(range(a, b + 1))
    return tuple(out)


class Token(NamedTuple):
    """A piece of the answer: ``raw`` as written, ``clean`` with invalid citations removed."""

    kind: str  # "text", "mark", "tick" (a run of ` or ~) or "nl"
    raw: str
    clean: str
    start: int  # offset of the token in the raw text
    valid: tuple[int, ...] = ()
    invalid: tuple[int, ...] = ()
    run: int = 0
    char: str = ""
    line_start: bool = False  # tick: after at most 3 spaces on its line
    blank: bool = False  # nl: the line it ends holds only whitespace


#: Characters :meth:`Lexer._plain` only appends as text, and that leave the link tracking of
#: :meth:`Lexer._word` in a state computable at once while no link is open: no bracket,
#: whitespace, backtick or tilde run, backslash or ``<``.
_INERT = r"[^\s\[\]\uff3b\u3010`~\\<]"
#: A stretch :meth:`Lexer.feed` reads at once after its first character: inert words
#: separated by at most :data:`_MAX_SPACE` spaces/tabs (never a newline).
_INERT_RUN = re.compile(rf"{_INERT}+(?:[ \t]{{1,{_MAX_SPACE}}}{_INERT}+)*")


class Lexer:
    """Characters -> tokens, one character at a time, holding back at most a bracket group.

    :meth:`feed` reads a whole text, taking stretches of plain words at once (the
    result is that of :meth:`char` on each character, about ten times faster).
    """

    def __init__(self, n_sources: int | None, emit: Callable[[Token], None]) -> None:
        self.n, self.emit = n_sources, emit
        self.pos = self.steps = 0
        self.space, self.space_at = "", 0
        self.text: list[str] = []
        self.text_raw: list[str] = []
        self.text_invalid: list[int] = []
        self.tick: list | None = None  # a backtick/tilde run: [char, length, start, line_start]
        self.gap: tuple[str, list[Token]] | None = None  # removals right after a run: _removed
        self.stack: list[list] = []  # open groups: [close, raw, clean, start, space before]
        self.stack_invalid: list[int] = []
        self.held_raw = self.held_clean = 0
        self.closed = False  # the top group closed; one more character says if it is a link
        self.slashes = self.indent = 0  # trailing backslashes; spaces opening the line (-1: text)
        self.blank = True
        self.word = ""  # the current word's first characters and last two (link detection)
        self.link = False  # the current word opened a link: "<" or "]("
        self.url = False  # inside a link's address: a bracket there is part of it

    # ------------------------------------------------------------ committing
    def _add(self, raw: str, clean: str, invalid: Sequence[int] = ()) -> None:
        """Commit text (no backtick run, no newline) after the held whitespace."""
        if self.gap is not None and (self.space or clean):
            self._close_gap((self.space or clean)[0])
        self._flush_tick()
        if self.space:
            space, self.space = self.space, ""
            self._add(space, space)
        if not (raw or clean or invalid):
            return
        self.text_raw.append(raw)
        self.text.append(clean)
        self.text_invalid.extend(invalid)
        for ch in clean:
            if not ch.isspace():
                self.indent, self.blank = -1, False
                self._word(ch)
            else:
                self.word, self.link, self.url = "", False, False
                if self.indent >= 0:
                    self.indent += 1 if ch == " " else 4
        stripped = clean.rstrip("\\")
        tail = len(clean) - len(stripped)
        self.slashes = self.slashes + tail if not stripped else tail

    def _word(self, ch: str) -> None:
        """Track whether the text being written is the address of an autolink
        (``<https://...>``) or of a Markdown link (``[text](https://...)``): a bracket
        there is part of the address. A bare URL cannot hold a bracket (RFC 3986), so
        ``https://example.com[1]`` stays a citation."""
        if self.url:
            self.url = ch not in ">)"
            return
        word = self.word + ch
        if word[-2:] == "](" or word == "<":
            self.link = True
        self.url = self.link and word[-3:] == "://"
        self.word = word if len(word) <= 4 else word[:4] + word[-2:]

    def _emit_text(self) -> None:
        if self.text_raw:
            raw, clean = "".join(self.text_raw), "".join(self.text)
            self.emit(Token("text", raw, clean, -1, invalid=tuple(self.text_invalid)))
            self.text, self.text_raw, self.text_invalid = [], [], []

    def _flush_tick(self) -> None:
        if self.tick is not None:
            char, run, start, line_start = self.tick
            self.tick = None
            self._emit_text()
            self.emit(Token("tick", char * run, char * run, start, (), (), run, char, line_start))

    # ---------------------------------------------------------------- groups
    def _release(self) -> None:
        """The open groups are text after all."""
        raw = "".join(level[4] + level[1] for level in self.stack)
        clean = "".join(level[4] + level[2] for level in self.stack)
        invalid, self.stack, self.stack_invalid = self.stack_invalid, [], []
        self.held_raw = self.held_clean = 0
        self._add(raw, clean, invalid)

    def _debris(self) -> None:
        """Too much removed inside open groups: drop them all (their numbers are reported)."""
        raw = "".join(level[4] + level[1] for level in self.stack)
        clean = "".join(level[2] for level in self.stack)
        digits = re.findall(r"\d+", _visible_content(clean))
        invalid = [*self.stack_invalid, *(int(d) for d in digits)]
        self._removed(raw, self.stack[0][3], invalid)
        self.stack, self.stack_invalid = [], []
        self.held_raw = self.held_clean = 0

    def _removed(self, raw: str, start: int, invalid: Sequence[int]) -> None:
        tok = Token("mark", raw, "", start, (), tuple(invalid))
        if self.gap is not None:
            self.gap[1].append(tok)
        elif self.tick is not None:
            # "`x`[9]`": removing [9] must not join two backtick runs into one; the next
            # character kept decides whether a space stands in for the removed text.
            self.gap = (self.tick[0], [tok])
            self._flush_tick()
        else:
            self._emit_text()
            self.emit(tok)

    def _close_gap(self, following: str) -> None:
        char, toks = self.gap  # type: ignore[misc]
        self.gap = None
        if following == char:
            toks[0] = toks[0]._replace(clean=" ")
        for tok in toks:
            self.emit(tok)

    def _resolve(self) -> None:
        """The top group closed with citation content and is not a link: keep, trim or remove it."""
        _close, raw, clean, start, space = self.stack.pop()
        self.held_clean -= len(clean)
        valid: list[int] = []
        invalid: list[int] = []
        for number in _group_numbers(clean[1:-1]) or ():
            good = number >= 1 and (self.n is None or number <= self.n)
            bucket = valid if good else invalid
            if number not in bucket:
                bucket.append(number)
        if valid:
            kept = clean if not invalid else f"[{', '.join(map(str, valid))}]"
            if self.stack:
                self._release()
            if self.gap is not None:
                self._close_gap(kept[0])
            self._add("", "")  # ends a backtick run before the citation
            self._emit_text()
            inner = self.stack_invalid
            mark = Token("mark", space + raw, space + kept, start, tuple(valid), (*inner, *invalid))
            self.emit(mark)
            self.stack_invalid = []
            self.held_raw = self.held_clean = 0
            self.indent, self.blank, self.slashes = -1, False, 0
        elif self.stack:  # read on as if the removed group had never been written
            self.stack[-1][1] += raw
            self.stack_invalid.extend(invalid)
        else:
            inner, self.stack_invalid = self.stack_invalid, []
            self.held_raw = self.held_clean = 0
            self._removed(space + raw, start, [*inner, *invalid])

    def _in_group(self, ch: str) -> None:
        top = self.stack[-1]
        if ch == top[0]:
            top[1] += ch
            top[2] += ch
            self.held_raw += 1
            self.held_clean += 1
            if _group_numbers(top[2][1:-1]) is not None:
                self.closed = True
            else:
                self._release()
            return
        if ch in _CLOSE and len(self.stack) < _MAX_NESTING:
            self.stack.append([_CLOSE[ch], ch, ch, self.pos, ""])
        elif (
            ch in _IN_GROUP
            or ch.isdecimal()
            or (ch.isspace() and ch != "\n")
            or _read_as(ch) != ch  # invisible, or a digit form: "[1\u200b]", "[¹]"
        ):
            top[1] += ch
            top[2] += ch
        else:
            self._release()
            self._plain(ch)
            return
        self.held_raw += 1
        self.held_clean += 1
        if self.held_clean > MAX_MARKER_CHARS:
            self._release()  # the same in the cleaned text: cleaning twice changes nothing
        elif self.held_raw > _MAX_DEBRIS:
            self._debris()  # only reachable when removed groups fill the held text

    # ------------------------------------------------------------ characters
    def _plain(self, ch: str) -> None:
        if ch in _CLOSE and (self.space or (self.slashes % 2 == 0 and not self.url)):
            start = self.space_at if self.space else self.pos
            self.stack.append([_CLOSE[ch], ch, ch, start, self.space])
            self.space, self.held_raw, self.held_clean = "", 1, 1
        elif ch == "\n":
            if self.gap is not None:
                self._close_gap(self.space[:1] or ch)
            self._add("", "")
            self._flush_tick()
            self._emit_text()
            self.emit(Token("nl", ch, ch, self.pos, blank=self.blank))
            self.indent, self.blank, self.slashes = 0, True, 0
            self.word, self.link, self.url = "", False, False
        elif ch.isspace():
            if not self.space:
                self.space_at = self.pos
            self.space += ch
            if len(self.space) > _MAX_SPACE:
                head, self.space = self.space[0], self.space[1:]
                self._add(head, head)
                self.space_at += 1
        elif ch in "`~":
            if self.gap is not None:
                self._close_gap(self.space[:1] or ch)
            tick = self.tick
            if tick is not None and tick[0] == ch and not self.space and tick[1] < MAX_MARKER_CHARS:
                tick[1] += 1
            else:
                self._add("", "")
                self._flush_tick()
                self._emit_text()
                self.tick = [ch, 1, self.pos, 0 <= self.indent <= 3]
                self.indent, self.blank, self.slashes = -1, False, 0
        else:
            self._add(ch, ch)

    def char(self, ch: str) -> None:
        self.steps += 1
        if self.closed:
            self.closed = False
            if ch == "(":
                self._release()  # "[1](url)": a Markdown link
            else:
                self._resolve()
        if self.stack:
            self._in_group(ch)
        else:
            self._plain(ch)
        self.pos += 1

    def feed(self, text: str) -> None:
        """:meth:`char` on each character of ``text``, stretches of plain words at once."""
        text = str(text)  # plain characters: a str subclass may override indexing
        char, run_at = self.char, _INERT_RUN.match
        i, n = 0, len(text)
        while i < n:
            if self.stack or self.closed or self.link:
                char(text[i])
                i += 1
                continue
            match = run_at(text, i)
            char(text[i])  # the first character the full way: held space, gaps, ticks, "]("
            i += 1
            if match is not None and match.end() > i and not self.link:
                self._plain_run(text[i : match.end()])
                i = match.end()

    def _plain_run(self, rest: str) -> None:
        """``_add(ch, ch)`` for each character of ``rest`` (inert words and short space runs),
        right after an inert character, outside any link: no space, tick or gap is held."""
        self.text_raw.append(rest)
        self.text.append(rest)
        self.indent, self.blank, self.slashes = -1, False, 0
        word = rest[max(rest.rfind(" "), rest.rfind("\t")) + 1 :]
        if len(word) == len(rest):  # one word: it goes on
            word = self.word + rest
        self.word = word if len(word) <= 4 else word[:4] + word[-2:]
        self.steps += len(rest)
        self.pos += len(rest)

    def drain(self) -> None:
        self._emit_text()

    def finish(self) -> None:
        if self.closed:
            self.closed = False
            self._resolve()
        if self.gap is not None:
            self._close_gap("")
        if self.stack:
            self._release()
        self._add("", "")
        self._flush_tick()
        self._emit_text()

    @property
    def held(self) -> int:
        """Visible characters held back (removed citations held along do not count)."""
        group = sum(len(level[2]) + len(level[4]) for level in self.stack)
        return group + len(self.space) + (self.tick[1] if self.tick else 0)


class CodeReader:
    """Tokens -> output, deciding what is code; holds back at most one inline span's reach."""

    def __init__(self, out: Callable[[Token, bool], None]) -> None:
        self.out = out  # out(token, is_code)
        self.fence: tuple[str, int] | None = None
        self.closing = False
        self.pending: str | None = None  # "fence" (an opening fence line) or "span"
        self.held: deque[tuple[Token, int]] = deque()  # (token, clean offset of its start)
        self.base = 0  # absolute index of held[0]
        self.offset = 0  # clean characters seen
        self.ticks: deque[int] = deque()  # absolute indices of held backtick runs
        self.runs: dict[int, deque[int]] = {}
        self.blanks: deque[int] = deque()
        self.steps = 0

    def _hold(self, tok: Token) -> None:
        index = self.base + len(self.held)
        self.held.append((tok, self.offset))
        self.offset += len(tok.clean)
        if tok.kind == "tick" and tok.char == "`":
            self.ticks.append(index)
            self.runs.setdefault(tok.run, deque()).append(index)
        elif tok.kind == "nl" and tok.blank:
            self.blanks.append(index)

    def _pop(self, code: bool) -> None:
        tok, _ = self.held.popleft()
        self.base += 1
        self.steps += 1
        self.out(tok, code)

    def _open_fence(self) -> None:
        opener = self.held[0][0]
        while self.held:
            self._pop(True)
        self._reset()
        self.fence = (opener.char, opener.run)

    def _span_from(self, j: int) -> int | None:
        """Absolute index of the run closing the held run ``j``, if it can close."""
        opener, at = self.held[j - self.base]
        queue = self.runs[opener.run]
        while queue and queue[0] <= j:
            queue.popleft()
        while self.blanks and self.blanks[0] < j:
            self.blanks.popleft()
        if not queue or (self.blanks and self.blanks[0] < queue[0]):
            return None
        closer, closer_at = self.held[queue[0] - self.base]
        return queue[0] if closer_at - (at + opener.run) <= MAX_CODE_SPAN_CHARS else None

    def _settle(self, final: bool) -> None:
        """The held opener cannot close: it is text; pair the backtick runs held after it."""
        self._pop(False)
        while self.held:
            while self.ticks and self.ticks[0] < self.base:
                self.ticks.popleft()
            if not self.ticks:
                while self.held:
                    self._pop(False)
                break
            j = self.ticks.popleft()
            while self.base < j:
                self._pop(False)
            closer = self._span_from(j)
            if closer is not None:
                while self.base <= closer:
                    self._pop(True)
                continue
            tok, at = self.held[0]
            expired = self.offset - (at + tok.run) > MAX_CODE_SPAN_CHARS
            if final or expired or (self.blanks and self.blanks[-1] > j):
                self._pop(False)
                continue
            self.pending = "span"  # j may still close
            return
        self._reset()

    def _reset(self) -> None:
        self.pending = None
        self.ticks.clear()
        self.runs.clear()
        self.blanks.clear()

    def push(self, tok: Token) -> None:
        self.steps += 1
        if self.fence is not None:
            if tok.kind == "nl":
                self.fence, self.closing = (None if self.closing else self.fence), False
            elif (
                tok.kind == "tick"
                and tok.line_start
                and tok.char == self.fence[0]
                and tok.run >= self.fence[1]
            ):
                self.closing = True
            elif tok.clean.strip():
                self.closing = False
            self.out(tok, True)
            return
        fence_line = tok.kind == "tick" and tok.line_start and tok.run >= 3
        if self.pending == "fence":
            self._hold(tok)
            opener, at = self.held[0]
            if tok.kind == "tick" and tok.char == "`":  # "```x```": inline code, not a fence
                self.pending = "span"
                self._after_hold(tok)
            elif tok.kind == "nl" or self.offset - (at + opener.run) > MAX_CODE_SPAN_CHARS:
                self._open_fence()
            return
        if fence_line and self.pending == "span":
            self._settle(final=True)  # a fence line ends the paragraph
        if fence_line:
            self._hold(tok)
            if tok.char == "~":
                self._open_fence()
            else:
                self.pending = "fence"
        elif self.pending == "span":
            self._hold(tok)
            self._after_hold(tok)
        elif tok.kind == "tick" and tok.char == "`":
            self._hold(tok)
            self.pending = "span"
        else:
            self.out(tok, False)

    def _after_hold(self, tok: Token) -> None:
        opener, at = self.held[0]
        closes = tok.kind == "tick" and tok.char == "`" and tok.run == opener.run
        if closes and self.held[-1][1] - (at + opener.run) <= MAX_CODE_SPAN_CHARS:
            while self.held:
                self._pop(True)
            self._reset()
            return
        if (tok.kind == "nl" and tok.blank) or self.offset - (
            at + opener.run
        ) > MAX_CODE_SPAN_CHARS:
            self._settle(final=False)

    def finish(self) -> None:
        if self.pending == "fence":
            self._open_fence()
        elif self.pending == "span":
            self._settle(final=True)

    @property
    def held_chars(self) -> int:
        """Visible characters held back."""
        return sum(len(tok.clean) for tok, _ in self.held)
