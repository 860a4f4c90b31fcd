"""Regression tests from a hostile-input battery of pathological sizes, line ends, edge
structure and bytes: a tag left open at the end of a page (a cut-off file), a quoted line of
thousands of container markers split into many parts."""

from __future__ import annotations

import logging
import struct

import pytest
from llama_index.core import Document
from llama_index.core.schema import MediaResource
from np_helpers import whitespace_tokens

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.node_parser import (
    DocumentParseError,
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
    containers,
    text_encoding,
)
from llama_index_ragtune.node_parser.html_text import for_html_parser
from llama_index_ragtune.pipeline.sources import read_documents

FEATURES = ["lxml", "html.parser"]


def parse(parser_class, text, doc_id="doc", chunk_size=64, **kwargs):
    parser = parser_class(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False, **kwargs
    )
    return parser.get_nodes_from_documents([Document(text=text, id_=doc_id)])


# ------------------------------------------------------- a tag left open at the end


@pytest.mark.parametrize("features", FEATURES)
def test_a_tag_left_open_at_the_end_is_dropped_as_browsers_drop_it_and_named(caplog, features):
    # html.parser showed the cut-off tag as text ("<img alt='A picture ..."), lxml dropped
    # it and the text after it without a word
    page = (
        "<h1>Fees</h1><p>Card fees are listed below.</p>"
        "<p>More <img alt='A picture of the fee table with its many rows"
    )
    with caplog.at_level(logging.WARNING):
        nodes = parse(StructuredHTMLNodeParser, page, doc_id="cut.html", parser_features=features)
    assert [node.text for node in nodes] == ["# Fees\n\nCard fees are listed below.\n\nMore"]
    [record] = [r for r in caplog.records if "never closed" in r.getMessage()]
    message = record.getMessage()
    assert f"'cut.html': a <img tag opened at character {page.index('<img')}" in message
    assert "cut off" in message


@pytest.mark.parametrize("features", FEATURES)
def test_a_short_unclosed_tag_is_dropped_quietly_and_closed_tags_keep_their_text(caplog, features):
    with caplog.at_level(logging.WARNING):
        cut = parse(
            StructuredHTMLNodeParser, "<p>keep <b>bold</b> text <i", parser_features=features
        )
        whole = parse(StructuredHTMLNodeParser, "<p>a < b</p> 3 <4 <", parser_features=features)
    assert [node.text for node in cut] == ["keep bold text"]
    assert [node.text for node in whole] == ["a < b\n\n3 <4 <"]  # no letter after "<": text
    assert not [r for r in caplog.records if "never closed" in r.getMessage()]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("opener", ["<plaintext>", "<xmp>"])
def test_a_less_than_sign_in_raw_text_left_open_is_text_not_a_tag(caplog, features, opener):
    page = f"<p>Intro.</p>{opener}if a <b then c d e f g h"
    with caplog.at_level(logging.WARNING):
        nodes = parse(StructuredHTMLNodeParser, page, parser_features=features)
    assert "if a <b then c d e f g h" in nodes[0].text
    assert not [r for r in caplog.records if "never closed" in r.getMessage()]


def test_a_run_of_unclosed_tags_reaches_html_parser_cut_in_linear_time():
    # html.parser read to the end of the page again at every "<a" with no ">" after it:
    # 100 KB of such text took 3.5 s, 400 KB 87 s
    page = "<p>kept</p>" + "<a " * 100_000
    assert for_html_parser(page) == "<p>kept</p>"
    # a ">" at the end closes one giant tag: left for the parser, which reads it once
    assert for_html_parser(page + ">") == page + ">"


# ------------------------------------------- container prefixes read once per line


class _CountingPattern:
    """A compiled pattern that counts the characters its ``match`` calls consume."""

    def __init__(self, pattern):
        self.pattern, self.characters = pattern, 0

    def match(self, text, pos=0, *args):
        found = self.pattern.match(text, pos, *args)
        self.characters += found.end() - pos if found else 0
        return found


@pytest.mark.parametrize("line", ["> - ", "> "])
def test_a_quoted_line_of_thousands_of_markers_is_read_once_however_many_parts(monkeypatch, line):
    # each part of the line re-read its container prefix from the line's start: quadratic
    # (10,000 "> - " took 1.8 s, 40,000 would take half a minute)
    for name in ("CONTAINER_PREFIX", "_QUOTE_MARKERS"):
        monkeypatch.setattr(containers, name, _CountingPattern(getattr(containers, name)))
    text = line * 8_000 + "x y z\n"
    nodes = parse(StructuredMarkdownNodeParser, text, chunk_size=16)
    assert len(nodes) > 100
    read = containers.CONTAINER_PREFIX.characters + containers._QUOTE_MARKERS.characters
    assert read <= 2 * len(text)
    assert sum(node.text.count("x y z") for node in nodes) == 1


