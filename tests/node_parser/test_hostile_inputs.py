"""Regression tests for hostile and degenerate documents: deep nesting, hidden-in-plain-sight
text, glued words, units longer than the cap, span abuse, and bad documents in a batch."""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import MetadataMode
from np_helpers import missing_html_words, visible_html_strings, whitespace_tokens

from llama_index_ragtune.node_parser import (
    DocumentParseError,
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)

FEATURES = ["lxml", "html.parser"]


def html_nodes(html: str, chunk_size: int = 64, doc_id: str = "page", **kwargs):
    parser = StructuredHTMLNodeParser(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False, **kwargs
    )
    return parser.get_nodes_from_documents([Document(text=html, id_=doc_id)])


def md_nodes(text: str, chunk_size: int = 64, doc_id: str = "doc", **kwargs):
    parser = StructuredMarkdownNodeParser(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False, **kwargs
    )
    return parser.get_nodes_from_documents([Document(text=text, id_=doc_id)])


def joined(nodes) -> str:
    return "\n".join(n.text for n in nodes)


def output_size(nodes) -> int:
    return sum(len(n.text) for n in nodes)


# ------------------------------------------------------------------ deep nesting


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("depth", [600, 5000])
def test_deeply_nested_divs_parse_without_recursion(features, depth):
    html = "<div>" * depth + "<p>deep text</p>" + "</div>" * depth + "<p>after</p>"
    nodes = html_nodes(html, parser_features=features)
    assert joined(nodes) == "deep text\n\nafter"


@pytest.mark.parametrize("features", FEATURES)
def test_deeply_nested_tables_keep_every_cell(features):
    depth = 300
    html = "".join(f"<table><tr><td>c{i}</td><td>" for i in range(depth))
    html += "core" + "</td></tr></table>" * depth
    nodes = html_nodes(html, parser_features=features)
    words = joined(nodes).split()
    assert [f"c{i}" for i in range(depth)] + ["core"] == [w for w in words if w[0] == "c"]


@pytest.mark.parametrize("features", FEATURES)
def test_deeply_nested_lists_and_quotes_keep_text_with_bounded_output(features):
    depth = 2000
    lists = "<ul><li>item" * depth + "</li></ul>" * depth
    quotes = "<blockquote><p>quote</p>" * depth + "</blockquote>" * depth
    for html, word in ((lists, "item"), (quotes, "quote")):
        nodes = html_nodes(html, parser_features=features)
        assert joined(nodes).split().count(word) == depth
        assert output_size(nodes) <= len(html)  # indentation stops growing at MAX_NESTING
        assert all(len(n.text.split()) <= 64 for n in nodes)


def test_deep_markdown_lists_and_quotes():
    lists = "\n".join("  " * i + f"- item{i}" for i in range(600))
    quotes = "> " * 600 + "deep quote"
    mixed = "".join("> - " for _ in range(300)) + "bottom"
    for text in (lists, quotes, mixed):
        nodes = md_nodes(text, chunk_size=32)
        squashed = "".join(joined(nodes).split())
        assert "".join(text.split()) == squashed  # all of the source, in order
        assert all(len(n.text.split()) <= 32 for n in nodes)


# ------------------------------------------------------------ no visible text lost


def test_image_alt_text_figures_and_captions_are_kept():
    html = (
        "<p>See <img src=flow.png alt='the return flow diagram'> below.</p>"
        "<figure><img src=a.png alt='Opened box'><figcaption>Figure 2: packing</figcaption>"
        "</figure><p><a href=/><img src=logo.png alt=Home></a></p>"
    )
    text = joined(html_nodes(html))
    assert "See the return flow diagram below." in text
    for words in ("Opened box", "Figure 2: packing", "Home"):
        assert words in text


def test_footnote_asides_are_kept_and_sidebars_dropped():
    # docutils >= 0.18 / Sphinx footnote markup, as in the Python library reference
    html = (
        '<div class="body" role="main"><section id="os"><h1>os</h1>'
        '<p>Returns the path.<a class="footnote-reference" href="#id2">1</a></p>'
        '<aside class="footnote-list brackets">'
        '<aside class="footnote brackets" id="id2" role="doc-footnote">'
        '<span class="label">1</span><p>On Windows, the path uses backslashes.</p>'
        "</aside></aside></section></div>"
        '<aside class="sidebar-ads"><p>Buy now</p></aside>'
        '<div class="sphinxsidebar" role="navigation"><p>Previous topic</p></div>'
    )
    text = joined(html_nodes(html))
    assert "On Windows, the path uses backslashes." in text
    assert "Buy now" not in text and "Previous topic" not in text
    # pandoc puts end notes in an aside with role="doc-endnotes", anywhere on the page
    pandoc = '<p>Text.</p><aside role="doc-endnotes"><ol><li>The end note.</li></ol></aside>'
    assert "The end note." in joined(html_nodes(pandoc))


