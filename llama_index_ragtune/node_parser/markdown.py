"""Structure-aware Markdown node parser.

Headings (ATX and setext) define sections; paragraphs, nested lists, GFM
tables, fenced and indented code, ``$$`` display math, blockquotes, raw HTML blocks
and YAML/TOML front matter become blocks that are kept whole when they fit the cap
and otherwise split between items, rows and lines (see :mod:`.split`; every part of
a split code or math block is fenced by its delimiters on its own). Tokenising
uses markdown-it-py (CommonMark + GFM tables), so a ``#`` inside a code fence
is code, not a heading.

Nesting depth is unlimited (the source is kept verbatim; markdown-it's own
nesting limit only decides which lines belong to which top-level block). An
unclosed code fence runs to the end of the document, as in CommonMark, and is
kept as code. A ``---`` at the top opens YAML front matter only when the lines up to the
next ``---`` read as YAML (a column-0 line of prose makes both thematic breaks).
Link reference definitions (``[1]: https://...``, which markdown-it consumes
without a token) are kept as paragraph text; a heading with no visible title
(only an HTML tag) is kept as a paragraph. A raw HTML block that is one ``<h1>``..``<h6>``
element opens a section like ``#``, and a heading's trailing attribute list (``{#id}``) is
left out of its title (:mod:`.markdown_headings`). A table in a list or blockquote repeats
its header rows in every part, like a top-level one. ``\r\n``, ``\r`` and ``\n`` all end a line.

A node's text is the Markdown source itself, and ``start_char_idx`` /
``end_char_idx`` point into the document: ``text[start:end]`` is the node's
source span (for the second and later parts of a split table or code block,
the repeated header row / fences are not part of the span, nor are the fences
re-added around a part of a code block inside a list or blockquote, or the ``>``
markers a part of a quote that starts inside a line repeats; a control character
other than tab, LF and CR reads as the character that replaced it, see
:func:`~.documents.without_control_characters`).

Example::

    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser

    doc = Document(text="# Returns\\n\\n## Perishables\\n\\nFresh produce: 48 hours.",
                   metadata={"store": "FreshMart"})
    nodes = IngestionPipeline(transformations=[StructuredMarkdownNodeParser()]).run(documents=[doc])
    nodes[0].metadata["section_path"]   # 'Returns > Perishables'
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from llama_index_ragtune.node_parser.base import StructuredNodeParser
from llama_index_ragtune.node_parser.block import InnerFence, visible_title
from llama_index_ragtune.node_parser.containers import CONTAINER_PREFIX
from llama_index_ragtune.node_parser.markdown_headings import html_heading, without_attributes
from llama_index_ragtune.node_parser.markdown_rules import math_block, numeric_reference
from llama_index_ragtune.node_parser.structure import Block

_BOM = "\ufeff"
#: Byte-order marks at the start of a line (files concatenated after reading as ``utf-8``):
#: invisible, but they hide a heading, list or fence marker from the Markdown parser.
_LINE_START_BOMS = re.compile("(?<![^\r\n])\ufeff+")
_FRONT_MATTER_FENCES = {"---": ("---", "..."), "+++": ("+++",)}
_LINE = re.compile(r"[^\r\n]+")
#: The first line of front matter that is not blank or a ``#`` comment: a YAML "key:" / TOML
#: "key =", or for TOML (``+++``) a line that is only a "[table]" header (otherwise the
#: ``---`` was a thematic break).
_COMMENT_LINES = r"(?:[ \t]*(?:#[^\r\n]*)?(?:\r\n|\r|\n))*"
_KEY = r"[\w\"'.-]+\s*[:=]"
_FRONT_MATTER_START = {
    "---": re.compile(_COMMENT_LINES + _KEY),
    "+++": re.compile(_COMMENT_LINES + rf"(?:{_KEY}|\[[^\]\r\n]+\][ \t]*(?:\r\n|\r|\n|$))"),
}
#: A line of YAML front matter that starts at column 0: blank, a ``#`` comment, a "key:",
#: a "- item", a closing bracket or a "..." document end. A column-0 line of anything else
#: ("Welcome to the shop.") is Markdown, not YAML: the opening ``---`` was a thematic break
#: left before a later one, not front matter (which would swallow the headings between).
_YAML_TOP_LINE = re.compile(r"(?:[ \t]|#|-(?:[ \t]|$)|[\]}]|\.\.\.|[^\s#][^\r\n]*?:(?:[ \t]|$)|$)")
_COMMENTS_ONLY = re.compile(r"\s*(?:<!--.*?-->\s*)+", re.S)
_LINE_END = re.compile(r"\r\n|\r|\n")
#: A list marker in the prefix of a line inside a container (written as spaces when repeated).
_LIST_MARKER = re.compile(r"[-+*]|\d{1,9}[.)]")
#: Only this many characters of a heading are parsed for its title (``section_path``), which
#: ends with "…" then: markdown-it's inline parser, run only for this metadata, slows down
#: more than linearly on long runs of emphasis marks or brackets (400 KB took seconds). The
#: node text keeps the whole heading; metadata is clipped far shorter anyway.
MAX_TITLE_SOURCE = 8192


_CELL_TOKENS = frozenset({"th_open", "th_close", "td_open", "td_close", "inline"})


def _table_rows_only(state, start: int, end: int, silent: bool) -> bool:
    """markdown-it's GFM table rule, giving the table, row-group and row tokens but no token
    per cell (the parser reads rows only): a 50,000-column table made 300,000 tokens a row."""
    from markdown_it.rules_block import table
    from markdown_it.token import Token

    if silent:
        return table(state, start, end, silent)
    push, scratch = state.push, Token("inline", "", 0)

    def rows_only(kind: str, tag: str, nesting):
        return scratch if kind in _CELL_TOKENS else push(kind, tag, nesting)

    state.push = rows_only  # cells open and close in pairs: the nesting level is unchanged
    try:
        return table(state, start, end, silent)
    finally:
        vars(state).pop("push", None)


@lru_cache(maxsize=2)
def _markdown_it(block_only: bool = True):
    """CommonMark + GFM tables + ``$$`` display math; block-only skips inline parsing (only
    headings need it) and makes no token per table cell."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    md.block.ruler.before("fence", "math_block", math_block)
    md.inline.ruler.before("entity", "numeric_reference", numeric_reference)
    if not block_only:
        return md
    md.block.ruler.at("table", _table_rows_only, {"alt": ["paragraph", "reference"]})
    return md.disable("inline")


