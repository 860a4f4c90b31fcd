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

from llama_index_ragtune.node_parser.documents import shown_id, without_control_characters
from llama_index_ragtune.node_parser.html_clean import (
    DEFAULT_BOILERPLATE_ROLES,
    DEFAULT_BOILERPLATE_TAGS,
    BoilerplatePolicy,
    dropped_by_unclosed,
    swallowed_by_unclosed,
    unshown_text,
)
from llama_index_ragtune.node_parser.html_foreign import (
    FOREIGN_START,
    break_out_of_foreign_content,
)
from llama_index_ragtune.node_parser.html_lxml_repairs import (
    close_definitions,
    nest_paragraphs_in_headings,
)
from llama_index_ragtune.node_parser.html_math import replace_math
from llama_index_ragtune.node_parser.html_tables import layout_tables
from llama_index_ragtune.node_parser.html_text import (
    _bs4,
    html_parser_soup,
    parse_fallback_content,
    replace_control_characters,
    text_types,
)
from llama_index_ragtune.node_parser.html_writer import MAX_NESTING, _Writer
from llama_index_ragtune.node_parser.structure import Block

__all__ = [
    "DEFAULT_BOILERPLATE_ROLES",
    "DEFAULT_BOILERPLATE_TAGS",
    "MAX_NESTING",
    "HTMLConverter",
    "check_features",
]

_WORD = re.compile(r"[^\W_]+")
_MATH_START = re.compile(r"<math", re.I)
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
        ``html.parser`` does), so that no markup shows as text. HTML elements inside
        ``svg`` / ``math`` are moved out as browsers move them
        (:func:`~.html_foreign.break_out_of_foreign_content`). Each MathML formula is
        replaced by one readable form (:func:`~.html_math.replace_math`)."""
        html = without_control_characters(html)
        soup = self._parse_markup(html)
        if "&#" in html:
            replace_control_characters(soup)
        if soup.builder.NAME != "html.parser":
            parse_fallback_content(soup, dropped=self.policy.lenient().tags)  # dropped in any case
        if FOREIGN_START.search(html):
            break_out_of_foreign_content(soup)
        if _MATH_START.search(html):
            replace_math(soup)
        return soup

    def _parse_markup(self, html: str):
        bs4 = _bs4()
        builder = bs4.builder.builder_registry.lookup(*self.features.split())
        if builder is None or issubclass(builder, bs4.builder.HTMLParserTreeBuilder):
            return html_parser_soup(html)
        if getattr(builder, "NAME", None) == "lxml":  # lxml ends a heading at a <p>, <table>...
            html = close_definitions(nest_paragraphs_in_headings(html))
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
        swallowed = swallowed_by_unclosed(html)
        if swallowed is not None and swallowed[2] >= ALMOST_EMPTY_WORDS:
            logger.warning(
                "HTML document %s: a %s opened at character %d is never closed, so the "
                "%d words of markup after it are hidden (as a browser hides them) and give no "
                "nodes. Close it (with -->, its end tag such as </script>, or > for a tag) if "
                "that text is content; a tag left open at the end may mean the file was cut off.",
                shown_id(document_id), *swallowed,
            )  # fmt: skip
        soup = self.parse(html)
        dropped = dropped_by_unclosed(html, soup, self.policy.tags)
        if dropped is not None and dropped[2] >= ALMOST_EMPTY_WORDS:
            logger.warning(
                "HTML document %s: a %s opened at character %d is never closed, so it holds "
                "the %d words of headings, paragraphs or lists after it, and they are dropped "
                "with it as boilerplate (a browser shows them). Close it with </%s> where its "
                "own text ends.",
                shown_id(document_id), *dropped, dropped[0][1:-1],
            )  # fmt: skip
        self.policy.drop(soup, removed, hidden)
        blocks = self._convert(soup)
        kept = _word_count(blocks)
        largest = max((size for _, size in removed), default=0)
        if kept >= ALMOST_EMPTY_WORDS or largest < max(1, WRAPPER_SHARE * kept):
            hidden_words = sum(size for _, size in hidden)
            if hidden_words >= max(ALMOST_EMPTY_WORDS, kept / WRAPPER_SHARE):
                logger.warning(
                    "HTML document %s: %d hidden element(s) with %d words were dropped (%s). "
                    "If they are content (collapsed FAQ answers or tabs of a saved page), "
                    "parse with drop_hidden=False.",
                    shown_id(document_id), len(hidden), hidden_words, _largest(hidden),
                )  # fmt: skip
            if not blocks and (unshown := unshown_text(self.parse(html))):
                logger.warning(
                    "HTML document %s gives no nodes: its only text is inside elements a "
                    "browser running scripts never shows (%s). If that is the page's content, "
                    "unwrap them before parsing (replace <noscript> / <template> by <div>).",
                    shown_id(document_id), _largest(unshown),
                )  # fmt: skip
            return blocks
        soup = self.parse(html)
        self.policy.lenient().drop(soup)
        fallback = self._convert(soup)
        if _word_count(fallback) <= 2 * kept:
            if not blocks:
                logger.warning(
                    "HTML document %s holds only boilerplate (%s): it gives no nodes.",
                    shown_id(document_id), _largest(removed),
                )  # fmt: skip
            return blocks
        logger.warning(
            "The boilerplate rules removed (almost) all text of HTML document %s (%s); "
            "kept the page with only scripts, styles, navigation and form controls removed. "
            "If that text is boilerplate, remove it before parsing or adjust "
            "boilerplate_tags / boilerplate_roles.",
            shown_id(document_id), _largest(removed),
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
