"""Property-based tests (hypothesis) of both parsers on generated documents.

Documents are built from strategies (headings, paragraphs, nested lists, tables with
spans, code, quotes, images, long words, any Unicode letters) and rendered as Markdown and
as HTML. For every document and cap: parsing does not raise, no word of the input is lost,
the cap holds for what the embedding model sees (metadata included), a table that fits the
cap is kept whole in one node, and the output is at most a small multiple of the input.

Runs are derandomized (the same examples on every run) and small enough for the fast tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core import Document
from llama_index.core.schema import MetadataMode

from llama_index_ragtune.node_parser import (
    DocumentParseError,
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)

FAST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Output may grow by repeated table headers (at most a third of each node) and code
#: fences; never more than this many times the input, plus a constant.
GROWTH, SLACK = 3, 200
METADATA = {"source": "generated"}


def whitespace_tokens(text: str) -> list[str]:
    return text.split()


def char_tokens(text: str) -> str:
    """About one token per three characters: long words must be cut at characters."""
    return text[::3]


COUNTERS = [whitespace_tokens, char_tokens]

# ------------------------------------------------------------------ strategies

# Letters and digits of several scripts (Latin, Greek, Cyrillic, CJK, kana, Hangul,
# Arabic, a non-BMP mathematical letter), all str.isalnum().
_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "éßøÆçŁΩλжЯ漢字語かなカナ한글ﺎ٣\U0001d518"
)
short_word = st.text(st.sampled_from(_ALPHABET), min_size=1, max_size=12)
long_word = st.tuples(short_word, st.integers(8, 30)).map(lambda t: (t[0] * t[1])[:120])
word = st.one_of(short_word, short_word, short_word, short_word, short_word, long_word)
words = st.lists(word, min_size=1, max_size=12).map(" ".join)
sentence = words.map(lambda text: text + ".")
paragraph = st.lists(sentence, min_size=1, max_size=3).map(" ".join)


@dataclass
class Item:
    text: str
    children: list[Item]


items = st.recursive(
    st.builds(Item, words, st.just([])),
    lambda inner: st.builds(Item, words, st.lists(inner, max_size=3)),
    max_leaves=6,
)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    spans: list[tuple[int, int, int, int]]  # (row, column, colspan, rowspan) for HTML


@st.composite
def tables(draw) -> Table:
    width = draw(st.integers(2, 5))
    cell = st.lists(word, min_size=1, max_size=4).map(" ".join)
    header = draw(st.lists(cell, min_size=width, max_size=width))
    rows = draw(st.lists(st.lists(cell, min_size=width, max_size=width), min_size=1, max_size=6))
    spans = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(rows) - 1),
                st.integers(0, width - 1),
                st.sampled_from([1, 1, 2, 3, 1000]),
                st.sampled_from([1, 1, 2, 0, 65534]),
            ),  # fmt: skip
            max_size=3,
        )
    )
    return Table(header, rows, spans)


block = st.one_of(
    st.tuples(st.just("heading"), st.integers(1, 6), words),
    st.tuples(st.just("paragraph"), paragraph),
    st.tuples(st.just("paragraph"), paragraph),
    st.tuples(st.just("list"), st.lists(items, min_size=1, max_size=4)),
    st.tuples(st.just("table"), tables()),
    st.tuples(st.just("code"), st.lists(words, min_size=1, max_size=10)),
    st.tuples(st.just("quote"), st.lists(paragraph, min_size=1, max_size=3)),
    st.tuples(st.just("image"), words),
)
documents = st.lists(block, min_size=1, max_size=6)

# ------------------------------------------------------------------- rendering


def _md_items(items_: list[Item], depth: int = 0) -> list[str]:
    lines = []
    for item in items_:
        lines.append("  " * depth + "- " + item.text)
        lines.extend(_md_items(item.children, depth + 1))
    return lines


def md_table(table: Table) -> str:
    def row(cells):
        return "| " + " | ".join(cells) + " |"

    return "\n".join(
        [row(table.header), row(["---"] * len(table.header))] + [row(r) for r in table.rows]
    )


def to_markdown(doc) -> tuple[str, list[str]]:
    """The Markdown text and its tables."""
    parts, tables_ = [], []
    for kind, *args in doc:
        if kind == "heading":
            parts.append("#" * args[0] + " " + args[1])
        elif kind == "paragraph":
            parts.append(args[0])
        elif kind == "list":
            parts.append("\n".join(_md_items(args[0])))
        elif kind == "table":
            tables_.append(md_table(args[0]))
            parts.append(tables_[-1])
        elif kind == "code":
            parts.append("```\n" + "\n".join(args[0]) + "\n```")
        elif kind == "quote":
            parts.append("\n>\n".join("> " + p for p in args[0]))
        else:
            parts.append(f"![{args[0]}](figure.png)")
    return "\n\n".join(parts), tables_


def _html_items(items_: list[Item]) -> str:
    inner = "".join(
        f"<li>{item.text}{_html_items(item.children) if item.children else ''}</li>"
        for item in items_
    )
    return f"<ul>{inner}</ul>"


def html_table(table: Table) -> tuple[str, str | None]:
    """The table as HTML, and its expected Markdown when it has no spans."""
    spans = {(r, c): (cs, rs) for r, c, cs, rs in table.spans if (cs, rs) != (1, 1)}
    head = "".join(f"<th>{h}</th>" for h in table.header)
    body = ""
    for r, cells in enumerate(table.rows):
        tds = ""
        for c, text in enumerate(cells):
            cs, rs = spans.get((r, c), (1, 1))
            tds += f'<td colspan="{cs}" rowspan="{rs}">{text}</td>'
        body += f"<tr>{tds}</tr>"
    html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return html, None if spans else md_table(table)


def to_html(doc) -> tuple[str, list[str]]:
    """The page (wrapped in page chrome that must go) and the Markdown of its plain tables."""
    parts, tables_ = [], []
    for kind, *args in doc:
        if kind == "heading":
            parts.append(f"<h{args[0]}>{args[1]}</h{args[0]}>")
        elif kind == "paragraph":
            parts.append(f"<p>{args[0]}</p>")
        elif kind == "list":
            parts.append(_html_items(args[0]))
        elif kind == "table":
            html, expected = html_table(args[0])
            parts.append(f"<div class='wrap'>{html}</div>")
            if expected:
                tables_.append(expected)
        elif kind == "code":
            parts.append("<pre>" + "\n".join(args[0]) + "</pre>")
        elif kind == "quote":
            parts.append("<blockquote>" + "".join(f"<p>{p}</p>" for p in args[0]) + "</blockquote>")
        else:
            parts.append(f"<figure><img src='f.png' alt='{args[0]}'></figure>")
    body = "\n".join(parts)
    return (
        f"<html><body><nav>Menu</nav><main>{body}</main><footer>Legal</footer></body></html>",
        tables_,
    )


def input_words(doc) -> list[str]:
    """The words of the document, in reading order."""
    found = []
    for kind, *args in doc:
        if kind == "table":
            table = args[0]
            found += [w for cell in table.header + sum(table.rows, []) for w in cell.split()]
        elif kind == "list":
            stack = list(reversed(args[0]))
            while stack:
                item = stack.pop()
                found += item.text.split()
                stack += reversed(item.children)
        else:
            for arg in args:
                texts = arg if isinstance(arg, list) else [arg] if isinstance(arg, str) else []
                found += " ".join(texts).replace(".", " ").split()
    return found


def alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def is_subsequence(needle: str, haystack: str) -> bool:
    chars = iter(haystack)
    return all(ch in chars for ch in needle)


# ------------------------------------------------------------------- checks


def check(nodes, source_words: list[str], source: str, cap: int, count) -> None:
    """Nothing lost (the input's letters and digits, in order, are a subsequence of the
    nodes': repeated table headers and code fences only add), cap held, output bounded."""
    texts = [n.text for n in nodes]
    assert is_subsequence(alnum("".join(source_words)), alnum("".join(texts)))
    for node in nodes:
        assert count(node.get_content(MetadataMode.EMBED)) <= cap, node.text
        assert not node.metadata["oversized"]
        assert node.metadata["source"] == "generated"
    assert sum(len(t) for t in texts) <= GROWTH * len(source) + SLACK


def parse(parser_class, text: str, tokenizer, cap: int, **kwargs):
    parser = parser_class(tokenizer=tokenizer, chunk_size=cap, **kwargs)
    return parser.get_nodes_from_documents([Document(text=text, metadata=dict(METADATA))])


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("tokenizer", COUNTERS, ids=lambda f: f.__name__)
@FAST
@given(doc=documents, cap=st.integers(16, 96))
def test_markdown_keeps_every_word_under_the_cap(tokenizer, doc, cap):
    text, _ = to_markdown(doc)
    nodes = parse(StructuredMarkdownNodeParser, text, tokenizer, cap)
    check(nodes, input_words(doc), text, cap, lambda t: len(tokenizer(t)))
    for node in nodes:  # offsets point at the node's own source text
        assert node.start_char_idx < node.end_char_idx


@pytest.mark.parametrize("tokenizer", COUNTERS, ids=lambda f: f.__name__)
@FAST
@given(doc=documents, cap=st.integers(16, 96))
def test_html_keeps_every_word_under_the_cap(tokenizer, doc, cap):
    page, _ = to_html(doc)
    nodes = parse(StructuredHTMLNodeParser, page, tokenizer, cap)
    check(nodes, input_words(doc), page, cap, lambda t: len(tokenizer(t)))
    joined = "\n".join(n.text for n in nodes)
    assert "Menu" not in joined.split() and "Legal" not in joined.split()


@FAST
@given(doc=documents, cap=st.integers(24, 128))
def test_tables_that_fit_are_kept_whole(doc, cap):
    for render, parser_class in ((to_markdown, StructuredMarkdownNodeParser),
                                 (to_html, StructuredHTMLNodeParser)):  # fmt: skip
        text, tables_ = render(doc)
        nodes = parse(parser_class, text, whitespace_tokens, cap, count_metadata=False)
        for table in tables_:
            if len(table.split()) <= cap:
                assert any(table in n.text for n in nodes), table


@settings(FAST, max_examples=10)
@given(doc=documents, cap=st.integers(32, 128))
def test_the_cap_holds_with_the_real_tokenizer(minilm_path, doc, cap):
    from llama_index_ragtune.node_parser.tokens import HFTokenCounter

    count = HFTokenCounter(minilm_path)
    for render, parser_class in ((to_markdown, StructuredMarkdownNodeParser),
                                 (to_html, StructuredHTMLNodeParser)):  # fmt: skip
        text, _ = render(doc)
        nodes = parse(parser_class, text, minilm_path, cap)
        check(nodes, input_words(doc), text, cap, count)


_ANY_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=400
)


@FAST
@given(text=_ANY_TEXT, cap=st.integers(8, 64))
def test_any_text_parses_or_is_refused_as_binary(text, cap):
    for parser_class in (StructuredMarkdownNodeParser, StructuredHTMLNodeParser):
        try:
            nodes = parse(parser_class, text, whitespace_tokens, cap, count_metadata=False)
        except DocumentParseError as err:
            assert "non-printable" in str(err)  # the only refusal for decoded text
            continue
        for node in nodes:
            assert len(node.text.split()) <= cap
        assert sum(len(n.text) for n in nodes) <= GROWTH * len(text) + SLACK
