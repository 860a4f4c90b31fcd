"""Round s45: malformed markup that browsers repair, read as browsers read it by both tree builders.

- ``<![CDATA[ a > b ]]>`` in a page is a bogus comment that ends at the first ``>``
  (lxml, browsers): ``html.parser`` hid the text up to ``]]>``;
- lxml ended a heading at a ``<table>``, ``<li>``, ``<form>`` or ``<fieldset>`` in it (the
  ``<p>`` case was repaired in s44), and nested a heading started in an unclosed one;
- ``html.parser`` implies no end tag: an unclosed ``<p hidden>``, ``<li hidden>``,
  ``<tr hidden>``, ``<td hidden>``, ``<thead hidden>``, ``<caption hidden>`` or
  ``<h2 hidden>`` took the rest of the page (or table) into it and hid it; lxml did so
  with an unclosed ``<dd hidden>`` / ``<dt hidden>``;
- the page's own title in a page banner (``<header><h1>Returns</h1></header>``) was dropped
  with the banner;
- a metadata integer of more than 4,300 digits failed with a message naming no key.
"""

from __future__ import annotations

import logging
import sys

import pytest
from llama_index.core import Document

from llama_index_ragtune.node_parser import (
    DocumentParseError,
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)
from llama_index_ragtune.node_parser.html_blocks import HTMLConverter
from llama_index_ragtune.node_parser.html_lxml_repairs import (
    close_definitions,
    nest_paragraphs_in_headings,
)
from llama_index_ragtune.node_parser.html_parser_repairs import close_implied_elements

BUILDERS = ["lxml", "html.parser"]


def _texts(page: str, builder: str) -> list[str]:
    return [block.text for block in HTMLConverter(builder).blocks(page, document_id="page.html")]


def _sections(page: str, builder: str) -> list[tuple[str, str]]:
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=str.split, parser_features=builder)
    nodes = parser.get_nodes_from_documents([Document(text=page, id_="page.html")])
    return [(node.metadata["section_path"], node.text) for node in nodes]


# ------------------------------------------------------------------ 1. CDATA in HTML


@pytest.mark.parametrize(
    "page",
    [
        "<p>Fee <![CDATA[ x > 5 pounds ]]> applies</p><p>After.</p>",
        "<p>a <![CDATA[x]]> b</p><p>c <![CDATA[ p>q ]]> d</p>",
        "<p>One</p><![CDATA[<p>hidden?</p>]]><p>Two</p>",
        "<p>x</p><![if !IE]><p>Shown</p><![endif]>",
    ],
)
def test_cdata_ends_at_the_first_gt_with_both_builders(page):
    lxml, stdlib = _texts(page, "lxml"), _texts(page, "html.parser")
    assert stdlib == lxml


def test_cdata_text_after_the_gt_is_kept():
    for builder in BUILDERS:
        assert _texts("<p>Fee <![CDATA[ x > 5 pounds ]]> applies</p>", builder) == [
            "Fee 5 pounds ]]> applies"
        ]


# ------------------------------------------------------- 2. blocks inside a heading (lxml)


@pytest.mark.parametrize(
    "title_markup",
    [
        "<table><tr><td>Delivery</td><td>fees</td></tr></table>",
        "<li>Delivery fees</li>",
        "<form>Delivery fees</form>",
        "<fieldset>Delivery fees</fieldset>",
        "<table><tr><td>Delivery<td>fees</table>",
    ],
)
@pytest.mark.parametrize("builder", BUILDERS)
def test_a_block_inside_a_heading_stays_its_title(title_markup, builder):
    page = f"<h1>Help</h1><h2>{title_markup}</h2><p>Two pounds a box.</p>"
    assert _sections(page, builder)[-1] == (
        "Help > Delivery fees",
        "# Help\n\n## Delivery fees\n\nTwo pounds a box.",
    )


def test_the_lxml_repair_renames_only_inside_closed_headings():
    assert nest_paragraphs_in_headings("<h2><li>A</li></h2><ul><li>B</li></ul>") == (
        "<h2><div>A</div></h2><ul><li>B</li></ul>"
    )
    page = "<p>No heading <table><tr><td>x</td></tr></table></p>"
    assert nest_paragraphs_in_headings(page) == page


