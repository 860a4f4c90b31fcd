"""Writing a cleaned HTML tree as Markdown blocks: the one walk's writer.

:class:`_Writer` gets each element as the walk of :meth:`.html_blocks.HTMLConverter._convert`
enters and leaves it (an explicit stack: nesting depth is unlimited) and writes headings
as ``## Title`` lines, lists as ``-`` / ``1.`` items (nesting kept by indentation),
definition lists as ``Term`` / ``: definition`` lines, quotes as ``>`` lines, ``pre`` as
fenced code and tables through :mod:`.html_tables`. Lists, definition lists and quotes
nested more than :data:`MAX_NESTING` deep are written at that depth. Text that would
read as Markdown block syntax at a line start (``<p># x</p>``, ``<li>1. x</li>``), and the
page's own backslashes and character references (``\\*``, ``&amp;copy;``), are escaped,
so the text reads back as written (:mod:`.markdown_escape`). Moved from
:mod:`.html_blocks`, which still exports :data:`MAX_NESTING`.

Example::

    from llama_index_ragtune.node_parser.html_blocks import HTMLConverter

    [b.text for b in HTMLConverter().blocks("<ul><li>Apples</li></ul>")]     # ['- Apples']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llama_index_ragtune.node_parser.block import visible_title
from llama_index_ragtune.node_parser.html_tables import render_table
from llama_index_ragtune.node_parser.html_text import (
    BLOCK_TAGS,
    BR,
    PRE_TAGS,
    _bs4,
    alt_text,
    html_integer,
    normalize,
    pre_text,
)
from llama_index_ragtune.node_parser.markdown import container_fences
from llama_index_ragtune.node_parser.markdown_escape import (
    escape_closing_hashes,
    escape_inline_syntax,
    escape_markdown_text,
)
from llama_index_ragtune.node_parser.structure import Block

#: Lists, definitions and quotes deeper than this are written at this depth.
MAX_NESTING = 4
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_LIST_TAGS = frozenset({"ul", "ol", "menu", "dir"})
_BLOCK_KIND = {"list": "list", "dl": "definition_list", "quote": "blockquote"}
#: Sphinx/MkDocs "¶" anchors ending a heading (stripped, not searched for with a regular
#: expression: a title of thousands of "¶" made one quadratic, 20,000 took 3 s).
_PERMALINK_MARKS = "\u00b6\u00a7\U0001f517"
_LANGUAGE = re.compile(r"^(?:language|lang|highlight)-([\w+#.-]+)$")
_BACKTICKS = re.compile("`+")


@dataclass(eq=False)
class _Context:
    """An open list, item, definition list, definition, quote, heading or term."""

    kind: str  # list | item | dl | term | dd | quote | heading
    tag: object  # the element that opened it
    owner: object  # the element whose end closes it (an implied sibling's outer element)
    marker: str = ""  # item/dd: "- ", "3. ", ": "
    first: bool = True  # item/dd: the marker is still to be written
    ordered: bool = False
    number: int = 1  # list: the next item's number
    had_item: bool = False  # list: an item was opened
    last_dt: bool = False  # dl: the previous entry was a term
    level: int = 0  # heading level
    top: bool = False  # opened at the top level: it makes a block of its own
    content: bool = False  # something was written inside it
    indent: str = ""  # a list/quote directly inside a list, after an item: under that item

    @property
    def prefixes(self) -> bool:
        return self.kind in ("item", "dd", "quote") or bool(self.indent)


def aria_heading_level(tag) -> int:
    """The level of an element whose ARIA role is ``heading`` (``<div role="heading"
    aria-level="3">``, as single-page apps write headings): its ``aria-level`` within 1..6
    (2, the ARIA default, when missing or invalid), else 0.

    Example::

        aria_heading_level(BeautifulSoup('<div role="heading" aria-level="3">A</div>', "lxml").div)
        # 3
    """
    roles = str(tag.get("role") or "").split()
    if not roles or roles[0].lower() != "heading":
        return 0
    level = html_integer(tag.get("aria-level"), default=2)
    return min(level, 6) if level >= 1 else 2


def _start_number(value) -> int:
    """An ``<ol start>`` as browsers read it (:func:`.html_text.html_integer`), 1 when absurd."""
    number = html_integer(value, default=1)
    return number if abs(number) < 10**9 else 1


@dataclass
class _Writer:
    """Turns the walk's events into blocks (one document)."""

    is_layout_table: object
    blocks: list[Block] = field(default_factory=list)
    buffer: list[str] = field(default_factory=list)
    stack: list[_Context] = field(default_factory=list)
    prefixers: list[_Context] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the open top-level container's lines
    unit_starts: list[int] = field(default_factory=list)
    flat: int = 0  # open headings/terms: read as one line

    # ---------------------------------------------------------- contexts

    def push(self, ctx: _Context) -> None:
        if not self.stack:
            ctx.top = ctx.kind in _BLOCK_KIND
            self.lines, self.unit_starts = [], []
        self.stack.append(ctx)
        if ctx.prefixes:
            self.prefixers.append(ctx)
        if ctx.kind in ("heading", "term"):
            self.flat += 1

    def pop(self) -> None:
        ctx = self.stack[-1]
        line = ctx.kind in ("heading", "term")  # read as one line, written to the container
        if not line:
            self.flush()  # the pending text belongs inside (under an item's marker, say)
        self.stack.pop()
        if ctx.prefixes:
            self.prefixers.pop()
        if line:
            self.flat -= 1
            text = " ".join("".join(self.buffer).replace("\ufeff", "").split())
            self.buffer.clear()
            if ctx.kind == "heading":
                self._heading(ctx, text)
            elif text:
                self.emit([escape_markdown_text(text)])
        if self.stack:
            self.stack[-1].content |= ctx.content
        elif ctx.top:
            self._close_block(ctx)

    def close_owned(self, tag) -> None:
        while self.stack and self.stack[-1].owner is tag:
            self.pop()

    # ------------------------------------------------------------ output

    def prefix(self, consume: bool = True) -> str:
        parts = []
        for ctx in self.prefixers[:MAX_NESTING]:
            parts.append(ctx.indent)
            if ctx.kind == "quote":
                parts.append("> ")
            elif ctx.kind in ("item", "dd"):
                parts.append(ctx.marker if ctx.first else " " * len(ctx.marker))
                ctx.first = ctx.first and not consume
        top = self.stack[-1]
        if top.kind == "list" and top.had_item and len(self.prefixers) < MAX_NESTING:
            parts.append("  ")  # stray content directly in a list: under the previous item
        return "".join(parts)

    def emit(self, lines: list[str]) -> None:
        for text in lines:
            self.lines.append((self.prefix() + text).rstrip())
        if lines:
            self.stack[-1].content = True

    def begin_block(self) -> None:
        """A new block starts inside the innermost container: quotes separate blocks by '>'."""
        top = self.stack[-1]
        if top.kind == "quote" and top.content:
            self.lines.append(self.prefix(consume=False).rstrip())

    def add(self, kind: str, text: str, **kwargs) -> None:
        """A block at the top level, or its lines inside the open container."""
        if not self.stack:
            self.blocks.append(Block(kind, text, **kwargs))
        else:
            self.begin_block()
            self.emit(text.split("\n"))

    def flush(self) -> None:
        if self.buffer:
            text = escape_markdown_text(normalize("".join(self.buffer)))
            self.buffer.clear()
            if text:
                self.add("paragraph", text)

    def _heading(self, ctx: _Context, title: str) -> None:
        title = visible_title(title).rstrip(_PERMALINK_MARKS).strip()
        if title:
            line = f"{'#' * ctx.level} {escape_closing_hashes(escape_inline_syntax(title))}"
            self.add("heading", line, level=ctx.level, title=title)

    def _close_block(self, ctx: _Context) -> None:
        lines, starts = self.lines, self.unit_starts
        self.lines, self.unit_starts = [], []
        if not lines:
            return
        text = "\n".join(lines)
        units: list[tuple[int, int]] = []
        if ctx.kind != "quote":
            offsets = [0]
            for line in lines:
                offsets.append(offsets[-1] + len(line) + 1)
            bounds = sorted({0, *(s for s in starts if s < len(lines))}) + [len(lines)]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if "".join(lines[a:b]).strip():
                    units.append((offsets[a], offsets[b] - 1))
        fences = container_fences(text)
        self.blocks.append(Block(_BLOCK_KIND[ctx.kind], text, units=units, inner_fences=fences))

    # ------------------------------------------------------------ events

    def enter(self, tag) -> bool:
        """Handle the start of ``tag``; True when its children are to be walked."""
        name = tag.name
        top = self.stack[-1] if self.stack else None
        if (
            top is not None
            and top.kind in ("item", "term", "dd")
            and tag.parent is top.tag
            and name in (("li",) if top.kind == "item" else ("dt", "dd"))
        ):  # an unclosed <li>/<dt>/<dd> swallowed its next sibling (html.parser)
            owner = top.owner
            if top.kind != "term":
                self.flush()
            top.owner = tag  # so that close_owned closes it now
            self.close_owned(tag)
            self._open_entry(tag, owner)
            return True
        if self.flat:
            if name in BLOCK_TAGS or name == "br":
                self.buffer.append(" ")
            else:
                self.buffer.append(alt_text(tag))
            return True
        if name == "br":
            self.buffer.append(BR)
            return False
        level = 0 if name in _HEADINGS else aria_heading_level(tag)
        if level:  # an ARIA heading; it ends with its element (close_owned), block or not
            self.flush()
            self.push(_Context("heading", tag, tag, level=level))
            return True
        if name not in BLOCK_TAGS:
            self.buffer.append(alt_text(tag))
            return True
        self.flush()
        if name in _HEADINGS:
            self.push(_Context("heading", tag, tag, level=_HEADINGS[name]))
        elif name in PRE_TAGS:
            self._code(tag)
            return False
        elif name == "table":
            return self._table(tag)
        elif name in _LIST_TAGS or name in ("dl", "blockquote"):
            if self.stack:
                self.begin_block()
            kind = "quote" if name == "blockquote" else "dl" if name == "dl" else "list"
            ctx = _Context(kind, tag, tag, ordered=name == "ol")
            ctx.number = _start_number(tag.get("start", 1))
            if top is not None and top.kind == "list" and top.had_item:
                ctx.indent = "  "
            self.push(ctx)
        elif top is not None and (
            (name == "li" and top.kind == "list") or (name in ("dt", "dd") and top.kind == "dl")
        ):
            self._open_entry(tag, tag)
        return True

    def exit(self, tag) -> None:
        if self.flat:
            if tag.name in BLOCK_TAGS:
                self.buffer.append(" ")
        elif tag.name in BLOCK_TAGS:
            self.flush()
        self.close_owned(tag)

    def _open_entry(self, tag, owner) -> None:
        """A list item, definition term or definition in the innermost list/dl."""
        container = self.stack[-1]
        if tag.name == "li":
            marker = f"{container.number}. " if container.ordered else "- "
            container.number += 1
            container.had_item = True
            if container.top:
                self.unit_starts.append(len(self.lines))
            self.push(_Context("item", tag, owner, marker=marker))
            return
        new_group = tag.name == "dt" and not container.last_dt
        if container.top and (new_group or not self.unit_starts):
            self.unit_starts.append(len(self.lines))
        container.last_dt = tag.name == "dt"
        kind = "term" if tag.name == "dt" else "dd"
        self.push(_Context(kind, tag, owner, marker=": " if kind == "dd" else ""))

    def _code(self, pre) -> None:
        code = pre_text(pre).strip("\n").rstrip()
        if not code.strip():
            return
        language = ""
        tag_type = _bs4().Tag
        candidates = [pre, pre.find("code"), pre.parent, pre.parent.parent if pre.parent else None]
        for tag in candidates:
            for cls in (tag.get("class") or []) if isinstance(tag, tag_type) else []:
                match = _LANGUAGE.match(cls)
                if match:
                    language = match.group(1)
                    break
            if language:
                break
        # longer than any run of backticks in the code (one pass: a run of thousands of
        # backticks would otherwise cost a search of the code per backtick)
        longest = max((len(run) for run in _BACKTICKS.findall(code)), default=0)
        fence = "`" * max(3, longest + 1)
        opening = f"{fence}{language}"
        text = f"{opening}\n{code}\n{fence}"
        head, tail = len(opening) + 1, len(text) - len(fence)
        units = []
        offset = head
        for line in code.split("\n"):
            if line.strip():
                units.append((offset, offset + len(line.rstrip())))
            offset += len(line) + 1
        self.add("code", text, units=units, head=head, tail=tail)

    def _table(self, table) -> bool:
        rendered = render_table(table, self.is_layout_table)
        if rendered is None:  # a layout table: its cells are ordinary block content
            return True
        for paragraph in rendered.before:
            self.add("paragraph", escape_markdown_text(paragraph))
        if rendered.text:
            self.add("table", rendered.text, units=rendered.units, head=rendered.head)
        return False