@pytest.mark.parametrize(
    "classes",
    ["note", "notes", "callout", "tip", "warning", "admonition note", "callout callout-tip",
     "markdown-alert markdown-alert-warning", "footnotes"],
)  # fmt: skip
def test_note_and_admonition_asides_are_kept_and_sidebars_dropped(classes):
    # a page-level aside that is a note by its class was dropped as a sidebar
    html = (
        f'<p>Returns within 30 days.</p><aside class="{classes}"><p>Keep the receipt.</p></aside>'
        '<aside class="sidebar-ads"><p>Buy now</p></aside><aside class="related">Related</aside>'
        '<aside class="tooltip-help">Help</aside><aside class="notebook-promo">Laptops</aside>'
    )
    assert [n.text for n in html_nodes(html)] == ["Returns within 30 days.\n\nKeep the receipt."]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (  # the title is the svg's accessible name, kept as an image's alt text
            "<p>See the <svg role='img'><title>Returns flow chart</title><text x='4'>Start</text>"
            "<text x='40'>Refund</text></svg> below.</p>",
            ["See the Returns flow chart below."],
        ),
        (  # aria-label names it before its title
            "<p>Stock: <svg aria-label='In  stock'><title>dot</title><circle r='4'/></svg></p>",
            ["Stock: In stock"],
        ),
        (
            "<h2><svg><title>Warning</title><path d='M0 0'/></svg> Recalls</h2><p>None.</p>",
            ["## Warning Recalls\n\nNone."],
        ),
        (  # a chart's labels, a decorative or hidden icon, an unnamed one: no text
            "<p>Sales <svg><text>0</text><text>10</text><text>Jan</text></svg>"
            "<svg aria-hidden='true'><title>Copy</title></svg>"
            "<svg role='presentation'><title>Star</title></svg><svg><path d='M0 0'/></svg> up</p>",
            ["Sales up"],
        ),
    ],
)
def test_an_inline_svg_leaves_its_accessible_name_not_its_labels(html, expected, features):
    assert [n.text for n in html_nodes(html, parser_features=features)] == expected


def test_details_definition_lists_ruby_and_text_in_unusual_containers():
    html = (
        "<details><summary>Shipping</summary><p>Two days.</p></details>"
        "<dl><div><dt>Term</dt><dd>Definition<p>second line</p></dd></div>loose</dl>"
        "<p><ruby>漢字<rp>(</rp><rt>かんじ</rt><rp>)</rp></ruby></p>"
        "<table>before rows<tr>inside row<td>a</td><td>b</td></tr></table>"
        "<ul>list text<li>item</li></ul>"
    )
    for features in FEATURES:
        nodes = html_nodes(html, parser_features=features)
        text = joined(nodes)
        for words in ["Shipping", "Two days.", "Term", ": Definition", "second line", "loose",
                      "漢字", "かんじ", "before rows inside row", "| a | b |", "list text",
                      "- item"]:  # fmt: skip
            assert words in text, (features, words)
        assert missing_html_words(visible_html_strings(html), [n.text for n in nodes]) == []


def test_a_form_that_holds_the_page_is_content_but_its_controls_are_not():
    html = (
        "<form action=/page><div><h1>Returns</h1><p>Bring the receipt.</p>"
        "<input value=query><button>Send</button></div></form>"
        "<form action=/newsletter><label>Our newsletter</label><input></form>"
    )
    assert joined(html_nodes(html)) == "# Returns\n\nBring the receipt."


