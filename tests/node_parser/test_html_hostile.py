"""StructuredHTMLNodeParser against hostile pages: code blocks, parser choice, hidden content."""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser

FEATURES = ("lxml", "html.parser")


def parse(html: str, doc_id: str = "page.html", chunk_size: int = 200, **kwargs):
    parser = StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=chunk_size, **kwargs)
    return parser.get_nodes_from_documents([Document(text=html, id_=doc_id)])


def texts(html: str, **kwargs) -> list[str]:
    return [node.text for node in parse(html, **kwargs)]


# ------------------------------------------------------------------ <pre> code


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "code"),
    [
        ("<pre>ls -la<br>cd /tmp<br/>exit</pre>", "ls -la\ncd /tmp\nexit"),
        ("<pre><div>line one</div><div>line two</div></pre>", "line one\nline two"),
        ("<pre><p>para one</p><p>para two</p></pre>", "para one\npara two"),
        ("<pre><ol><li>first</li><li>second</li></ol></pre>", "first\nsecond"),
        ("<pre>one\r\ntwo\rthree</pre>", "one\ntwo\nthree"),
        ("<pre>a\tb\n\tindented</pre>", "a\tb\n\tindented"),
        ("<pre>see <img alt='the diagram'> here</pre>", "see the diagram here"),
        ("<pre>kept<!-- a comment -->text</pre>", "kepttext"),
    ],
)
def test_pre_keeps_its_lines_breaks_and_alt_text(html, code, features):
    # <br> and block elements inside <pre> used to be glued ("ls -lacd /tmpexit"),
    # html.parser's lone CRs made one long line, and image alt text was dropped.
    assert texts(html, parser_features=features) == [f"```\n{code}\n```"]


@pytest.mark.parametrize("features", FEATURES)
def test_a_pre_of_br_lines_is_split_at_whole_lines(features):
    lines = [f"echo step {i} done" for i in range(40)]
    nodes = parse("<pre>" + "<br>".join(lines) + "</pre>", chunk_size=30, parser_features=features)
    assert len(nodes) > 1
    assert not any(node.metadata["partial_unit"] for node in nodes)
    got = [line for node in nodes for line in node.text.split("\n") if line.startswith("echo")]
    assert got == lines


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<xmp><b>x</b> & <i>y</i></xmp>", ["```\n<b>x</b> & <i>y</i>\n```"]),
        ("<XMP>a &amp; <nav>Home</nav></xmp >", ["```\na &amp; <nav>Home</nav>\n```"]),
        (
            "<p>Before</p>\n<xmp>one</xmp>\n<xmp>\n  <u>two</u>\n</xmp><p>after <b>x</b></p>",
            ["Before\n\n```\none\n```\n\n```\n  <u>two</u>\n```\n\nafter x"],
        ),
        (  # plaintext runs to the end of the page
            "<p>Before</p><plaintext><b>rest</b></p> of <i>page",
            ["Before\n\n```\n<b>rest</b></p> of <i>page\n```"],
        ),
        (  # no xmp: in a comment, a script or an attribute value
            "<!-- <xmp> --><script>s = '<xmp>'</script><p title='<xmp>'>a <b>b</b> &amp; c</p>",
            ["a b & c"],
        ),
        ("<listing>one\n  two <b>bold</b></listing>", ["```\none\n  two bold\n```"]),
    ],
)
def test_xmp_and_plaintext_are_literal_preformatted_text(html, expected, features):
    # html.parser read their raw text as markup: "<xmp><b>x</b></xmp>" gave "x"
    assert texts(html, parser_features=features) == expected


# ------------------------------------------------------------ parser_features


@pytest.mark.parametrize("features", ["xml", "lxml-xml"])
def test_an_xml_tree_builder_is_refused_naming_it(features):
    # It used to keep only the first top-level element of the page, silently.
    with pytest.raises(ValueError, match=rf"parser_features='{features}' is an XML parser") as err:
        StructuredHTMLNodeParser(
            chunk_size=64, tokenizer=whitespace_tokens, parser_features=features
        )
    assert "'lxml' or 'html.parser'" in str(err.value)


@pytest.mark.parametrize("features", ["bogus", "", "HTML.PARSER", "html5lib-typo"])
def test_an_unknown_tree_builder_is_refused_naming_it(features):
    # It used to fall back to html.parser without a word.
    with pytest.raises(ValueError, match="names no BeautifulSoup tree builder") as err:
        StructuredHTMLNodeParser(
            chunk_size=64, tokenizer=whitespace_tokens, parser_features=features
        )
    assert f"parser_features={features!r}" in str(err.value)


