"""Algorithmic complexity of the structured parsers on large pages of many small parts,
and text fidelity of header/footer elements that are not page chrome.

The complexity checks count operations (elements scanned, characters searched), never
wall-clock time, so they hold on a loaded machine: linear work stays within a small
multiple of the input, quadratic work exceeds it by orders of magnitude at these sizes.
"""

from __future__ import annotations

import bs4
import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser

FEATURES = ["lxml", "html.parser"]


def _parser(parser_class, **kwargs):
    return parser_class(tokenizer=whitespace_tokens, chunk_size=64, count_metadata=False, **kwargs)


# ------------------------------------------- dropping thousands of sibling elements

#: Pages whose boilerplate is thousands of siblings of the content (one parent).
_SIBLING_CHROME = {
    "hidden": "<p>para{i} text</p><div hidden>collapsed{i}</div>",
    "copy buttons": "<p>para{i} text</p><button>Copy</button>",
    "page headers": "<header>banner{i}</header><p>para{i} text</p>",
    "icons": "<p>para{i} text</p><svg><path d='M0 0'/></svg>",
}


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("shape", sorted(_SIBLING_CHROME))
def test_thousands_of_dropped_siblings_are_removed_in_linear_time(shape, features, monkeypatch):
    """bs4 finds an element among its siblings before removing it: one scan per dropped
    element made a page of n dropped siblings cost n² / 2 (10 s for 400 KB)."""
    n = 3000
    html = "<body>" + "".join(_SIBLING_CHROME[shape].format(i=i) for i in range(n)) + "</body>"
    scanned = 0
    original = bs4.element.Tag.index

    def counting_index(self, element):
        nonlocal scanned
        position = original(self, element)
        scanned += position + 1
        return position

    monkeypatch.setattr(bs4.element.Tag, "index", counting_index)
    parser = _parser(StructuredHTMLNodeParser, parser_features=features)
    nodes = parser.get_nodes_from_documents([Document(text=html, id_="page")])
    assert scanned <= 4 * n, f"{scanned} sibling comparisons for {n} dropped elements"
    kept = "\n\n".join(node.text for node in nodes)
    assert kept == "\n\n".join(f"para{i} text" for i in range(n))


# ------------------------------------------------- offsets without str.find per node


class _SearchCounter(str):
    """A document text that counts the characters ``find`` searches."""

    searched = 0

    def find(self, sub, start=None, end=None):  # type: ignore[override]
        lo = 0 if start is None else start
        hi = len(self) if end is None else end
        found = super().find(sub, lo, hi)
        _SearchCounter.searched += (hi if found < 0 else found + len(sub)) - lo
        return found


class _CountedDocument(Document):
    @property
    def text(self) -> str:  # type: ignore[override]
        return _SearchCounter(super().text)


def _searched(parser, text: str) -> tuple[int, list]:
    _SearchCounter.searched = 0
    nodes = parser.get_nodes_from_documents([_CountedDocument(text=text, id_="doc")])
    return _SearchCounter.searched, nodes


def test_html_nodes_are_not_searched_for_in_the_page():
    """A node's text is Markdown, never found in the raw HTML: searching for each one
    scanned the whole page per node (6.8 s of a 22 s parse of an 800 KB page)."""
    sections = 2000
    html = "".join(f"<section><h2>T{i}</h2><p>x{i} y</p></section>" for i in range(sections))
    searched, nodes = _searched(_parser(StructuredHTMLNodeParser), html)
    assert len(nodes) == sections
    assert searched <= 4 * len(html), f"{searched} characters searched in a {len(html)} page"
    assert [n.metadata["section_path"] for n in nodes[:2]] == ["T0", "T1"]
    assert all(n.start_char_idx is None and n.end_char_idx is None for n in nodes)


def test_split_markdown_table_parts_are_not_searched_for_in_the_document():
    """Parts of a split table repeat its header, so their text is not a substring of the
    document: each one scanned the rest of the document."""
    rows = "".join(f"| r{i} | v{i} |\n" for i in range(20_000))
    text = "| a | b |\n| --- | --- |\n" + rows + "\nAfter the table.\n"
    searched, nodes = _searched(_parser(StructuredMarkdownNodeParser), text)
    assert len(nodes) > 500
    assert searched <= 4 * len(text), f"{searched} characters searched in a {len(text)} document"
    for node in nodes:  # the offsets are the parser's own: the node's span of the document
        span = text[node.start_char_idx : node.end_char_idx]
        assert node.text.endswith(span.strip()) or span in node.text
    assert nodes[-1].text.endswith("After the table.")


def test_relationships_and_metadata_are_kept_without_the_search():
    docs = [
        Document(text="# A\n\none\n\n# B\n\ntwo", id_="d1", metadata={"store": "s1"}),
        Document(text="<h1>C</h1><p>three</p><h1>D</h1><p>four</p>", id_="d2"),
    ]
    md = _parser(StructuredMarkdownNodeParser).get_nodes_from_documents(docs[:1])
    html = _parser(StructuredHTMLNodeParser).get_nodes_from_documents(docs[1:])
    for nodes in (md, html):
        first, second = nodes
        assert first.next_node.node_id == second.node_id
        assert second.prev_node.node_id == first.node_id
        assert first.prev_node is None and second.next_node is None
        assert first.source_node.node_id == second.source_node.node_id
    assert [n.metadata["store"] for n in md] == ["s1", "s1"]
    assert (md[1].start_char_idx, md[1].end_char_idx) == (10, 18)


