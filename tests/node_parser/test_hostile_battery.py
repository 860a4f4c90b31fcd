"""Regression tests from a hostile-input battery: an unclosed ``<head>`` under ``html.parser``,
runs of byte-order marks, metadata nested past the recursion limit, and a ``<pre>`` holding a
long run of backticks."""

from __future__ import annotations

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import (
    DocumentParseError,
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)

FEATURES = ["lxml", "html.parser"]
PARSERS = [StructuredMarkdownNodeParser, StructuredHTMLNodeParser]


def parse(parser_class, text: str, doc_id: str = "doc", metadata=None, **kwargs):
    parser = parser_class(
        tokenizer=whitespace_tokens, chunk_size=64, count_metadata=False, **kwargs
    )
    document = Document(text=text, id_=doc_id, metadata=metadata or {})
    return parser.get_nodes_from_documents([document])


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (  # no </head>: html.parser nests the body inside the head
            "<html><head><title>Shop</title><body><h1>Returns</h1><p>Within 30 days.</p>"
            "</body></html>",
            ["# Returns\n\nWithin 30 days."],
        ),
        (  # content straight after the metadata, no <body> at all
            "<html><head><meta charset=utf-8><title>Shop</title><h2>Hours</h2><p>9 to 5.</p>",
            ["## Hours\n\n9 to 5."],
        ),
        (  # loose text and a div in the head; its style, script and noscript stay dropped
            "<head><title>Shop</title><style>p{}</style><script>x()</script>"
            "<noscript>Enable JS</noscript>Open daily.<div>Closed on Sundays.</div></head>",
            ["Open daily.\n\nClosed on Sundays."],
        ),
        (  # a head of metadata only is still dropped whole
            "<head><title>Shop</title></head><p>Body text.</p>",
            ["Body text."],
        ),
    ],
)
def test_an_unclosed_head_does_not_swallow_the_page(html, expected, features):
    # was: html.parser (also the fallback when lxml is missing) gave no nodes, silently
    nodes = parse(StructuredHTMLNodeParser, html, parser_features=features)
    assert [node.text for node in nodes] == expected


@pytest.mark.parametrize("count", [1, 3, 5000])
def test_any_number_of_leading_byte_order_marks_is_skipped(count):
    # was: one recursive call per mark, a RecursionError past ~1000 of them
    text = "\ufeff" * count + "# Returns\n\nWithin 30 days."
    nodes = parse(StructuredMarkdownNodeParser, text)
    assert [node.text for node in nodes] == ["# Returns\n\nWithin 30 days."]
    assert nodes[0].metadata["section_path"] == "Returns"
    assert text[nodes[0].start_char_idx : nodes[0].end_char_idx] == nodes[0].text


