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
(``## Price #`` would lose its ``#``).

Example::

    from llama_index_ragtune.node_parser.markdown_escape import escape_block_syntax

    escape_block_syntax("# 1 seller\\n1. Intro\\nplain")     # '\\\\# 1 seller\\n1\\\\. Intro\\nplain'
"""

from __future__ import annotations

import re

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
    r"|(?P<mark9>[-:])[-:| \t]*\|[-:| \t]*$"  # a table's delimiter row
    r")",
    re.MULTILINE,
)
_GROUPS = tuple(f"mark{n}" if n > 1 else "mark" for n in range(1, 10))
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


def escape_closing_hashes(title: str) -> str:
    """``title`` with a backslash before a trailing run of ``#`` that an ATX heading line
    would drop as its closing sequence (``Price #``, ``#``); other titles unchanged.

    Example::

        escape_closing_hashes("Price #"), escape_closing_hashes("C#")     # ('Price \\\\#', 'C#')
    """
    return _CLOSING_HASHES.sub(lambda m: "\\" + m.group(0), title)
