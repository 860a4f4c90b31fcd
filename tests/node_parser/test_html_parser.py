"""StructuredHTMLNodeParser: boilerplate, tables, lists, lenient parsing, shared schema with Markdown."""

from __future__ import annotations

import pytest
from llama_index.core import Document
from llama_index.core.schema import NodeRelationship
from np_helpers import fixture, missing_html_words, visible_html_strings, whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser


def make_parser(chunk_size: int = 200, **kwargs) -> StructuredHTMLNodeParser:
    return StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=chunk_size, **kwargs)


def parse(html: str, **kwargs):
    return make_parser(**kwargs).get_nodes_from_documents([Document(text=html, id_="page")])


def test_help_centre_page_drops_boilerplate_and_keeps_content():
    page = fixture("grocery_help.html")
    nodes = parse(page)
    text = "\n".join(n.text for n in nodes)
    for boilerplate in [
        "Sign in",
        "Search help",
        "Home",
        "dataLayer",
        "background",
        "Related articles",
        "delivery slot",
        "All rights reserved",
        "Privacy notice",
        "FreshMart Help Centre",
    ]:
        assert boilerplate not in text
    assert missing_html_words(visible_html_strings(page), [n.text for n in nodes]) == []
    assert [n.metadata["section_path"] for n in nodes] == [
        "Returns & refunds",
        "Returns & refunds > Perishables",
        "Returns & refunds > Non-food items",
        "Returns & refunds > Refund times",
        "Returns & refunds > Questions",
    ]


def test_nested_lists_render_as_indented_markdown():
    nodes = parse(fixture("grocery_help.html"))
    perishables = next(n for n in nodes if n.metadata["section_title"] == "Perishables")
    assert (
        "- Report the problem within 48 hours of delivery or purchase.\n"
        "  - In store: bring the receipt to the customer service desk.\n"
        "  - Online orders: use Report an issue in your order history.\n"
        "    - Attach a photo of the item and its best-before label.\n"
        "- We refund to the original payment method."
    ) in perishables.text
    assert perishables.metadata["block_types"] == "heading,paragraph,list"


def test_rowspan_and_colspan_flatten_into_a_rectangular_markdown_table():
    nodes = parse(fixture("grocery_help.html"))
    refunds = next(n for n in nodes if n.metadata["section_title"] == "Refund times")
    assert (
        "How long refunds take\n\n"
        "| Payment method | Where | Refund time |\n"
        "| --- | --- | --- |\n"
        "| Card | In store | 3-5 working days |\n"
        "| Card | Online | 5-7 working days |\n"
        "| Gift card | Instantly, as store credit | Instantly, as store credit |"
    ) in refunds.text


def test_definition_list():
    nodes = parse(fixture("grocery_help.html"))
    questions = next(n for n in nodes if n.metadata["section_title"] == "Questions")
    assert questions.text == (
        "## Questions\n\n"
        "Do I need a receipt?\n"
        ": For perishables, a photo of the receipt or the order number is enough.\n"
        "Can someone else return my items?\n"
        ": Yes, if they bring the original receipt."
    )
    assert questions.metadata["block_types"] == "heading,definition_list"


def test_table_without_thead_pre_blockquote_and_malformed_markup():
    page = fixture("electronics_help.html")  # unclosed <p>/<li>, a stray </span>
    for features in ("lxml", "html.parser"):
        nodes = parse(page, parser_features=features)
        text = "\n".join(n.text for n in nodes)
        assert "| Product | Opened, like new | Opened, used |\n| --- | --- | --- |\n" in text
        assert "> If your device develops a fault" in text
        assert '```shell\nsystem_profiler SPHardwareDataType | grep "Serial"\n```' in text
        assert "1. Back up and erase the device" in text and "3. Bring the device" in text
        for boilerplate in [
            "Weekly deals",
            "Free delivery",
            "JavaScript",
            "Need help",
            "newsletter",
            "company number",
            "schema.org",
        ]:
            assert boilerplate not in text, (features, boilerplate)
        assert missing_html_words(visible_html_strings(page), [n.text for n in nodes]) == []


def test_grossly_malformed_html_is_parsed_leniently():
    html = (
        "<div><h2>Returns<p>Keep the box</b></i><ul><li>one<li>two</ul></span></div></div><p>tail"
    )
    nodes = parse(html)
    text = "\n".join(n.text for n in nodes)
    for word in ["Returns", "Keep the box", "one", "two", "tail"]:
        assert word in text