def _nested(depth: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(depth):
        node["child"] = {}
        node = node["child"]
    return root


@pytest.mark.parametrize("parser_class", PARSERS)
def test_metadata_nested_too_deep_is_refused_naming_the_document_and_key(parser_class):
    # was: "RecursionError: maximum recursion depth exceeded while getting the repr of an
    # object" from LlamaIndex's metadata string, with no hint of the cause
    text = "# Menu\n\nSoup." if parser_class is StructuredMarkdownNodeParser else "<p>Soup.</p>"
    metadata = {"store": "FreshMart", "crawl": [{"tree": _nested(3000)}]}
    with pytest.raises(DocumentParseError, match=r"menu\.md.*'crawl'.*nested") as err:
        parse(parser_class, text, doc_id="menu.md", metadata=metadata)
    assert err.value.cause == "metadata"
    assert parse(parser_class, text, metadata=metadata, on_error="skip") == []


@pytest.mark.parametrize("parser_class", PARSERS)
def test_shallow_and_self_referencing_metadata_still_parse(parser_class):
    text = "# Menu\n\nSoup." if parser_class is StructuredMarkdownNodeParser else "<p>Soup.</p>"
    looped: dict = {"name": "loop"}
    looped["self"] = looped  # rendered as {...}: not deep
    for metadata in ({"tree": _nested(50)}, {"loop": looped}, {"none": None, "list": [1, [2]]}):
        nodes = parse(parser_class, text, metadata=metadata)
        assert len(nodes) == 1 and "Soup." in nodes[0].text


@pytest.mark.parametrize("features", FEATURES)
def test_a_pre_of_a_long_backtick_run_is_fenced_longer_than_the_run(features):
    # was: the fence grew one backtick per search of the code: quadratic (100k: ~7 s);
    # the time is measured by `ragtune bench hostile`
    small = parse(StructuredHTMLNodeParser, "<pre>a ``` b ````` c</pre>", parser_features=features)
    assert [node.text for node in small] == ["``````\na ``` b ````` c\n``````"]
    html = "<pre>" + "`" * 100_000 + "</pre><p>after</p>"
    nodes = parse(StructuredHTMLNodeParser, html, parser_features=features)
    assert nodes[-1].text.endswith("after")
    code = "".join(node.text for node in nodes)
    assert code.count("`") >= 100_000 + 2 * 100_001  # the run, between fences longer than it


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (  # no ";" after the stray "&#": html.parser read the rest, tags and script, as text
            "<p>Price &# 5</p><script>track()</script><nav>Menu</nav><h1>Returns</h1>"
            "<p>Within 30 days</p>",
            ["Price &# 5", "# Returns\n\nWithin 30 days"],
        ),
        (  # the second stray one (";" after both) did the same
            "<p>a &#z; b</p><h1>T</h1><p>c &#; d</p><h2>U</h2><p>e</p><script>x()</script>",
            ["a &#z; b", "# T\n\nc &#; d", "## U\n\ne"],
        ),
        (
            "<p>&#x; &#-1; &#65; &#x42; <img alt='a &# b'></p><pre>&# x</pre>",
            ["&#x; &#-1; A B a &# b\n\n```\n&# x\n```"],
        ),
    ],
)
def test_a_stray_character_reference_start_is_text_not_the_end_of_markup(html, expected, features):
    nodes = parse(StructuredHTMLNodeParser, html, parser_features=features)
    assert [node.text for node in nodes] == expected


@pytest.mark.parametrize(
    "text",
    [
        " " * 5000 + "    print(1)\n    print(2)",  # an indented code block
        "    " + "\t" * 5000 + "print(1)\n    print(2)",
        "```\n" + " " * 5000 + "print(1)\nprint(2)\n```",
        "```\nprint(1)\nprint(2)" + " " * 5000 + "\n```",
        "```\nprint(1)\nprint(2)\n" + " " * 5000 + "\n```",
        "\u3000" * 5000 + "Returns within 30 days.",
    ],
)
def test_a_whitespace_run_longer_than_the_cap_makes_no_oversized_node(text):
    # was: the first or last part carried the run, over the cap by its length (16 characters
    # a token), flagged oversized with "a single character takes more tokens than the budget"
    nodes = parse(StructuredMarkdownNodeParser, text)
    assert nodes and not any(node.metadata["oversized"] for node in nodes)
    assert all(len(node.text) <= 64 * 16 for node in nodes)
    assert "".join(text.split()) == "".join("".join(node.text for node in nodes).split())
    assert len(nodes) == 1
    if not text.startswith("```"):  # a fenced part shows the fences its span leaves out
        assert text[nodes[0].start_char_idx : nodes[0].end_char_idx] == nodes[0].text


@pytest.mark.parametrize("features", FEATURES)
def test_a_pre_indented_by_a_whitespace_run_makes_no_oversized_node(features):
    html = "<pre>" + " " * 5000 + "print(1)\nprint(2)</pre>"
    nodes = parse(StructuredHTMLNodeParser, html, parser_features=features)
    assert [node.text for node in nodes] == ["```\nprint(1)\nprint(2)\n```"]
    assert not nodes[0].metadata["oversized"]
