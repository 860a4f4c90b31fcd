"""The rules the Markdown parser adds to markdown-it (CommonMark + GFM tables).

- :func:`math_block`: ``$$`` display math as one ``math_block`` token, linear time;
- :func:`numeric_reference`: numeric character references read as HTML5 (and the HTML
  parser) read them: ``&#x93;`` is a quotation mark, ``&#0;`` U+FFFD.

Moved from :mod:`.markdown`, whose ``_markdown_it`` installs them.

Example::

    from markdown_it import MarkdownIt
    from llama_index_ragtune.node_parser.markdown_rules import math_block

    md = MarkdownIt("commonmark")
    md.block.ruler.before("fence", "math_block", math_block)
    [t.type for t in md.parse("$$\nx^2\n$$")]     # ['math_block']
"""

from __future__ import annotations

import re

from llama_index_ragtune.node_parser.documents import without_control_characters

#: CommonMark's numeric character reference (up to 7 decimal or 6 hexadecimal digits).
_NUMERIC_REFERENCE = re.compile(r"&#([0-9]{1,7}|[xX][0-9a-fA-F]{1,6});")


def math_block(state, start_line: int, end_line: int, silent: bool) -> bool:
    """markdown-it block rule: ``$$`` display math, from a line starting with ``$$`` to the
    first line ending with ``$$`` (the same line for ``$$x$$``). A ``$$`` line that no such
    line closes before a blank line, a less indented line or another ``$$`` line is text
    (so each line is read by at most one failed search: linear time). Like a code fence, it
    does not interrupt a paragraph."""
    if state.is_code_block(start_line):
        return False
    first = state.src[
        state.bMarks[start_line] + state.tShift[start_line] : state.eMarks[start_line]
    ]
    first = first.rstrip()
    if not first.startswith("$$") or first.startswith("$$$"):
        return False
    close = start_line if len(first) >= 4 and first.endswith("$$") else None
    line = start_line
    while close is None:
        line += 1
        if line >= end_line:
            return False
        begin, end = state.bMarks[line] + state.tShift[line], state.eMarks[line]
        text = state.src[begin:end].rstrip()
        if not text or state.sCount[line] < state.blkIndent:
            return False
        if text.endswith("$$"):
            close = line
        elif text.startswith("$$"):
            return False
    if silent:
        return True
    token = state.push("math_block", "math", 0)
    token.block, token.markup, token.map = True, "$$", [start_line, close + 1]
    state.line = close + 1
    return True


def numeric_reference(state, silent: bool) -> bool:
    """markdown-it inline rule: a numeric character reference (``&#x93;``, ``&#147;``) read
    as HTML5 reads it, like the HTML parser: a C1 control's number is its Windows-1252
    character (a quotation mark, not U+FFFD), NUL, a surrogate or a number past U+10FFFF
    is U+FFFD, and other control characters read as :func:`~.documents.without_control_characters`
    writes them (a space)."""
    match = _NUMERIC_REFERENCE.match(state.src, state.pos)
    if match is None:
        return False
    if not silent:
        digits = match.group(1)
        code = int(digits[1:], 16) if digits[0] in "xX" else int(digits)
        invalid = code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF
        token = state.push("text_special", "", 0)
        token.content = "\ufffd" if invalid else without_control_characters(chr(code))
        token.markup, token.info = match.group(0), "entity"
    state.pos = match.end()
    return True
