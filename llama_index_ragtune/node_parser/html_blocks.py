"""Convert HTML into the shared block model, rendering every block as Markdown.

Headings become ``## Title`` lines, lists ``-``/``1.`` items (nesting kept by
indentation), definition lists ``Term`` / ``: definition`` lines, tables
Markdown tables (:mod:`.html_tables`), ``pre`` (and the obsolete ``listing``,
``xmp``, ``plaintext``) fenced code and blockquotes ``>`` lines, so the HTML and
Markdown parsers give the same text form.
Boilerplate is dropped first (:mod:`.html_clean`); what counts as visible text
(image alt text, ``<br>``, word breaks at block boundaries) is in :mod:`.html_text`.

The tree is walked once, iteratively (an explicit stack), so nesting depth is
unlimited. Lists, definition lists and quotes nested more than
``MAX_NESTING`` deep are written at that depth: their text is kept, only the
indentation / quote markers stop growing (so deep nesting cannot multiply the
output). Everything inside a heading or a definition term is read as one line.

Example::

    from llama_index_ragtune.node_parser.html_blocks import HTMLConverter

    blocks = HTMLConverter().blocks("<h2>Returns</h2><ul><li>Apples</li><li>Pears</li></ul>")
    [b.kind for b in blocks]     # ['heading', 'list']
    blocks[1].text               # '- Apples\\n- Pears'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from llama_index_ragtune.node_parser.block import visible_title
from llama_index_ragtune.node_parser.documents import without_control_characters
from llama_index_ragtune.node_parser.html_clean import (
    DEFAULT_BOILERPLATE_ROLES,
    DEFAULT_BOILERPLATE_TAGS,
    BoilerplatePolicy,
    unshown_text,
)
from llama_index_ragtune.node_parser.html_math import replace_math
from llama_index_ragtune.node_parser.html_tables import layout_tables, render_table
from llama_index_ragtune.node_parser.html_text import (
    BLOCK_TAGS,
    BR,
    PRE_TAGS,
    _bs4,
    alt_text,
    html_integer,
    html_parser_soup,
    normalize,
    parse_fallback_content,
    pre_text,
    replace_control_characters,
    text_types,
)
from llama_index_ragtune.node_parser.markdown import container_fences
from llama_index_ragtune.node_parser.structure import Block

__all__ = [
    "DEFAULT_BOILERPLATE_ROLES",
    "DEFAULT_BOILERPLATE_TAGS",
    "MAX_NESTING",
    "HTMLConverter",
    "check_features",
]

#: Lists, definitions and quotes deeper than this are written at this depth.
MAX_NESTING = 4
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_LIST_TAGS = frozenset({"ul", "ol", "menu", "dir"})
_BLOCK_KIND = {"list": "list", "dl": "definition_list", "quote": "blockquote"}
_PERMALINK_MARK = re.compile("\\s*[\u00b6\u00a7\U0001f517]+$")  # Sphinx/MkDocs "¶" anchors
_LANGUAGE = re.compile(r"^(?:language|lang|highlight)-([\w+#.-]+)$")
_WORD = re.compile(r"[^\W_]+")
_MATH_START = re.compile(r"<math", re.I)
_BACKTICKS = re.compile("`+")
#: A page left with fewer words than this, by the removal of an element holding
#: ``WRAPPER_SHARE`` times as many, is parsed again leniently.
ALMOST_EMPTY_WORDS = 5
WRAPPER_SHARE = 4
logger = logging.getLogger(__name__)


def check_features(features: str) -> str:
    """``features`` when it names an HTML tree builder of BeautifulSoup installed here (or is
    ``"lxml"``, which falls back to ``html.parser`` when lxml is missing); else a ValueError.

    An XML builder is refused: it reads only the first top-level element of an HTML page
    and stops at entities such as ``&nbsp;``, so the rest of the text would be lost.

    Example::

        check_features("html.parser")     # 'html.parser'
        check_features("xml")             # ValueError: ... an XML parser ...
    """
    builder_registry = _bs4().builder.builder_registry
    builder = builder_registry.lookup(*features.split()) if features.strip() else None
    if builder is None and features != "lxml":
        raise ValueError(
            f"parser_features={features!r} names no BeautifulSoup tree builder installed here; "
            "use 'lxml' or 'html.parser' (or 'html5lib' after `pip install html5lib`)."
        )
    if builder is not None and builder.is_xml:
        raise ValueError(
            f"parser_features={features!r} is an XML parser: it reads only the first top-level "
            "element of an HTML page and stops at entities such as &nbsp;, losing the rest of "
            "the text. Use 'lxml' or 'html.parser'."
        )
    return features


def _word_count(blocks: list[Block]) -> int:
    return sum(len(_WORD.findall(block.text)) for block in blocks)


def _largest(removed: list[tuple[str, int]], k: int = 3) -> str:
    """The ``k`` removed elements that held the most text, for a message."""
    top = sorted((item for item in removed if item[1]), key=lambda item: -item[1])[:k]
    return ", ".join(f"{name} with {size} words" for name, size in top) or "no text"


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
                self.emit([text])
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
            text = normalize("".join(self.buffer))
            self.buffer.clear()
            if text:
                self.add("paragraph", text)

    def _heading(self, ctx: _Context, title: str) -> None:
        title = _PERMALINK_MARK.sub("", visible_title(title)).strip()
        if title:
            self.add("heading", f"{'#' * ctx.level} {title}", level=ctx.level, title=title)

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
            self.add("paragraph", paragraph)
        if rendered.text:
            self.add("table", rendered.text, units=rendered.units, head=rendered.head)
        return False


class HTMLConverter:
    """Walks a parsed HTML tree and emits :class:`Block` objects (without source offsets).

    Example::

        converter = HTMLConverter("html.parser", boilerplate_tags=["nav"], boilerplate_roles=[])
        [b.text for b in converter.blocks("<nav>Home</nav><p>Kept <b>bold</b></p>")]
        # ['Kept bold']
    """

    def __init__(
        self,
        features: str = "lxml",
        boilerplate_tags: Iterable[str] = DEFAULT_BOILERPLATE_TAGS,
        boilerplate_roles: Iterable[str] = DEFAULT_BOILERPLATE_ROLES,
        drop_hidden: bool = True,
    ):
        self.features = check_features(features)
        self.policy = BoilerplatePolicy(boilerplate_tags, boilerplate_roles, hidden=drop_hidden)
        self.boilerplate_tags, self.boilerplate_roles = self.policy.tags, self.policy.roles

    def parse(self, html: str):
        """The BeautifulSoup tree of ``html`` (``html.parser`` when the chosen builder is
        missing; for it, the content of ``xmp``/``plaintext``, a ``&#`` that starts no
        character reference and comments are prepared to read as browsers read them, see
        :mod:`.html_text`). Control characters, raw or from numeric references, are
        replaced (:func:`~.documents.without_control_characters`); the alternative content
        of ``noframes``/``noembed``/``iframe``, raw text for lxml, is parsed as markup (as
        ``html.parser`` does), so that no markup shows as text. Each MathML formula is
        replaced by one readable form (:func:`~.html_math.replace_math`)."""
        html = without_control_characters(html)
        soup = self._parse_markup(html)
        if "&#" in html:
            replace_control_characters(soup)
        if soup.builder.NAME != "html.parser":
            parse_fallback_content(soup, dropped=self.policy.lenient().tags)  # dropped in any case
        if _MATH_START.search(html):
            replace_math(soup)
        return soup

    def _parse_markup(self, html: str):
        bs4 = _bs4()
        builder = bs4.builder.builder_registry.lookup(*self.features.split())
        if builder is None or issubclass(builder, bs4.builder.HTMLParserTreeBuilder):
            return html_parser_soup(html)
        try:
            return bs4.BeautifulSoup(html, self.features)
        except bs4.FeatureNotFound:  # pragma: no cover - the lookup found it
            return html_parser_soup(html)

    def is_boilerplate(self, tag) -> bool:
        """True for a boilerplate element (see :mod:`.html_clean`) to drop with its content."""
        return self.policy.is_boilerplate(tag)

    def drop_boilerplate(self, soup) -> None:
        """Remove every boilerplate element from ``soup`` in place."""
        self.policy.drop(soup)

    def blocks(self, html: str, document_id: str | None = None) -> list[Block]:
        """The page's content blocks, boilerplate dropped, each rendered as Markdown.

        When the boilerplate rules leave (almost) no text of a page because one element
        held it (a hidden ``body``, a ``header``, a ``role="menu"``, ...), the page is
        converted again with only :data:`~.html_clean.NEVER_TEXT_TAGS` dropped, and a
        warning names ``document_id`` and the elements that held the text. When hidden
        elements held at least ``ALMOST_EMPTY_WORDS`` words and a ``1 / WRAPPER_SHARE``
        share of the text kept (the collapsed answers of a saved FAQ page, say), they are
        dropped with a warning naming ``document_id``, them and ``drop_hidden=False``.
        """
        removed: list[tuple[str, int]] = []
        hidden: list[tuple[str, int]] = []
        soup = self.parse(html)
        self.policy.drop(soup, removed, hidden)
        blocks = self._convert(soup)
        kept = _word_count(blocks)
        largest = max((size for _, size in removed), default=0)
        if kept >= ALMOST_EMPTY_WORDS or largest < max(1, WRAPPER_SHARE * kept):
            hidden_words = sum(size for _, size in hidden)
            if hidden_words >= max(ALMOST_EMPTY_WORDS, kept / WRAPPER_SHARE):
                logger.warning(
                    "HTML document '%s': %d hidden element(s) with %d words were dropped (%s). "
                    "If they are content (collapsed FAQ answers or tabs of a saved page), "
                    "parse with drop_hidden=False.",
                    document_id, len(hidden), hidden_words, _largest(hidden),
                )  # fmt: skip
            if not blocks and (unshown := unshown_text(self.parse(html))):
                logger.warning(
                    "HTML document '%s' gives no nodes: its only text is inside elements a "
                    "browser running scripts never shows (%s). If that is the page's content, "
                    "unwrap them before parsing (replace <noscript> / <template> by <div>).",
                    document_id, _largest(unshown),
                )  # fmt: skip
            return blocks
        soup = self.parse(html)
        self.policy.lenient().drop(soup)
        fallback = self._convert(soup)
        if _word_count(fallback) <= 2 * kept:
            if not blocks:
                logger.warning(
                    "HTML document '%s' holds only boilerplate (%s): it gives no nodes.",
                    document_id, _largest(removed),
                )  # fmt: skip
            return blocks
        logger.warning(
            "The boilerplate rules removed (almost) all text of HTML document '%s' (%s); "
            "kept the page with only scripts, styles, navigation and form controls removed. "
            "If that text is boilerplate, remove it before parsing or adjust "
            "boilerplate_tags / boilerplate_roles.",
            document_id, _largest(removed),
        )  # fmt: skip
        return fallback

    def _convert(self, soup) -> list[Block]:
        """Walk ``soup`` (boilerplate already dropped) into blocks."""
        layout = layout_tables(soup)
        writer = _Writer(is_layout_table=lambda table: id(table) in layout)
        tag_type, texts = _bs4().Tag, text_types()
        stack: list[tuple[object, Iterable]] = [(None, iter(list(soup.contents)))]
        while stack:
            parent, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                if parent is not None:
                    writer.exit(parent)
            elif not isinstance(child, tag_type):
                if type(child) in texts:
                    writer.buffer.append(str(child))
            elif writer.enter(child):
                stack.append((child, iter(child.contents)))
        writer.flush()
        return writer.blocks