# ------------------------------------------------------------------- glued words


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<h2>Title<div>Subtitle</div></h2>", "## Title Subtitle"),
        ("<h2>Title<br>Subtitle</h2>", "## Title Subtitle"),
        ("<h2>Title<p>Sub</p>title</h2>", "## Title Sub title"),
        ("<h3><span>Part</span><ul><li>one</li><li>two</li></ul></h3>", "### Part one two"),
        ("<p>Line<br>break</p>", "Line\nbreak"),
        ("<div>Alpha<div>Beta</div>Gamma</div>", "Alpha\n\nBeta\n\nGamma"),
        ("<dl><dt>Term<div>More</div></dt><dd>x</dd></dl>", "Term More\n: x"),
    ],
)
@pytest.mark.parametrize("features", FEATURES)
def test_block_boundaries_and_breaks_never_glue_words(html, expected, features):
    text = joined(html_nodes(html, parser_features=features))
    if features == "html.parser":  # keeps the tree as written
        assert text == expected
    else:  # lxml may move a block out of a heading; the words still stay apart
        assert text.replace("#", " ").split() == expected.replace("#", " ").split()


def test_table_cells_never_glue_words():
    html = (
        "<table><tr><th>Item</th><th>Note</th></tr>"
        "<tr><td>Box<div>large</div></td><td>fits<br>two<p>lines</p></td></tr></table>"
    )
    assert "| Box large | fits two lines |" in joined(html_nodes(html))


# ------------------------------------------------------------ units over the cap

LONG = " ".join(f"w{i}" for i in range(300))
SENTENCES = " ".join(f"Sentence {i} has five words." for i in range(60))


@pytest.mark.parametrize(
    "html",
    [
        f"<ul><li>{LONG}</li><li>short</li></ul>",
        f"<table><tr><th>A</th><th>B</th></tr><tr><td>{LONG}</td><td>x</td></tr></table>",
        f"<dl><dt>Term</dt><dd>{LONG}</dd></dl>",
        f"<pre>{LONG}</pre>",
        f"<p>{LONG}</p>",
        f"<p>{SENTENCES}</p>",
        f"<h2>{LONG}</h2><p>body</p>",
        f"<blockquote>{LONG}</blockquote>",
    ],
)
def test_html_units_longer_than_the_cap_are_split_and_marked(html):
    nodes = html_nodes(html, chunk_size=40)
    assert len(nodes) > 1
    assert all(len(n.text.split()) <= 40 for n in nodes)
    assert not any(n.metadata["oversized"] for n in nodes)
    assert any(n.metadata["partial_unit"] for n in nodes) == (html != f"<p>{SENTENCES}</p>")
    text = joined(nodes)
    source = LONG if "w0" in html else SENTENCES
    assert all(w in text.split() for w in source.split())
    assert [w for w in text.split() if w in set(source.split())] == source.split()


@pytest.mark.parametrize(
    "text",
    [
        f"- {LONG}\n- short",
        f"| A | B |\n| --- | --- |\n| {LONG} | x |",
        f"```\n{LONG}\n```",
        f"    {LONG}",
        LONG,
        f"# {LONG}\n\nbody",
        f"> {LONG}",
        "x" * 50_000,
    ],
)
def test_markdown_units_longer_than_the_cap_are_split_and_marked(text):
    nodes = md_nodes(text, chunk_size=40)
    assert all(len(n.text.split()) <= 40 for n in nodes)
    assert not any(n.metadata["oversized"] for n in nodes)
    if len(text.split()) > 40:
        assert any(n.metadata["partial_unit"] for n in nodes)
    squashed = "".join(joined(nodes).split())
    for word in text.split():
        assert word in squashed