@pytest.mark.parametrize(
    "page",
    [
        "<h1>T</h1><h2>Old<h3>New</h3><p>Body words.</p>",
        "<h1>T</h1><h2>Old<h3>New</h3></h2><p>Body words.</p>",
        "<h1>T</h1><h2>Old <em>x</em><br><h3>New</h3><p>Body words.</p>",
    ],
)
@pytest.mark.parametrize("builder", BUILDERS)
def test_a_heading_started_in_an_unclosed_heading_ends_it(page, builder):
    texts = _texts(page, builder)
    assert texts[-2:] == ["### New", "Body words."]
    assert texts[1].startswith("## Old")


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_heading_nested_inside_an_open_element_of_a_heading_is_left(builder):
    # the current node is the <b>, not the heading: browsers nest the h3 in the h2 too
    page = "<h2>Old <b>x<h3>New</h3></b></h2><p>Body.</p>"
    assert _texts(page, builder) == ["## Old x New", "Body."]


# ---------------------------------------------- 3. implied end tags (html.parser)


@pytest.mark.parametrize(
    "page, expected",
    [
        (
            "<h1>T</h1><p hidden>Old notice<h2>Fees</h2><p>Two pounds.</p>",
            ["# T", "## Fees", "Two pounds."],
        ),
        (
            "<h1>T</h1><p style='display:none'>Old<ul><li>Kept item</li></ul><div>Kept div</div>",
            ["# T", "- Kept item", "Kept div"],
        ),
        (
            "<h1>T</h1><ul><li hidden>old<li>new one<li>new two</ul><p>After.</p>",
            ["# T", "- new one\n- new two", "After."],
        ),
        (
            "<h1>T</h1><dl><dt hidden>Old term<dd hidden>old<dt>Term<dd>Definition</dl>",
            ["# T", "Term\n: Definition"],
        ),
        (
            "<h1>T</h1><dl><dt>Fee<dd hidden>old<dd>Two pounds<dt>Term<dd>Def</dl>",
            ["# T", "Fee\n: Two pounds\nTerm\n: Def"],
        ),
        (
            "<h1>T</h1><table><caption hidden>Old<tr><td>a<td>b</table><p>After.</p>",
            ["# T", "|  |  |\n| --- | --- |\n| a | b |", "After."],
        ),
        (
            "<h1>T</h1><table><tr hidden><td>old<td>x<tr><td>new<td>y</table><p>After.</p>",
            ["# T", "|  |  |\n| --- | --- |\n| new | y |", "After."],
        ),
        (
            "<h1>T</h1><table><thead hidden><tr><th>h<tbody><tr><td>v</table><p>After.</p>",
            ["# T", "v", "After."],
        ),
        (
            "<h1>T</h1><h2 aria-hidden=true>Old<h3>New</h3><p>Body words here.</p>",
            ["# T", "### New", "Body words here."],
        ),
    ],
)
@pytest.mark.parametrize("builder", BUILDERS)
def test_an_unclosed_hidden_element_hides_only_itself(page, expected, builder, caplog):
    with caplog.at_level(logging.WARNING):
        assert _texts(page, builder) == expected
    assert not [r for r in caplog.records if "boilerplate rules removed" in r.getMessage()]


def test_implied_end_tags_follow_the_scopes_of_the_html_standard():
    assert close_implied_elements("<ul><li>a<ul><li>b<li>c</ul><li>d</ul>") == (
        "<ul><li>a<ul><li>b</li><li>c</ul></li><li>d</ul>"
    )
    # a cell of a nested table does not end the outer cell; a button keeps its p open
    assert close_implied_elements("<td>a<table><tr><td>x<td>y</table>") == (
        "<td>a<table><tr><td>x</td><td>y</table>"
    )
    assert close_implied_elements("<p>a<button><div>b</div></button>c</p>") == (
        "<p>a<button><div>b</div></button>c</p>"
    )
    # markup in comments, scripts and attribute values is no tag
    page = "<p>a<!-- <div> --><script>x='<div>'</script><img alt='<div>'></p>"
    assert close_implied_elements(page) == page


@pytest.mark.parametrize("builder", BUILDERS)
def test_an_unclosed_caption_ends_at_the_tables_rows(builder):
    page = "<table><caption>Fees<tr><td>Box<td>2</table>"
    assert _texts(page, builder) == ["Fees", "|  |  |\n| --- | --- |\n| Box | 2 |"]