def test_table_larger_than_cap_repeats_its_header_row():
    rows = "".join(f"<tr><td>Item {i}</td><td>{i} days</td></tr>" for i in range(30))
    html = f"<h2>Shelf life</h2><table><thead><tr><th>Item</th><th>Keeps</th></tr></thead>{rows}</table>"
    nodes = parse(html, chunk_size=30, count_metadata=False)
    assert len(nodes) > 3
    seen = []
    for node in nodes:
        lines = node.text.split("\n")
        i = lines.index("| Item | Keeps |")
        assert lines[i + 1] == "| --- | --- |"
        seen += lines[i + 2 :]
        assert len(node.text.split()) <= 30
    assert seen == [f"| Item {i} | {i} days |" for i in range(30)]


def test_offsets_are_none_and_relationships_set():
    nodes = parse(fixture("grocery_help.html"), chunk_size=40)
    assert len(nodes) > 3
    for i, node in enumerate(nodes):
        assert node.start_char_idx is None and node.end_char_idx is None
        assert node.relationships[NodeRelationship.SOURCE].node_id == "page"
        if i:
            assert node.relationships[NodeRelationship.PREVIOUS].node_id == nodes[i - 1].node_id


@pytest.mark.parametrize(
    "html", ["", "   ", "<html><body>  </body></html>", "<nav>Home</nav><script>x()</script>"]
)
def test_empty_or_boilerplate_only_page_gives_no_nodes(html):
    assert parse(html) == []


def test_binary_content_raises_naming_the_document():
    doc = Document(text="GIF89a\x00\x01\x02\x00", id_="banner.gif")
    with pytest.raises(ValueError, match="banner.gif"):
        make_parser().get_nodes_from_documents([doc])


def test_header_and_footer_inside_an_article_are_content():
    html = (
        "<header>Site</header><article><header><h1>Gift cards</h1></header>"
        "<p>Valid for two years.</p><footer>Updated May 2025</footer></article><footer>Site</footer>"
    )
    nodes = parse(html)
    assert [n.text for n in nodes] == ["# Gift cards\n\nValid for two years.\n\nUpdated May 2025"]


def test_hidden_and_role_based_boilerplate_is_dropped():
    html = (
        '<div role="navigation">Menu</div><div hidden>Secret</div><p aria-hidden="true">Icon</p>'
        '<p style="display: none">Gone</p><div role="contentinfo">Legal</div><p>Kept</p>'
    )
    assert [n.text for n in parse(html)] == ["Kept"]


def test_same_schema_and_text_form_as_markdown():
    md = (
        "# Returns\n\n## Perishables\n\nApples are refunded.\n\n"
        "| Item | Days |\n| --- | --- |\n| Apples | 2 |\n\n- one\n- two\n  - nested"
    )
    html = (
        "<h1>Returns</h1><h2>Perishables</h2><p>Apples are refunded.</p>"
        "<table><tr><th>Item</th><th>Days</th></tr><tr><td>Apples</td><td>2</td></tr></table>"
        "<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>"
    )
    meta = {"store": "FreshMart"}
    md_nodes = StructuredMarkdownNodeParser(
        tokenizer=whitespace_tokens, chunk_size=200
    ).get_nodes_from_documents([Document(text=md, metadata=meta)])
    html_nodes = make_parser().get_nodes_from_documents([Document(text=html, metadata=meta)])
    assert [n.text for n in md_nodes] == [n.text for n in html_nodes]
    assert [n.metadata for n in md_nodes] == [n.metadata for n in html_nodes]
    assert md_nodes[0].excluded_embed_metadata_keys == html_nodes[0].excluded_embed_metadata_keys


def test_class_name_and_fields():
    parser = StructuredHTMLNodeParser.from_defaults(chunk_size=64, tokenizer=whitespace_tokens)
    assert parser.class_name() == "StructuredHTMLNodeParser"
    assert parser.to_dict()["parser_features"] == "lxml"
    for name in ("parser_features", "boilerplate_tags", "boilerplate_roles", "chunk_size"):
        assert StructuredHTMLNodeParser.model_fields[name].description


def test_byte_order_marks_are_not_content():
    for features in ("lxml", "html.parser"):
        nodes = parse(
            "\ufeff<h1>Returns</h1><p>Within\ufeff 30 days.</p>", parser_features=features
        )
        assert [n.text for n in nodes] == ["# Returns\n\nWithin 30 days."], features
