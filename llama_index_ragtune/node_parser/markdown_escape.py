"""Keeping text from HTML as text once it is written as Markdown.

The HTML parser writes a page as Markdown (:mod:`.html_writer`). A paragraph whose words
happen to begin like Markdown block syntax (``<p># 1 seller</p>``, ``<p>- item</p>``,
``<p>1. Introduction</p>``, ``<p>&gt; quote</p>``, ``<p>---</p>``, a line of backticks or
pipes) would otherwise read as a heading, list, quote, rule, fence or table in the node
text, in a Markdown renderer and in the splitter's own reading of lists and quotes.
:func:`escape_block_syntax` puts a backslash (CommonMark's escape, which renders as
nothing) before the one character that would start such a construct at a line start;
text that starts no construct is returned unchanged, so ordinary pages read as before.
:func:`escape_closing_hashes` does the same for a heading title ending in ``#``
(``## Price #`` would lose its ``#``). :func:`escape_inline_syntax` keeps the page's own
backslashes literal (``\\*`` would render ``*``, ``\\&amp;`` ``&``, a backslash ending a
line a line break), outside code spans, where Markdown reads them literally anyway;
:func:`escape_markdown_text` does both for a paragraph.

Example::

    from llama_index_ragtune.node_parser.markdown_escape import escape_block_syntax

    escape_block_syntax("# 1 seller\\n1. Intro\\nplain")     # '\\\\# 1 seller\\n1\\\\. Intro\\nplain'
"""

from __future__ import annotations

import re
from bisect import bisect_right

_END = r"(?=[ \t]|$)"
#: A line start that Markdown (CommonMark, GFM, the parser's ``$$`` math, front matter,
#: definition lists) would read as block syntax; group ``mark`` is the character to escape.
_BLOCK_START = re.compile(
    r"^(?:"
    rf"(?P<mark>#)#{{0,5}}{_END}"  # ATX heading
    r"|(?P<mark2>[>|]|<(?=[A-Za-z/!?]))"  # quote, table row, HTML block
    rf"|(?P<mark3>[-+*:]){_END}"  # bullet list item, definition
    rf"|\d{{1,9}}(?P<mark4>[.)]){_END}"  # ordered list item
    r"|(?P<mark5>[-*_=+])(?:[ \t]*(?P=mark5))*[ \t]*$"  # rule, setext underline, +++
    r"|(?P<mark6>[`~])(?P=mark6){2}"  # code fence
    r"|(?P<mark7>\$)\$"  # display math
    r"|(?P<mark8>\[)[^\]\n]*\]:"  # link reference / footnote definition
    r"|(?P<mark9>[-:])(?=[-:| \t]*\|)[-:| \t]*$"  # a table's delimiter row (linear)
    r")",
    re.MULTILINE,
)
_GROUPS = tuple(f"mark{n}" if n > 1 else "mark" for n in range(1, 10))
#: A backslash CommonMark reads as syntax: before ASCII punctuation (an escape) or at a line
#: end (a hard break).
_INLINE_SYNTAX = re.compile(r"\\(?=[!-/:-@\[-`{-~]|\r|\n|\Z)")
_BACKTICKS = re.compile("`+")
_ESCAPED_BACKTICK = re.compile(r"\\`")
#: Inline delimiters: after a backslash made literal, escaped too (they were escaped before).
_DELIMITERS = frozenset("*_`[]!<~&")
_CLOSING_HASHES = re.compile(r"(?:^|(?<=[ \t]))#+[ \t]*$")


def _escaped(match: re.Match) -> str:
    for name in _GROUPS:
        at = match.start(name)
        if at >= 0:
            text = match.group(0)
            at -= match.start()
            return f"{text[:at]}\\{text[at:]}"
    return match.group(0)  # pragma: no cover - every alternative names its mark


def escape_block_syntax(text: str) -> str:
    """``text`` with a backslash before each line start Markdown would read as block syntax
    (heading, list item, quote, rule, setext underline, fence, table row, HTML block, ``$$``,
    link definition); linear time, other text unchanged.

    Example::

        escape_block_syntax("- item\\n---\\nsafe - text")     # '\\\\- item\\n\\\\---\\nsafe - text'
    """
    return _BLOCK_START.sub(_escaped, text)


def _block_marks(text: str) -> list[int]:
    """Where :func:`escape_block_syntax` puts its backslashes (before the mark)."""
    marks = []
    for match in _BLOCK_START.finditer(text):
        marks.extend(at for name in _GROUPS if (at := match.start(name)) >= 0)
    return marks