def test_a_giant_word_is_cut_at_characters_under_the_real_tokenizer_cap(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    # one whitespace-free "word" (a long URL) of about 1,600 word pieces
    word = "https://example.com/" + "/".join(f"part{i}" for i in range(400))
    parser = StructuredMarkdownNodeParser(tokenizer=minilm_path, chunk_size=64)
    nodes = parser.get_nodes_from_documents([Document(text=f"# Log\n\n{word}", id_="log")])
    assert len(nodes) > 10
    for node in nodes:
        content = node.get_content(MetadataMode.EMBED)
        assert len(tokenizer(content, add_special_tokens=False)["input_ids"]) <= 64
        assert not node.metadata["oversized"]
    assert "".join(n.text for n in nodes).replace("# Log", "").replace("\n", "") == word
    assert all(n.metadata["partial_unit"] for n in nodes[1:])


# --------------------------------------------------------------- bounded output


def test_colspan_1000_does_not_explode_a_small_page():
    rows = "".join("<tr>" + "<td colspan=1000>abc</td>" * 3 + "</tr>" for _ in range(100))
    html = f"<h2>Prices</h2><table>{rows}</table>"
    nodes = html_nodes(html, chunk_size=254)
    assert output_size(nodes) <= 3 * len(html)
    assert joined(nodes).count("abc") == 300  # every cell kept, once


def test_rowspan_abuse_does_not_explode():
    html = (
        "<table><tr>" + "<td rowspan=65534>span</td>" * 200 + "</tr>"
        + "<tr><td>x</td></tr>" * 2000 + "</table>"
    )  # fmt: skip
    nodes = html_nodes(html, chunk_size=254)
    assert output_size(nodes) <= 3 * len(html)
    assert joined(nodes).split().count("x") == 2000


def test_small_spans_are_still_copied_into_every_slot():
    html = (
        "<table><tr><th>Method</th><th>Where</th><th>Time</th></tr>"
        "<tr><td rowspan=2>Card</td><td>Store</td><td>3 days</td></tr>"
        "<tr><td>Online</td><td>5 days</td></tr>"
        "<tr><td>Gift</td><td colspan=2>Instantly</td></tr></table>"
    )
    assert joined(html_nodes(html)).endswith(
        "| Card | Store | 3 days |\n| Card | Online | 5 days |\n| Gift | Instantly | Instantly |"
    )


def test_a_table_header_too_large_to_repeat_is_not_repeated():
    header = "".join(f"<th>column {i} with a long descriptive name</th>" for i in range(12))
    rows = "".join(f"<tr><td>r{i}</td><td>v{i}</td></tr>" for i in range(400))
    html = f"<table><thead><tr>{header}</tr></thead>{rows}</table>"
    nodes = html_nodes(html, chunk_size=128)
    assert all(len(n.text.split()) <= 128 for n in nodes)
    assert joined(nodes).count("column 0 with") == 1
    assert output_size(nodes) <= 2 * len(html)


def test_a_small_header_is_repeated_in_every_part_of_a_split_table():
    rows = "".join(f"<tr><td>r{i}</td><td>v{i}</td></tr>" for i in range(400))
    html = f"<table><thead><tr><th>Key</th><th>Value</th></tr></thead>{rows}</table>"
    nodes = html_nodes(html, chunk_size=128)
    assert len(nodes) > 5 and all(
        n.text.startswith("| Key | Value |\n| --- | --- |") for n in nodes
    )


def test_huge_ordered_list_start_does_not_inflate_markers():
    html = '<ol start="' + "9" * 4000 + '">' + "<li>x</li>" * 500 + "</ol>"
    assert output_size(html_nodes(html, chunk_size=254)) <= len(html)


# ---------------------------------------------------------- bad documents in a batch


def _batch(bad: Document) -> list[Document]:
    return [
        Document(text="# Returns\n\nWithin 30 days.", id_="good-1"),
        bad,
        Document(text="# Delivery\n\nTwo days.", id_="good-2"),
    ]


def test_an_overlong_heading_does_not_break_an_ingestion_pipeline_batch():
    heading = " ".join(f"heading{i}" for i in range(2000))
    bad = Document(text=f"# {heading}\n\nThe body.", id_="long-heading", metadata={"k": "v"})
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=64)
    nodes = IngestionPipeline(transformations=[parser]).run(documents=_batch(bad))
    assert {n.ref_doc_id for n in nodes} == {"good-1", "long-heading", "good-2"}
    for node in nodes:
        assert len(node.get_content(MetadataMode.EMBED).split()) <= 64
    long = [n for n in nodes if n.ref_doc_id == "long-heading"]
    assert all(n.metadata["section_path"].endswith("\u2026") for n in long)
    assert len(long[0].metadata["section_path"].split()) <= 32  # half of the cap at most
    squashed = "".join(joined(long).split())
    assert all(f"heading{i}" in squashed for i in range(2000)) and "Thebody." in squashed


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_on_error_skip_parses_the_others_and_warns_naming_the_bad_one(parser_class, caplog):
    parser = parser_class(tokenizer=whitespace_tokens, chunk_size=64, on_error="skip")
    bad = Document(text="PK\x03\x04\x00\x00binary", id_="upload.zip")
    with caplog.at_level(logging.WARNING):
        nodes = IngestionPipeline(transformations=[parser]).run(documents=_batch(bad))
    assert {n.ref_doc_id for n in nodes} == {"good-1", "good-2"}
    assert "upload.zip" in caplog.text and "NUL" in caplog.text


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_on_error_raise_is_the_default_and_names_the_document(parser_class):
    parser = parser_class(tokenizer=whitespace_tokens, chunk_size=64)
    assert parser.on_error == "raise"
    bad = Document(text="%PDF-1.7\x00\x01", id_="report.pdf")
    with pytest.raises(DocumentParseError, match="'report.pdf'") as info:
        IngestionPipeline(transformations=[parser]).run(documents=_batch(bad))
    assert info.value.document_id == "report.pdf"
    # lone surrogates (a lossy decode); LlamaIndex's pipeline cache cannot hash them, so
    # such a batch goes through the parser directly or with disable_cache=True
    lossy = Document(text="caf\udce9 menu", id_="menu.txt")
    with pytest.raises(DocumentParseError, match="'menu.txt'.*undecodable"):
        IngestionPipeline(transformations=[parser], disable_cache=True).run(documents=_batch(lossy))