# ------------------------------------------------ bytes behind a byte-order mark


def _binary_units(count: int, low: int = 1, high: int = 0x10000) -> list[int]:
    """16-bit values spread like binary data, without the surrogates a decoder would refuse."""
    values, state = [], 12345
    while len(values) < count:
        state = (state * 1103515245 + 12345) % 2**31
        value = low + state % (high - low)
        if not 0xD800 <= value < 0xE000:
            values.append(value)
    return values


BINARY_AFTER_A_MARK = {
    "utf-16-le": b"\xff\xfe" + struct.pack("<2000H", *_binary_units(2000)),
    "utf-16-be": b"\xfe\xff" + struct.pack(">2000H", *_binary_units(2000)),
    "utf-16 small integers": b"\xff\xfe" + struct.pack("<500H", *_binary_units(500, 256, 30000)),
    "utf-32-le": b"\xff\xfe\x00\x00" + struct.pack("<500I", *_binary_units(500)),
}


@pytest.mark.parametrize("name", BINARY_AFTER_A_MARK)
def test_binary_data_after_a_utf16_or_utf32_mark_is_refused_naming_the_file(tmp_path, name):
    # was: decoded into nodes of characters of every script (CJK, Yi, private use, ...)
    data = BINARY_AFTER_A_MARK[name]
    (tmp_path / "scan.md").write_bytes(data)
    with pytest.raises(DataError, match="byte-order mark but is binary data") as caught:
        read_documents(tmp_path)
    assert "scan.md" in str(caught.value)
    assert "leave it out" in str(caught.value) and "iconv" not in str(caught.value)
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=64)
    document = Document(text_resource=MediaResource(data=data), id_="scan.md")
    with pytest.raises(DocumentParseError, match="binary data") as caught:
        parser.get_nodes_from_documents([document])
    assert caught.value.document_id == "scan.md"


@pytest.mark.parametrize(
    "text",
    [
        "# 返品\n\n東京の返品ポリシー：商品到着後30日以内であれば返品できます。" * 20,
        "นโยบายการคืนสินค้า สามารถคืนสินค้าได้ภายใน 30 วัน" * 20,
        "".join(chr(0x4E00 + i) for i in range(3000)),  # ideographs without punctuation
        "Icons \ue001\ue002 in a private-use font, and a new emoji \U0001fae8 " * 20,
    ],
)
@pytest.mark.parametrize("codec", ["utf-16", "utf-32"])
def test_text_behind_a_utf16_or_utf32_mark_is_still_read(tmp_path, text, codec):
    (tmp_path / "doc.md").write_bytes(text.encode(codec))
    assert read_documents(tmp_path)[0].text == text
    assert text_encoding.reads_as_text(text)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_mark_is_named_as_such_not_as_a_pdf(tmp_path, codec):
    # was: "contains NUL bytes: it looks like binary content (a PDF, image or archive)"
    (tmp_path / "notes.md").write_bytes("# Notes\r\n\r\nReturns within 30 days.\r\n".encode(codec))
    name = codec.upper().replace("-LE", "LE").replace("-BE", "BE")
    with pytest.raises(DataError, match=f"{name} text without a byte-order mark") as caught:
        read_documents(tmp_path)
    assert "notes.md" in str(caught.value) and "iconv -f UTF-16" in str(caught.value)
    # binary content with NUL bytes is still named as binary
    (tmp_path / "notes.md").write_bytes(b"%PDF-1.4\x00\x01\x02\x03 stream\x00\x00 obj")
    with pytest.raises(DataError, match="looks like binary content"):
        read_documents(tmp_path)


# ------------------------------------------- a long heading without counted metadata


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
@pytest.mark.parametrize("include", [True, False])
def test_a_long_heading_is_clipped_in_the_metadata_also_when_metadata_is_not_counted(
    parser_class, include
):
    # with count_metadata=False the whole heading went into section_path and section_title
    # of each of its nodes: 60 KB on each of 313 nodes (a 1 MB heading: gigabytes)
    heading = "_a " * 6_000
    text = (
        f"# {heading}\n\ntext\n"
        if parser_class is StructuredMarkdownNodeParser
        else f"<h1>{heading}</h1><p>text</p>"
    )
    parser = parser_class(
        tokenizer=whitespace_tokens, chunk_size=64, count_metadata=False, include_metadata=include
    )
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="doc")])
    assert len(nodes) > 50
    if include:
        for node in nodes:
            assert len(node.metadata["section_path"].split()) <= 64  # the cap, not 6,000 words
            assert node.metadata["section_path"].endswith("…")
            assert node.metadata["section_title"] == node.metadata["section_path"]
    else:
        assert all("section_path" not in node.metadata for node in nodes)
    assert sum(node.text.count("_a") for node in nodes) == 6_000  # the text keeps it all
    # a heading that fits is not touched
    short = parser.get_nodes_from_documents([Document(text=text.replace(heading, "Fees"))])
    assert [node.metadata.get("section_path") for node in short] == (
        ["Fees"] if include else [None]
    )