def _code_spans(text: str, escaped: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
    """The code spans of ``text`` as CommonMark reads it once its backslashes are literal: a
    run of backticks up to the next run of the same length (none: the run is text). A run
    starting at an ``escaped`` offset opens with its first backtick less but closes whole
    (backslashes do not work inside a code span). Linear but for a binary search a run."""
    runs = [match.span() for match in _BACKTICKS.finditer(text)]
    by_length: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(runs):
        by_length.setdefault(end - start, []).append(index)
    spans, index = [], 0
    while index < len(runs):
        start, end = runs[index]
        start += start in escaped
        same = by_length.get(end - start, [])
        at = bisect_right(same, index)
        if end == start or at == len(same):
            index += 1
            continue
        closer = same[at]
        spans.append((start, runs[closer][1]))
        index = closer + 1
    return spans


def _inline_marks(text: str, code: list[tuple[int, int]]) -> list[int]:
    """Offsets of the backslashes that Markdown would read as syntax, outside ``code``, and of
    the inline delimiters such a backslash escaped (once the backslash is literal, a ``*``,
    ``_``, backtick, bracket, ``!``, ``<``, ``~`` or ``&`` after it would act)."""
    marks, spans = [], iter(code)
    span = next(spans, None)
    for match in _INLINE_SYNTAX.finditer(text):
        at = match.start()
        while span is not None and span[1] <= at:
            span = next(spans, None)
        if span is not None and span[0] <= at:
            continue  # inside a code span: read literally
        marks.append(at)
        if text[at + 1 : at + 2] in _DELIMITERS:
            marks.append(at + 1)
    return marks


def _escaped_backticks(text: str) -> frozenset[int]:
    """Backticks right after a backslash: escaped in the output, so they open no code span."""
    return frozenset(m.start() + 1 for m in _ESCAPED_BACKTICK.finditer(text))


def _with_backslashes(text: str, marks: list[int]) -> str:
    parts, position = [], 0
    for at in sorted(set(marks)):
        parts.append(text[position:at])
        parts.append("\\")
        position = at
    parts.append(text[position:])
    return "".join(parts)


def escape_inline_syntax(text: str) -> str:
    r"""``text`` with a backslash before each backslash that Markdown would read as an escape
    (before ASCII punctuation; an inline delimiter after it, ``*`` or ``&`` say, is escaped
    too) or as a line break (at a line end), so that it renders as written; text inside code
    spans (read literally) and other backslashes (``C:\Users``) are left alone. Linear.

    Example::

        escape_inline_syntax(r"a \* b, C:\Users, \#1")     # 'a \\\\\\* b, C:\\Users, \\\\#1'
    """
    code = _code_spans(text, _escaped_backticks(text))
    return _with_backslashes(text, _inline_marks(text, code))


def escape_markdown_text(text: str) -> str:
    r"""``text`` (a paragraph from a page) that Markdown reads back as written: block syntax at
    line starts escaped (:func:`escape_block_syntax`) and the inline syntax of
    :func:`escape_inline_syntax`, in one linear pass.

    Example::

        escape_markdown_text("\\# not a heading")     # '\\\\# not a heading'
    """
    block = _block_marks(text)
    code = _code_spans(text, _escaped_backticks(text) | frozenset(block))
    if _any_inside(block, code):  # a span over lines, one escaped at its start: no span then
        backticks = [at for at, char in enumerate(text) if char == "`"]
        return _with_backslashes(text, block + _inline_marks(text, []) + backticks)
    return _with_backslashes(text, block + _inline_marks(text, code))


def _any_inside(marks: list[int], spans: list[tuple[int, int]]) -> bool:
    """True when one of the (sorted) ``marks`` lies inside one of the (sorted) ``spans``."""
    index = 0
    for start, end in spans:
        while index < len(marks) and marks[index] < start:
            index += 1
        if index < len(marks) and marks[index] < end:
            return True
    return False


def escape_closing_hashes(title: str) -> str:
    """``title`` with a backslash before a trailing run of ``#`` that an ATX heading line
    would drop as its closing sequence (``Price #``, ``#``); other titles unchanged.

    Example::

        escape_closing_hashes("Price #"), escape_closing_hashes("C#")     # ('Price \\\\#', 'C#')
    """
    return _CLOSING_HASHES.sub(lambda m: "\\" + m.group(0), title)