def _plain_inline(source: str, env: dict | None = None) -> str:
    """The visible text of inline Markdown (emphasis, links and code spans unwrapped, image alt
    text); ``env`` holds the document's link reference definitions, so ``[text][ref]`` reads "text"."""
    parts = []
    for child in _markdown_it(block_only=False).parseInline(source, env)[0].children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "image":
            parts.extend(
                c.content for c in child.children or () if c.type in ("text", "code_inline")
            )
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return visible_title("".join(parts))


def heading_title(source: str, env: dict | None = None) -> str:
    """The title of a heading whose inline Markdown is ``source``: its visible text without a
    trailing attribute list (``{#id}``); of a heading over :data:`MAX_TITLE_SOURCE`
    characters only that much is read (cut at a space near it), with "…" after. Linear.

    Example::

        heading_title("Refunds *for* [opened boxes](/r) {#refunds}")  # 'Refunds for opened boxes'
    """
    source = without_attributes(source)
    if len(source) <= MAX_TITLE_SOURCE:
        return _plain_inline(source, env)
    cut = source.rfind(" ", MAX_TITLE_SOURCE // 2, MAX_TITLE_SOURCE + 1)
    title = _plain_inline(source[: cut if cut > 0 else MAX_TITLE_SOURCE], env)
    return f"{title}\u2026" if title else ""


class _Lines:
    """Character offsets of the lines of a text (``\\r\\n``, ``\\r`` and ``\\n`` all end a line)."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in _LINE_END.finditer(text)]

    def start(self, line: int) -> int:
        """Offset of the first character of line ``line`` (the text's length past the end)."""
        return self.starts[line] if line < len(self.starts) else len(self.text)

    def end(self, line_stop: int) -> int:
        """End of the last non-blank character before line ``line_stop``."""
        end = self.start(line_stop)
        while end > 0 and self.text[end - 1].isspace():
            end -= 1
        return end


def _front_matter_end(lines: _Lines) -> int:
    """Number of lines of front matter at the top of the document (0 when there is none)."""
    text = lines.text
    first = text[: lines.start(1)].strip()
    closers = _FRONT_MATTER_FENCES.get(first)
    if closers is None:
        return 0
    for line in range(1, len(lines.starts)):
        # the closer starts its line: an indented "---" is inside a value (a YAML block scalar)
        if text[lines.start(line) : lines.start(line + 1)].rstrip() in closers:
            body = text[lines.start(1) : lines.start(line)]
            if first == "---" and not _reads_as_yaml(body):
                return 0
            return line + 1 if _FRONT_MATTER_START[first].match(body) else 0
    return 0


def _reads_as_yaml(body: str) -> bool:
    """Whether every line of ``body`` that starts at column 0 is YAML (:data:`_YAML_TOP_LINE`),
    or continues a double-quoted or ``[`` / ``{`` value left open above (YAML lets those wrap
    at column 0). Linear: one pass over the characters."""
    quoted, depth = False, 0
    for line in _LINE_END.split(body):
        if not quoted and depth <= 0 and not _YAML_TOP_LINE.match(line):
            return False
        quoted ^= line.count('"') % 2 == 1
        depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
    return True


def _line_units(text: str, a: int, b: int) -> list[tuple[int, int]]:
    units = []
    for match in _LINE.finditer(text, a, b):
        start, end = match.span()
        while end > start and text[end - 1].isspace():
            end -= 1
        if text[start:end].strip():
            units.append((start, end))
    return units


def markdown_blocks(text: str) -> list[Block]:
    """Parse Markdown into blocks whose ``start`` offsets point into ``text``.

    Leading byte-order marks (a file read as ``utf-8`` rather than ``utf-8-sig``, any
    number of them) are skipped, so a first-line heading or front matter is still recognised;
    so are those at the start of a later line (files concatenated), for a heading, list or
    fence there.

    Example::

        [(b.kind, b.start) for b in markdown_blocks("# Returns\\n\\n- Apples\\n- Pears")]
        # [('heading', 0), ('list', 11)]
    """
    bom = len(text) - len(text.lstrip(_BOM))  # any number of them, skipped at once
    if bom:
        return [replace(block, start=block.start + bom) for block in markdown_blocks(text[bom:])]
    lines = _Lines(text)
    blocks: list[Block] = []
    skip = _front_matter_end(lines)
    if skip:
        start, end = 0, lines.end(skip)
        body = text[start:end]
        head = len(text[: lines.start(1)].rstrip("\r\n")) + 1
        tail = lines.start(skip - 1)
        blocks.append(
            Block("front_matter", body, start, _line_units(body, head, tail), head=head, tail=tail)
        )
    # markdown-it numbers lines like _Lines; blank out the front matter, keep line numbers.
    parsed = "\n" * skip + text[lines.start(skip) :] if skip else text
    if _BOM in parsed:  # node text keeps them: blocks are cut from ``text`` by line
        parsed = _LINE_START_BOMS.sub("", parsed)
    env: dict = {}  # the link reference definitions, for headings of reference links
    tokens = _markdown_it().parse(parsed, env)
    covered = skip  # lines before this one belong to a block (or are blank)
    for i, token in enumerate(tokens):
        if token.level != 0 or token.nesting == -1 or token.map is None:
            continue
        first, stop = token.map
        if first > covered:
            blocks.extend(_uncovered(lines, covered, first))
        covered = max(covered, stop)
        start, end = lines.start(first), lines.end(stop)
        if end <= start:
            continue
        body = text[start:end]
        kind = token.type
        if kind == "heading_open":
            title = heading_title(tokens[i + 1].content, env)
            if title:
                blocks.append(Block("heading", body, start, level=int(token.tag[1]), title=title))
            elif visible_title(body.replace("#", "")):  # no title, but text: an image tag, say
                blocks.append(Block("paragraph", body, start))
        elif kind in ("bullet_list_open", "ordered_list_open"):
            units = _child_spans(tokens, i, "list_item_open", lines, start)
            fences = _inner_fences(tokens, i, lines, start)
            blocks.append(Block("list", body, start, units, inner_fences=fences))
        elif kind == "table_open":
            header_stop = lines.start(first + 2) - start  # header row + delimiter row
            units = _child_spans(tokens, i, "tr_open", lines, start)
            units = [u for u in units if u[0] >= header_stop]
            head = min(header_stop, len(body))
            blocks.append(
                Block("table", body, start, units, head=head, head_text=_compact_head(body[:head]))
            )
        elif kind == "fence":
            blocks.append(_fence_block(token, body, start))
        elif kind == "math_block":
            blocks.append(_display_math_block(body, start))
        elif kind == "code_block":
            blocks.append(Block("code", body, start, _line_units(body, 0, len(body))))
        elif kind == "blockquote_open":
            units = _quoted_spans(tokens, i, lines, start)
            fences = _inner_fences(tokens, i, lines, start)
            blocks.append(Block("blockquote", body, start, units, inner_fences=fences))
        elif kind == "html_block":
            if _COMMENTS_ONLY.fullmatch(body):  # comments are not visible text
                continue
            level, title = html_heading(body)
            if title:
                blocks.append(Block("heading", body, start, level=level, title=title))
            else:
                blocks.append(Block("html", body, start))
        elif kind == "hr":
            continue
        else:  # paragraph_open and anything a plugin may add
            blocks.append(Block("paragraph", body, start))
    blocks.extend(_uncovered(lines, covered, len(lines.starts)))
    return blocks


def _uncovered(lines: _Lines, first: int, stop: int) -> list[Block]:
    """Lines that markdown-it gives no block token (link reference definitions): kept as text."""
    text, start, end = lines.text, lines.start(first), lines.end(stop)
    while start < end and text[start].isspace():
        start += 1
    return [Block("paragraph", text[start:end], start)] if start < end else []


def _child_spans(tokens, index: int, child_type: str, lines: _Lines, offset: int):
    """Local spans of the direct children (list items, table rows) of the block opened at ``index``."""
    opener = tokens[index]
    spans = []
    depth = 0
    for k in range(index + 1, len(tokens)):  # not islice: it would step over tokens[:index]
        token = tokens[k]
        if token.level == opener.level and token.nesting == -1 and depth == 0:
            break
        if token.type == child_type and token.map is not None and depth == 0:
            spans.append((lines.start(token.map[0]) - offset, lines.end(token.map[1]) - offset))
        if token.type in ("bullet_list_open", "ordered_list_open", "table_open"):
            depth += 1
        elif token.type in ("bullet_list_close", "ordered_list_close", "table_close"):
            depth -= 1
    return [(a, b) for a, b in spans if b > a]


def _quoted_spans(tokens, index: int, lines: _Lines, offset: int) -> list[tuple[int, int]]:
    """Local spans of the blocks directly inside the blockquote opened at ``index``."""
    opener = tokens[index]
    spans = []
    for k in range(index + 1, len(tokens)):
        token = tokens[k]
        if token.level == opener.level and token.nesting == -1:
            break
        if token.level == opener.level + 1 and token.nesting != -1 and token.map is not None:
            first, stop = token.map
            spans.append((lines.start(first) - offset, lines.end(stop) - offset))
    return [(a, b) for a, b in spans if b > a]


def _inner_fences(tokens, index: int, lines: _Lines, offset: int) -> tuple[InnerFence, ...]:
    """The code fences and ``$$`` blocks (on lines of their own) inside the container opened
    at ``index``, at any depth, with the lines that re-fence a part of them."""
    opener, text = tokens[index], lines.text
    fences = []
    for k in range(index + 1, len(tokens)):
        token = tokens[k]
        if token.level == opener.level and token.nesting == -1:
            break
        if token.type == "table_open" and token.map is not None:
            fences.extend(_inner_table(token, lines, offset))
            continue
        if token.type not in ("fence", "math_block") or token.map is None:
            continue
        first, stop = token.map
        opening = text[lines.start(first) : lines.start(first + 1)].rstrip()
        last = text[lines.start(stop - 1) : lines.start(stop)].rstrip()
        mark = opening.find(token.markup)
        if stop - first < 2 or mark < 0:
            continue
        closer = last.lstrip(" \t>")
        prefix = _LIST_MARKER.sub(lambda m: " " * len(m.group()), opening[:mark])
        if token.type == "math_block":
            if opening[mark:] != "$$" or closer != "$$" or stop - first < 3:
                continue  # "$$" not on a line of its own: nothing to repeat
            closed, info = True, ""
        else:
            closed = stop - first >= 2 and set(closer) == {token.markup[0]}
            closed = closed and len(closer) >= len(token.markup)
            info = "".join(token.info.split()[:1])
        if closed:  # the closing line's prefix is the container's own (tabs and all)
            prefix = last[: len(last) - len(closer)]
        end = lines.start(stop - 1) if closed else lines.end(stop)
        fences.append(
            InnerFence(
                lines.start(first + 1) - offset,
                end - offset,
                prefix + opening[mark:],
                last if closed else "",
                prefix + token.markup + info,
            )
        )
    return tuple(fences)


def _inner_table(token, lines: _Lines, offset: int) -> list[InnerFence]:
    """A table inside a container as an :class:`InnerFence` whose opening is its header and
    (compact) delimiter rows with the container's prefix: a part of the container that
    starts among the table's rows repeats them, as a part of a top-level table does."""
    first, stop = token.map
    if stop - first < 3:  # no body row
        return []
    text = lines.text
    header = text[lines.start(first) : lines.start(first + 1)].rstrip()
    delimiter = text[lines.start(first + 1) : lines.start(first + 2)].rstrip()
    prefix = CONTAINER_PREFIX.match(delimiter).group()  # "> ", "  ": no list marker there
    header_cells = header[len(CONTAINER_PREFIX.match(header).group()) :]
    compact = _compact_head(header_cells + "\n" + delimiter[len(prefix) :])
    opening = "\n".join(prefix + line for line in compact.split("\n"))
    start, end = lines.start(first + 2) - offset, lines.end(stop) - offset
    return [InnerFence(start, end, opening, "", opening)] if end > start else []


def container_fences(text: str) -> tuple[InnerFence, ...]:
    """The code fences inside ``text``, a Markdown list or blockquote (the HTML parser
    renders its containers as Markdown), with local offsets.

    Example::

        [f.opening for f in container_fences("> ```py\\n> x = 1\\n> ```")]     # ['> ```py']
    """
    if "```" not in text and "~~~" not in text and "$$" not in text and "|" not in text:
        return ()
    lines, tokens = _Lines(text), _markdown_it().parse(text)
    fences: list[InnerFence] = []
    for i, token in enumerate(tokens):
        if token.level == 0 and token.nesting == 1:
            fences.extend(_inner_fences(tokens, i, lines, 0))
    return tuple(fences)


def _compact_head(head: str) -> str:
    """A table's header row with runs of spaces collapsed and a ``| --- |`` delimiter row
    (lines end as Markdown ends them: a U+2028 in a cell is no line end)."""
    lines = _LINE_END.split(head.strip())
    if len(lines) < 2:
        return head
    header = re.sub(r"[ \t]+", " ", lines[0].strip())
    cells = lines[1].strip().strip("|").split("|")
    marks = []
    for cell in cells:
        cell = cell.strip()
        mark = "---"
        if cell.startswith(":"):
            mark = ":" + mark
        if cell.endswith(":") and len(cell) > 1:
            mark += ":"
        marks.append(mark)
    return f"{header}\n| {' | '.join(marks)} |"


def _fence_block(token, body: str, start: int) -> Block:
    first_newline = _LINE_END.search(body)
    if first_newline is None:
        return Block("code", body, start)
    head = first_newline.end()
    last_line_start = max(body.rfind("\n"), body.rfind("\r")) + 1
    last_line = body[last_line_start:].strip()
    closed = (
        last_line_start >= head
        and len(last_line) >= len(token.markup)
        and set(last_line) == {token.markup[0]}
    )
    tail = last_line_start if closed else None
    units = _line_units(body, head, tail if tail is not None else len(body))
    opening = body[:head].rstrip()
    indent = opening[: len(opening) - len(opening.lstrip())]
    language = token.info.split()[:1]
    short = f"{indent}{token.markup}{''.join(language)}"
    short_head = short if short != opening else None  # without the info string's attributes
    return Block("code", body, start, units, head=head, tail=tail, short_head=short_head)


def _display_math_block(body: str, start: int) -> Block:
    """A ``$$`` block: its ``$$`` lines are repeated in every part when they stand alone."""
    lines = _LINE_END.split(body)
    if len(lines) >= 3 and lines[0].strip() == "$$" and lines[-1].strip() == "$$":
        head = _LINE_END.search(body).end()
        tail = max(body.rfind("\n"), body.rfind("\r")) + 1
        return Block("math", body, start, _line_units(body, head, tail), head=head, tail=tail)
    return Block("math", body, start, _line_units(body, 0, len(body)))


class StructuredMarkdownNodeParser(StructuredNodeParser):
    """Split Markdown into section-aware nodes that keep lists, tables and code blocks whole.

    Every node gets ``section_path`` (the heading chain including its own
    heading, joined with " > "; shortened with "…" when it would take more
    than half of the cap), ``section_title``, ``block_types`` (e.g.
    "paragraph,list,table"), ``oversized`` and ``partial_unit`` metadata on
    top of the document's own metadata. Nodes hold at most ``chunk_size``
    tokens (default: the bundled encoder's max sequence length minus its
    special tokens, counting the embed-mode metadata). A block larger than that
    is split between its items, rows or lines; a single item, row, line or
    sentence larger than that is cut at sentence, word and, as a last resort,
    character boundaries, and its nodes get ``partial_unit=True``.
    ``oversized=True`` (a node over the cap) can only be a single character that
    alone takes more tokens than the cap. Bad documents: see ``on_error``.

    Example::

        from llama_index.core import Document
        from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser

        parser = StructuredMarkdownNodeParser.from_defaults(chunk_size=128)
        text = "# Returns\\n\\n- Apples: 2 days\\n- Pears: 3 days"
        node = parser.get_nodes_from_documents([Document(text=text)])[0]
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        node.metadata["block_types"]   # 'heading,list'
    """

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialisation stores for this class."""
        return "StructuredMarkdownNodeParser"

    def _document_blocks(self, text: str) -> tuple[list[Block], str | None]:
        return markdown_blocks(text), text
