"""Round s44: headings that lxml or the Markdown parser lost.

- ``<h2><p>Shipping</p></h2>`` (rich-text editors, Word and wiki exports): lxml ended the
  heading at the ``<p>``, so the section had no title and its text went under the previous
  heading; now both tree builders read it as browsers do, in linear time;
- an accordion's question, ``<h3><button>Question</button></h3>`` (WAI-ARIA, Bootstrap), in a
  heading, ``dt``, ``summary`` or ARIA heading was dropped as a form control with its button:
  the answers went under the previous heading; a button holding all of such a title is kept;
- ``<div role="heading" aria-level="2">`` (single-page apps) opened no section;
- a raw HTML heading in Markdown whose image has an unquoted ``alt`` (``<img alt=Acme>``)
  is titled by it (it was kept as a paragraph: no section).
"""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Document

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser
from llama_index_ragtune.node_parser.html_lxml_repairs import nest_paragraphs_in_headings
from llama_index_ragtune.node_parser.markdown_headings import html_heading

BUILDERS = ["lxml", "html.parser"]


def _sections(parser, text: str) -> list[tuple[str, str]]:
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="page.html")])
    return [(node.metadata["section_path"], node.text) for node in nodes]


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_paragraph_inside_a_heading_stays_its_title(builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    page = (
        "<h1>Help</h1><h2><p>Shipping times</p></h2><p>Orders ship in two days.</p>"
        "<h2 class=x><P>Returns</P><p>and refunds</p></h2><p>Within thirty days.</p>"
    )
    sections = _sections(parser, page)
    assert [path for path, _ in sections] == [
        "Help > Shipping times",
        "Help > Returns and refunds",
    ]
    assert sections[0][1].endswith("## Shipping times\n\nOrders ship in two days.")
    assert sections[1][1] == "## Returns and refunds\n\nWithin thirty days."


@pytest.mark.parametrize("builder", BUILDERS)
def test_both_builders_agree_on_block_syntax_in_a_nested_paragraph(builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    assert _sections(parser, "<h2><p># Title</p></h2><p>body</p>") == [
        ("# Title", "## # Title\n\nbody")
    ]
    # an unclosed <p> in a closed heading ends with it, as in browsers
    assert _sections(parser, "<h2>Title<p>more</h2><p>body</p>")[0][0] == "Title more"


def test_headings_without_paragraphs_and_literal_markup_are_unchanged():
    unchanged = [
        "<h2>Shipping</h2><p>Two days.</p>",
        "<xmp><h2><p>shown as written</p></h2></xmp>",
        "<h2><!-- <p> -->Title</h2><p>x</p>",
        "<h2><p>never closed",
        "<pre>&lt;h2&gt;&lt;p&gt;</pre>",
    ]
    for markup in unchanged:
        assert nest_paragraphs_in_headings(markup) == markup
    assert nest_paragraphs_in_headings("<h3>a<p>b</p></h2>") == "<h3>a<div>b</div></h2>"
    assert nest_paragraphs_in_headings("<h3>a<p>b</h3>") == "<h3>a<div>b</div></h3>"


def test_many_headings_each_keep_their_paragraph_title():
    n = 2_000
    page = "".join(f"<h2><p>Topic {i}</p></h2><p>body {i}</p>" for i in range(n))
    repaired = nest_paragraphs_in_headings(page)
    assert repaired.count("<div>") == n and repaired.count("<p>") == n
    assert nest_paragraphs_in_headings("<h2><p>" * n) == "<h2><p>" * n


def test_unquoted_image_alt_titles_a_markdown_html_heading():
    assert html_heading("<h1><img src=logo.png alt=Acme></h1>") == (1, "Acme")
    assert html_heading("<h1 align=center><img alt=Acme src=l.png> Shop</h1>") == (1, "Acme Shop")
    assert html_heading('<h1><img alt="Acme"></h1>') == (1, "Acme")
    parser = StructuredMarkdownNodeParser(chunk_size=64, tokenizer=str.split)
    text = "<h1 align=center><img src=logo.png alt=Acme></h1>\n\nFresh food daily."
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="README.md")])
    assert [node.metadata["section_path"] for node in nodes] == ["Acme"]
    assert nodes[0].text == text


ACCORDION = (
    "<h2>FAQ</h2>"
    '<h3><button aria-expanded="false" aria-controls="a1">What is the return policy?'
    '<span aria-hidden="true">+</span></button></h3>'
    '<div id="a1" role="region">Thirty days with a receipt.</div>'
    '<h3 class="accordion-header"><button class="accordion-button">Do you ship abroad?</button>'
    '</h3><div role="region">Yes, to the EU.</div>'
)