class _FailingParser(StructuredMarkdownNodeParser):
    """A parser whose block step fails on one document (as a bug or a library error would)."""

    def _document_blocks(self, text):
        if "boom" in text:
            raise KeyError("unexpected")
        return super()._document_blocks(text)


def test_an_unexpected_failure_is_wrapped_with_the_document_id_or_skipped(caplog):
    bad = Document(text="boom", id_="doc-7")
    with pytest.raises(DocumentParseError, match="'doc-7'.*KeyError") as info:
        _FailingParser(tokenizer=whitespace_tokens, chunk_size=64)(_batch(bad))
    assert isinstance(info.value.__cause__, KeyError)
    skip = _FailingParser(tokenizer=whitespace_tokens, chunk_size=64, on_error="skip")
    with caplog.at_level(logging.WARNING):
        assert {n.ref_doc_id for n in skip(_batch(bad))} == {"good-1", "good-2"}
    assert "doc-7" in caplog.text


def test_a_configuration_error_is_raised_even_with_skip(tmp_path):
    parser = StructuredMarkdownNodeParser(tokenizer=str(tmp_path / "missing"), on_error="skip")
    with pytest.raises(FileNotFoundError, match="missing"):
        parser(_batch(Document(text="fine", id_="x")))


# ----------------------------------------------------------- degenerate documents


@pytest.mark.parametrize("text", ["", " \n\t ", "<!-- only a comment -->", "---", "\ufeff"])
def test_empty_markdown_gives_no_nodes(text):
    assert md_nodes(text) == []


@pytest.mark.parametrize(
    "html",
    ["", "   ", "<html></html>", "<html><head><title>T</title></head></html>", "<!-- c -->",
     "<script>x()</script>", "<table></table>", "<ul><li></li></ul>"],
)  # fmt: skip
def test_empty_html_gives_no_nodes(html):
    assert html_nodes(html) == []


def test_html_without_body_or_html_tags_and_malformed_html():
    assert joined(html_nodes("Just text, no tags at all.")) == "Just text, no tags at all."
    html = "<p>one<div>two</span></div></table>three<li>four<td>five</b></i><h2>six"
    for features in FEATURES:
        nodes = html_nodes(html, parser_features=features)
        words = joined(nodes).replace("#", " ").replace("-", " ").split()
        assert words == ["one", "two", "three", "four", "five", "six"], features


def test_unclosed_code_fence_runs_to_the_end_as_code():
    text = "# Setup\n\n```python\nimport os\n\n# not a heading\nprint(os.sep)"
    nodes = md_nodes(text)
    assert [n.metadata["section_path"] for n in nodes] == ["Setup"]
    assert nodes[0].text == text and nodes[0].metadata["block_types"] == "heading,code"


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_huge_single_line_is_split_under_the_cap(parser_class):
    # its time is measured by `ragtune bench hostile`, not asserted here
    text = " ".join(f"w{i}" for i in range(100_000))  # ~690 KB on one line
    parser = parser_class(tokenizer=whitespace_tokens, chunk_size=254, count_metadata=False)
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="line")])
    assert "".join(joined(nodes).split()) == "".join(text.split())
    assert all(len(n.text.split()) <= 254 for n in nodes)