# ------------------------------------------- a heading wrapped in a raw HTML block


def test_a_heading_leading_a_raw_html_block_opens_its_section():
    # READMEs centre their title: <div align="center"><h1>...</h1>...</div> was an "html"
    # block and the section_path of everything under it left out the title
    text = (
        '<div align="center">\n  <!-- logo -->\n  <h1>Fresh<b>Mart</b></h1>\n'
        "  <p>Groceries, fast.</p>\n</div>\n\nWelcome text.\n\n## Refunds\n\nWithin 30 days.\n"
    )
    nodes = parse(StructuredMarkdownNodeParser, text, chunk_size=12)
    assert [node.metadata["section_path"] for node in nodes] == ["FreshMart", "FreshMart > Refunds"]
    assert nodes[0].text.startswith('<div align="center">')  # the source is kept
    assert "Groceries, fast." in nodes[0].text


@pytest.mark.parametrize(
    "block",
    [
        "<div>\n<h2>Two</h2>\n<h2>Headings</h2>\n</div>",  # two headings: left as HTML
        "<div>\nIntro words\n<h2>Late</h2>\n</div>",  # text before the heading
        "<div>\n<img src='l.png' alt='Logo'>\n<h2>Late</h2>\n</div>",  # an image before it
        "<div>\n<!-- <h2>Old</h2>\n</div>",  # a heading commented out
    ],
)
def test_a_raw_html_block_whose_heading_does_not_lead_it_stays_html(block):
    nodes = parse(StructuredMarkdownNodeParser, f"{block}\n\nAfter.\n")
    assert [node.metadata["section_path"] for node in nodes] == [""]
    assert nodes[0].metadata["block_types"].startswith("html")


# ------------------------------------------------ HTML that breaks out of svg / math


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("page", "text"),
    [
        (  # an inline icon left unclosed: the page after it was dropped with the svg
            "<p>Intro.</p><svg class='icon'><path d='M0 0'><h1>Refunds</h1><p>Within 30 days.</p>",
            ["Intro.", "# Refunds\n\nWithin 30 days."],
        ),
        (  # a <div> inside an svg is page content
            "<p>a</p><svg><title>Logo</title><div>Inside words</div></svg><p>After words</p>",
            ["a\n\nLogo\n\nInside words\n\nAfter words"],
        ),
        (  # lxml ignored </svg> after a <th> and swallowed the paragraph
            "<svg><title>Chart</title><th></svg><p>Prices rose.</p>",
            ["Chart\n\nPrices rose."],
        ),
        (  # MathML: a paragraph ends the formula, a token element keeps its HTML
            "<p>Area <math><mi><b>r</b></mi><p>Radius words.</p>",
            ["Area r\n\nRadius words."],
        ),
    ],
)
def test_html_elements_break_out_of_svg_and_math_as_in_browsers(features, page, text):
    nodes = parse(StructuredHTMLNodeParser, page, parser_features=features)
    assert [node.text for node in nodes] == text


@pytest.mark.parametrize("features", FEATURES)
def test_an_unclosed_svg_before_thousands_of_paragraphs_keeps_them_all(features):
    page = "<svg><path d='M0'>" + "".join(f"<p>para {i}</p>" for i in range(3_000))
    nodes = parse(StructuredHTMLNodeParser, page, parser_features=features)
    assert sum(node.text.count("para") for node in nodes) == 3_000


def test_a_stray_character_reference_start_does_not_hide_a_later_xmp_from_html_parser():
    # html.parser stops tokenizing at "&#" + space: the xmp after it was not escaped and its
    # markup was lost
    page = "<p>Item &# 5</p><xmp><th>literal</th></xmp>"
    for features in FEATURES:
        nodes = parse(StructuredHTMLNodeParser, page, parser_features=features)
        assert [node.text for node in nodes] == ["Item &# 5\n\n```\n<th>literal</th>\n```"]