@pytest.mark.parametrize("builder", BUILDERS)
def test_an_accordion_button_is_its_heading_title(builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    assert _sections(parser, ACCORDION) == [
        (
            "FAQ > What is the return policy?",
            "## FAQ\n\n### What is the return policy?\n\nThirty days with a receipt.",
        ),
        ("FAQ > Do you ship abroad?", "### Do you ship abroad?\n\nYes, to the EU."),
    ]


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_button_titling_a_term_summary_or_aria_heading_is_kept(builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    page = (
        "<dl><dt><button>Can I pay later?</button></dt><dd>Yes.</dd></dl>"
        "<details><summary><button>Why?</button></summary><p>Because.</p></details>"
        '<div role="heading" aria-level="3"><button>Gift cards?</button></div><p>Sold out.</p>'
    )
    assert _sections(parser, page) == [
        ("", "Can I pay later?\n: Yes.\n\nWhy?\n\nBecause."),
        ("Gift cards?", "### Gift cards?\n\nSold out."),
    ]


@pytest.mark.parametrize("builder", BUILDERS)
def test_other_buttons_are_still_dropped(builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    page = (
        "<h2>Reviews <button>Write a review</button></h2><p>Four stars.</p>"
        "<p>Text</p><button>Subscribe now</button>"
        "<dl><dt>Term <button>copy</button></dt><dd>d</dd></dl>"
    )
    assert _sections(parser, page) == [
        ("Reviews", "## Reviews\n\nFour stars.\n\nText\n\nTerm\n: d")
    ]
    converter = parser.converter()
    soup = converter.parse(ACCORDION + page)
    buttons = soup.find_all("button")
    assert [converter.is_boilerplate(button) for button in buttons] == [
        False,
        False,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize("builder", BUILDERS)
def test_an_aria_heading_opens_a_section(builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    page = (
        '<div role="heading" aria-level="1">Help</div>'
        '<div role="heading" aria-level="2">Shipping</div><p>Two days.</p>'
        '<span role="Heading" aria-level=" 3 ">Abroad</span><p>Ten days.</p>'
        '<div role="heading"><p>Returns</p></div><p>Thirty days.</p>'
    )
    assert _sections(parser, page) == [
        ("Help > Shipping", "# Help\n\n## Shipping\n\nTwo days."),
        ("Help > Shipping > Abroad", "### Abroad\n\nTen days."),
        ("Help > Returns", "## Returns\n\nThirty days."),  # no aria-level: 2, ARIA's default
    ]


def test_aria_heading_levels_are_clamped_and_other_roles_ignored():
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split)
    cases = {
        '<div role="heading" aria-level="9">Deep</div><p>x</p>': ("Deep", "###### Deep\n\nx"),
        '<div role="heading" aria-level="0">Zero</div><p>x</p>': ("Zero", "## Zero\n\nx"),
        '<div role="heading" aria-level="abc">Bad</div><p>x</p>': ("Bad", "## Bad\n\nx"),
        '<div role="button heading">Not</div><p>x</p>': ("", "Not\n\nx"),
        '<div role="heading"></div><p>only</p>': ("", "only"),
    }
    for page, expected in cases.items():
        assert _sections(parser, page) == [expected], page


REST = "<h2>Returns</h2><p>Items can be returned within thirty days of purchase.</p>"


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize(
    "opener", ["<textarea>", "<title>", "<iframe>", "<noscript>", "<template>", "<canvas>"]
)
def test_an_unclosed_element_hiding_the_rest_of_the_page_is_named(caplog, builder, opener):
    # was: the rest of the page gave no nodes, silently (only <!--, <script>, <style> said so)
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    page = "<h1>Shop</h1><p>Intro.</p>" + opener + REST
    with caplog.at_level(logging.WARNING):
        sections = _sections(parser, page)
    assert sections == [("Shop", "# Shop\n\nIntro.")]  # hidden, as a browser hides it
    [record] = [r for r in caplog.records if "never closed" in r.getMessage()]
    message = record.getMessage()
    assert f"'page.html': a {opener} opened at character {page.index(opener)}" in message
    assert "10 words" in message


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("opener", ["<button>", "<select><option>", "<object>"])
def test_an_unclosed_control_dropping_the_rest_of_the_page_is_named(caplog, builder, opener):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    page = "<h1>Shop</h1><p>Intro.</p>" + opener + REST
    with caplog.at_level(logging.WARNING):
        _sections(parser, page)
    [record] = [r for r in caplog.records if "never closed" in r.getMessage()]
    name = opener.split(">")[0] + ">"
    assert f"'page.html': a {name} opened at character {page.index(opener)}" in record.getMessage()
    assert f"Close it with </{name[1:-1]}>" in record.getMessage()


@pytest.mark.parametrize("builder", BUILDERS)
def test_closed_or_implicitly_closed_elements_say_nothing(caplog, builder):
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    pages = [
        "<h1>Shop</h1><textarea>a</textarea><title>t</title><button>Buy</button>" + REST,
        "<h1>Shop</h1><div><button>Buy</div>" + REST,  # </div> ends the button too
    ]
    with caplog.at_level(logging.WARNING):
        for page in pages:
            assert _sections(parser, page)[-1][0] == "Shop > Returns"
    assert not [r for r in caplog.records if "never closed" in r.getMessage()]