# ---------------------------------------- many Markdown lists and tables: linear walk


class _CountingTokens(list):
    """markdown-it's token list, counting every token read (by iteration or index)."""

    reads = 0

    def __iter__(self):
        for token in super().__iter__():
            _CountingTokens.reads += 1
            yield token

    def __getitem__(self, key):
        _CountingTokens.reads += 1
        return super().__getitem__(key)


class _CountingMarkdownIt:
    def __init__(self, md):
        self.md = md

    def parse(self, text: str, env: dict | None = None):
        return _CountingTokens(self.md.parse(text, env))

    def __getattr__(self, name: str):
        return getattr(self.md, name)


@pytest.mark.parametrize(
    "unit", ["- item\n\nText.\n\n", "| a | b |\n| --- | --- |\n| c | d |\n\nText.\n\n"]
)
def test_many_lists_and_tables_are_walked_in_linear_time(unit, monkeypatch):
    """Each list or table re-read the tokens before it (``islice`` from its index): a
    200 KB page of lists took over 30 s."""
    from llama_index_ragtune.node_parser import markdown

    original = markdown._markdown_it
    monkeypatch.setattr(
        markdown, "_markdown_it", lambda block_only=True: _CountingMarkdownIt(original(block_only))
    )
    _CountingTokens.reads = 0
    text = unit * 1500
    tokens = len(original().parse(text))
    nodes = _parser(StructuredMarkdownNodeParser).get_nodes_from_documents([Document(text=text)])
    assert _CountingTokens.reads <= 4 * tokens, f"{_CountingTokens.reads} reads of {tokens} tokens"
    assert sum(node.text.count("Text.") for node in nodes) == 1500


# ------------------------------------- header/footer of a quote, figure, cell: content


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            "<blockquote><p>Returns are easy.</p><footer>Jane Doe, customer</footer></blockquote>",
            "> Returns are easy.\n>\n> Jane Doe, customer",
        ),
        (
            "<figure><img alt='Store front'><footer>Photo by Sam Lee</footer></figure>",
            "Store front\n\nPhoto by Sam Lee",
        ),
        (
            "<details><summary>Refunds</summary><p>Within 14 days.</p>"
            "<footer>Updated in May</footer></details>",
            "Refunds\n\nWithin 14 days.\n\nUpdated in May",
        ),
        (
            "<table><tr><th>Item</th><th>Days</th></tr>"
            "<tr><td><header>Fresh</header>Apples</td><td>2</td></tr></table>",
            "| Item | Days |\n| --- | --- |\n| Fresh Apples | 2 |",
        ),
    ],
)
def test_header_and_footer_of_a_sectioning_root_are_kept(html, expected, features):
    """The HTML standard scopes a footer to its nearest sectioning root: a quote's
    attribution or a figure's credit is not the page footer (they were dropped)."""
    page = f"<header>Site banner</header><div>{html}</div><footer>Copyright 2026</footer>"
    parser = _parser(StructuredHTMLNodeParser, parser_features=features)
    nodes = parser.get_nodes_from_documents([Document(text=page, id_="page")])
    assert [node.text for node in nodes] == [expected]


# ------------------------------------------------- reference links in Markdown headings


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("## [Refund times][r]\n\nbody\n\n[r]: https://x/refunds", "Refund times"),
        ("[shipping]: https://x/ship\n\n# [Shipping]\n\nbody", "Shipping"),
        ("# ![Logo][img] Store\n\nbody\n\n[img]: logo.png", "Logo Store"),
        ("# [Not a link][missing]\n\nbody", "[Not a link][missing]"),  # no definition: literal
    ],
)
def test_a_heading_of_reference_links_is_titled_by_the_link_text(text, path):
    """The title was read without the document's link definitions: "[Refund times][r]"."""
    nodes = _parser(StructuredMarkdownNodeParser).get_nodes_from_documents([Document(text=text)])
    (node,) = [node for node in nodes if "body" in node.text]
    assert node.metadata["section_path"] == path


# ------------------------------------------- header/footer of a list item: content


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            "<ul><li><header>Step 1</header>Unpack the box.</li>"
            "<li>Keep the receipt.<footer>Step 2</footer></li></ul>",
            "- Step 1\n  Unpack the box.\n- Keep the receipt.\n  Step 2",
        ),
        (
            "<dl><dt><header>Refunds</header></dt><dd><header>Cards</header>5 days</dd></dl>",
            "Refunds\n: Cards\n  5 days",
        ),
        (
            "<div role='region'><header>Delivery</header><p>Next day.</p></div>",
            "Delivery\n\nNext day.",
        ),
    ],
)
def test_header_and_footer_of_a_list_item_are_kept(html, expected, features):
    """HTML-AAM makes a header/footer the page banner/footer only when scoped to the body:
    an item's title in a header was dropped as if it were the site banner."""
    page = (
        f"<body><header><nav>Home</nav>VoltHub logo</header>{html}"
        "<footer>Copyright 2026</footer></body>"
    )
    parser = _parser(StructuredHTMLNodeParser, parser_features=features)
    nodes = parser.get_nodes_from_documents([Document(text=page, id_="page")])
    assert "\n\n".join(node.text for node in nodes) == expected