@pytest.mark.parametrize("features", FEATURES)
def test_html_tree_builders_are_accepted(features):
    assert texts("<h1>T</h1><p>a&nbsp;b</p>", parser_features=features) == ["# T\n\na b"]


# ------------------------------------------------------------- hidden content

FAQ = (
    "<h1>Delivery FAQ</h1><p>Answers to the questions customers ask about delivery.</p>"
    + "".join(
        f"<h3>Question {i}?</h3><div class=answer {{hide}}><p>Deliveries arrive within {i} days.</p></div>"
        for i in range(4)
    )
)


@pytest.mark.parametrize("hide", ["style='display: none;'", "aria-hidden=true", "hidden"])
def test_collapsed_faq_answers_are_named_in_a_warning_or_kept(hide, caplog):
    html = FAQ.format(hide=hide)
    with caplog.at_level(logging.WARNING):
        nodes = parse(html, doc_id="help/faq.html")
    assert "Deliveries" not in " ".join(node.text for node in nodes)  # the documented rule
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'help/faq.html'" in warnings[0] and "4 hidden element(s)" in warnings[0]
    assert "drop_hidden=False" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kept = parse(html, doc_id="help/faq.html", drop_hidden=False)
    assert not caplog.records
    answers = [node.text for node in kept if node.metadata["section_path"].endswith("?")]
    assert answers == [f"### Question {i}?\n\nDeliveries arrive within {i} days." for i in range(4)]


def test_a_small_hidden_element_on_a_long_page_is_dropped_quietly(caplog):
    body = " ".join(f"word{i}" for i in range(200))
    html = f"<h1>Returns</h1><p>{body}</p><div style='display:none'>Subscribe to our newsletter today</div>"
    with caplog.at_level(logging.WARNING):
        nodes = parse(html)
    assert "Subscribe" not in " ".join(node.text for node in nodes)
    assert not caplog.records


def test_drop_hidden_survives_serialisation():
    parser = StructuredHTMLNodeParser(chunk_size=64, drop_hidden=False)
    assert StructuredHTMLNodeParser.from_dict(parser.to_dict()).drop_hidden is False
    assert StructuredHTMLNodeParser.model_fields["drop_hidden"].description


# --------------------------------------------------- hostile structure, kept


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (  # entities: invalid numeric references become U+FFFD, nothing is dropped
            "<p>a&nbsp;b &#0; c &#xD800; d &#x110000; e &#65; &amp;</p>",
            ["a b \ufffd c \ufffd d \ufffd e A &"],
        ),
        (  # a heading inside a link, inside a list item, headings out of order
            "<a href='#'><h2>Linked</h2></a><p>a</p><ul><li><h3>In item</h3>b</li></ul>"
            "<h1>Top</h1><p>c</p><h6>Six</h6><p>d</p>",
            ["## Linked\n\na\n\n- ### In item\n  b", "# Top\n\nc", "###### Six\n\nd"],
        ),
        (  # a comment and invisible characters (bidi override, zero-width space) in a heading
            "<h2>\u202eTit<!-- x -->le\u200b</h2><p>body</p>",
            ["## Title\n\nbody"],
        ),
        (  # rowspan/colspan with empty cells
            "<table><tr><th rowspan=2>A</th><th colspan=2>B</th></tr><tr><td></td><td>c</td></tr>"
            "<tr><td>x</td><td></td><td>z</td></tr></table>",
            ["| A | B | B |\n| --- | --- | --- |\n| A |  | c |\n| x |  | z |"],
        ),
        (  # a table inside a cell: the outer one is layout, the inner one a table
            "<table><tr><td>outer<table><tr><th>in1</th><th>in2</th></tr>"
            "<tr><td>1</td><td>2</td></tr></table></td><td>o2</td></tr></table>",
            ["outer\n\n| in1 | in2 |\n| --- | --- |\n| 1 | 2 |\n\no2"],
        ),
        ("<br><br><br>", []),
        ("<p>a\u2028b</p>", ["a\nb"]),
    ],
)
def test_hostile_structures_keep_their_text(html, expected, features):
    assert texts(html, parser_features=features) == expected


@pytest.mark.parametrize("features", FEATURES)
def test_ten_thousand_nested_inline_elements_in_a_heading(features):
    html = "<h2>" + "<b>" * 10_000 + "Deep title" + "</b>" * 10_000 + "</h2><p>body</p>"
    nodes = parse(html, parser_features=features)
    assert [node.text for node in nodes] == ["## Deep title\n\nbody"]
    assert nodes[0].metadata["section_path"] == "Deep title"