def test_lxml_definitions_are_closed_only_where_left_open():
    page = "<dl><dt>A</dt><dd>x</dd><dd>y</dd></dl><p>a<div>b</div></p>"
    assert close_definitions(page) == page
    assert close_definitions("<dl><dt>A<dd>x<dd>y</dl><p>a<div>b</div>") == (
        "<dl><dt>A</dt><dd>x</dd><dd>y</dl><p>a<div>b</div>"
    )


def test_implied_end_tags_are_found_in_linear_work():
    # every start tag is read once: the inserted end tags grow with the page, one per tag
    for unit, end in (("<p>x", "</p>"), ("<li>x", "</li>"), ("<td>x", "</td>")):
        for n in (1000, 4000):
            assert close_implied_elements(unit * n).count(end) == n - 1


# ----------------------------------------------------------- 4. the page title in a banner


@pytest.mark.parametrize("builder", BUILDERS)
def test_the_pages_only_h1_in_a_banner_is_kept_without_the_banner(builder):
    page = (
        "<header><img alt='FreshMart logo'><nav>Home Deals</nav><h1>Returns</h1>"
        "<p>Free delivery over 50 pounds</p></header><main><p>Within 30 days.</p></main>"
    )
    assert _texts(page, builder) == ["# Returns", "Within 30 days."]
    page = "<div role=banner><hgroup><h1>Returns</h1><p>Our policy</p></hgroup></div><p>B.</p>"
    assert _texts(page, builder) == ["# Returns", "Our policy", "B."]


@pytest.mark.parametrize(
    "page",
    [
        "<header><h1><a href='/'>FreshMart</a></h1></header><h2>Returns</h2><p>B.</p>",
        "<header><h1><a href='https://freshmart.example/'>FreshMart</a></h1></header>"
        "<h2>Returns</h2><p>B.</p>",
        "<header><h1><img alt='FreshMart'></h1></header><h2>Returns</h2><p>B.</p>",
        "<header><h1>FreshMart</h1></header><main><h1>Returns</h1><p>B.</p></main>",
        "<header hidden><h1>FreshMart</h1></header><h2>Returns</h2><p>B.</p>",
    ],
)
@pytest.mark.parametrize("builder", BUILDERS)
def test_a_site_banner_is_still_dropped(page, builder):
    texts = _texts(page, builder)
    assert "FreshMart" not in " ".join(texts)
    assert texts[-1] == "B."


# ------------------------------------------------------------- 6. huge metadata integers


@pytest.mark.parametrize(
    "metadata, key",
    [({"serial": 10**5000}, "serial"), ({"ok": 1, "codes": {"a": [2, -(10**4400)]}}, "codes")],
)
@pytest.mark.parametrize("parser_cls", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_a_huge_metadata_integer_is_refused_naming_the_key(metadata, key, parser_cls):
    doc = Document(text="# Returns\n\nWithin 30 days.", metadata=metadata, id_="faq.md")
    with pytest.raises(DocumentParseError) as caught:
        parser_cls(chunk_size=64, tokenizer=str.split).get_nodes_from_documents([doc])
    message = str(caught.value)
    assert caught.value.cause == "metadata" and caught.value.document_id == "faq.md"
    assert f"key {key!r}" in message and "set_int_max_str_digits" in message


def test_a_metadata_integer_at_the_limit_is_kept():
    limit = sys.get_int_max_str_digits()
    doc = Document(text="Within 30 days.", metadata={"n": 10 ** (limit - 1)}, id_="faq.md")
    parser = StructuredMarkdownNodeParser(chunk_size=64, tokenizer=str.split, count_metadata=False)
    [node] = parser.get_nodes_from_documents([doc])
    assert node.metadata["n"] == 10 ** (limit - 1)
    assert f"n: {10 ** (limit - 1)}" in node.get_metadata_str()


# ------------------------------------------------------------ 5. a closed dialog (kept)


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_closed_dialog_keeps_its_content_as_a_closed_details_does(builder):
    # browsers show it on a click (help centres' size guides, FAQ answers in modals)
    page = "<h1>T</h1><dialog><p>Size guide text.</p></dialog><dialog open><p>Open.</p></dialog>"
    assert _texts(page, builder) == ["# T", "Size guide text.", "Open."]
