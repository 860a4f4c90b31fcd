"""Regression tests from a hostile-input battery of HTML tables, attributes and entities:
span and ``start`` values read as browsers read them, rows and row groups an unclosed
``<tr>`` / ``<td>`` nests under ``html.parser``, numeric references of many digits, inline
styles read per declaration, an ``iframe``'s content kept by custom boilerplate tags, and
resource bombs (huge tables, deep nesting, long attributes) that must stay linear and lose
no text. Sizes are counted in characters, never timed."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser
from llama_index_ragtune.node_parser.html_clean import is_hidden
from llama_index_ragtune.node_parser.html_text import html_integer

FEATURES = ["lxml", "html.parser"]
CHUNK = 64
CHAR_CAP = 16 * CHUNK  # the parsers' character bound per node


def parse(text: str, features: str = "lxml", markdown: bool = False, **kwargs):
    if markdown:
        parser = StructuredMarkdownNodeParser(
            tokenizer=whitespace_tokens, chunk_size=CHUNK, count_metadata=False, **kwargs
        )
    else:
        parser = StructuredHTMLNodeParser(
            tokenizer=whitespace_tokens,
            chunk_size=CHUNK,
            count_metadata=False,
            parser_features=features,
            **kwargs,
        )
    return parser.get_nodes_from_documents([Document(text=text, id_="page")])


def texts(nodes) -> list[str]:
    return [node.text for node in nodes]


def assert_bounded(nodes, source: str, factor: int = 4) -> None:
    """No node over the cap, and the node text linear in the source."""
    assert all(len(node.text.split()) <= CHUNK for node in nodes)
    assert all(len(node.text) <= CHAR_CAP for node in nodes)
    assert sum(len(node.text) for node in nodes) <= factor * len(source) + 1000


# ------------------------------------------------------------ span and start values


@pytest.mark.parametrize(
    ("value", "columns"),
    [
        ("٣", 1),  # Arabic-Indic 3: int() reads it, browsers do not
        ("３", 1),  # fullwidth 3
        ("1_0", 1),  # int() reads 10
        ("2px", 2),  # browsers read the leading digits
        ("3;", 3),
        ("0000000003", 3),  # leading zeros (was cut to 8 characters: 0)
        ("1e9", 1),
        ("-5", 1),
        ("abc", 1),
        (" +2 ", 2),
    ],
)
@pytest.mark.parametrize("features", FEATURES)
def test_a_colspan_is_read_as_browsers_read_it(value, columns, features):
    html = (
        f"<table><tr><td colspan='{value}'>x</td><td>y</td></tr>"
        "<tr><td>p</td><td>q</td><td>r</td><td>s</td></tr></table>"
    )
    first_row = texts(parse(html, features))[0].split("\n")[2]
    assert first_row == "| " + " | ".join(["x"] * columns + ["y"]) + " |"


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [("٣", 1, 1), ("7", 1, 7), ("\t-4x", 1, -4), ("", 9, 9), (None, 9, 9), ("9" * 50, 1, 10**10)],
)
def test_html_integer_follows_the_html_standard(value, default, expected):
    assert html_integer(value, default) == expected


@pytest.mark.parametrize("features", FEATURES)
def test_an_ordered_list_start_is_read_as_browsers_read_it(features):
    html = '<ol start="٣"><li>a</li></ol><ol start="5."><li>b</li></ol>'
    assert texts(parse(html, features)) == ["1. a\n\n5. b"]


# ---------------------------------------------------- rows nested by html.parser

_UNCLOSED_TABLES = [
    (  # end tags of rows and cells may be left out (legal HTML)
        "<table><tr><th>Item<th>Days<tr><td>Phone<td>14<tr><td>TV<td>30</table>",
        "| Item | Days |\n| --- | --- |\n| Phone | 14 |\n| TV | 30 |",
    ),
    (  # row groups left open too; a rowspan reaching into a nested row
        "<table><thead><tr><th>A<th>B<tbody><tr><td rowspan=2>1<td>2<tr><td>3"
        "<tfoot><tr><td>f1<td>f2</table>",
        "| A | B |\n| --- | --- |\n| 1 | 2 |\n| 1 | 3 |\n| f1 | f2 |",
    ),
    (  # text after a closed cell is outside any cell: shown before the table
        "<table><tr><td>a<td>b</td> note <tr><td>c<td>d</table>",
        "note\n\n|  |  |\n| --- | --- |\n| a | b |\n| c | d |",
    ),
]


@pytest.mark.parametrize(("html", "table"), _UNCLOSED_TABLES)
@pytest.mark.parametrize("features", FEATURES)
def test_unclosed_rows_are_rows_of_their_own_with_every_builder(html, table, features):
    """html.parser nests the rest of the table in an unclosed ``<tr>``: the rows were glued
    into one cell ('| Phone | 14 TV 30 |')."""
    assert texts(parse(html, features)) == [table]


@pytest.mark.parametrize("features", FEATURES)
def test_thousands_of_unclosed_rows_keep_every_row_in_bounded_nodes(features):
    n = 3000
    html = "<table>" + "".join(f"<tr><td>x{i}<td>y{i}" for i in range(n))
    nodes = parse(html, features)
    rows = [line for node in nodes for line in node.text.split("\n") if "x" in line]
    assert rows == [f"| x{i} | y{i} |" for i in range(n)]
    assert_bounded(nodes, html)


# --------------------------------------------------- character references, styles


@pytest.mark.parametrize("features", FEATURES)
def test_a_numeric_reference_of_many_digits_is_read_not_a_failure(features):
    """html.parser passed the digits to int(), which refuses more than 4300 of them."""
    html = (
        f"<p>a&#{'0' * 10_000}65;b&#{'9' * 5000};c&#x{'0' * 10_000}41;d</p>"
        f"<p><img alt='e&#{'0' * 10_000}66;f'></p>"
    )
    assert texts(parse(html, features)) == ["aAb\ufffdcAd\n\neBf"]


@pytest.mark.parametrize(
    ("attributes", "hidden"),
    [
        ('aria-hidden="TRUE "', True),
        ('style="visibility: collapse"', True),
        ('style="DISPLAY : NONE !important"', True),
        ('style="display:/* x */none"', True),
        ('style="display:none; display:block"', False),  # the last declaration wins
        ('style="--display: none; max-display: none"', False),
        ('style="/* display:none */ color: red"', False),
        ('style="content: none; display: inline"', False),
        ('hidden="until-found"', False),
    ],
)
def test_inline_styles_hide_by_their_declarations(attributes, hidden):
    tag = BeautifulSoup(f"<div {attributes}>x</div>", "html.parser").div
    assert is_hidden(tag) is hidden


@pytest.mark.parametrize("features", FEATURES)
def test_iframe_content_kept_by_custom_tags_is_parsed_once_not_shown_as_markup(features):
    html = '<p>a</p><iframe srcdoc="<p>inner</p>">fallback <b>f</b> &amp;amp;</iframe><p>z</p>'
    nodes = parse(html, features, boilerplate_tags=["nav"])
    assert texts(nodes) == ["a\n\nfallback f &amp;\n\nz"]
    assert texts(parse(html, features)) == ["a\n\nz"]  # dropped by default, srcdoc never text


# ----------------------------------------------------------------- resource bombs


@pytest.mark.parametrize("features", FEATURES)
def test_a_one_row_table_of_many_cells_keeps_every_cell(features):
    n = 5000
    html = "<table><tr>" + "".join(f"<td>c{i}</td>" for i in range(n)) + "</tr></table>"
    nodes = parse(html, features)
    words = [w for node in nodes for w in node.text.replace("|", " ").split() if w[0] == "c"]
    assert sorted(set(words), key=lambda w: int(w[1:])) == [f"c{i}" for i in range(n)]
    assert_bounded(nodes, html)


@pytest.mark.parametrize("span", ["1000000", str(2**31), "99999999999999999999"])
@pytest.mark.parametrize("features", FEATURES)
def test_huge_spans_on_many_cells_stay_proportional(span, features):
    n = 500
    html = (
        "<table><tr>"
        + "".join(f"<td colspan={span} rowspan={span}>c{i}</td>" for i in range(n))
        + "</tr>"
        + "<tr><td>a</td><td>b</td></tr>" * 50
        + "</table>"
    )
    nodes = parse(html, features)
    joined = " ".join(texts(nodes))
    assert all(f"c{i} " in joined for i in range(n))
    assert_bounded(nodes, html)


@pytest.mark.parametrize("features", FEATURES)
def test_a_thousand_nested_tables_keep_their_text(features):
    html = "<table><tr><td>" * 1000 + "deep" + "</td></tr></table>" * 1000
    assert texts(parse(html, features)) == ["deep"]


@pytest.mark.parametrize("features", FEATURES)
def test_tables_of_only_headers_or_no_rows_lose_nothing(features):
    html = (
        "<table></table><table><caption>Cap</caption></table><table><tbody><tr></tr></tbody>"
        "</table><table><tr><th>A</th><th>B</th></tr><tr><th>C</th><th>D</th></tr></table>"
    )
    assert texts(parse(html, features)) == ["Cap\n\n| A | B |\n| --- | --- |\n| C | D |"]


def test_a_markdown_table_of_ten_thousand_columns_is_cut_under_the_caps():
    n = 10_000
    markdown = (
        "| " + " | ".join(f"h{i}" for i in range(n)) + " |\n" + "|---" * n + "|\n"
        "| " + " | ".join(f"c{i}" for i in range(n)) + " |\n"
    )
    nodes = parse(markdown, markdown=True)
    assert_bounded(nodes, markdown, factor=2)
    joined = "".join(texts(nodes))
    assert joined.count("h9999") == 1 and joined.count("c9999") == 1


@pytest.mark.parametrize("features", FEATURES)
def test_attributes_of_megabytes_and_thousands_of_attributes_are_cheap(features):
    alt = "word " * 200_000  # 1 MB of alt text: kept, split under the caps
    many = " ".join(f"a{i}='v{i}'" for i in range(20_000))
    html = f'<p title="{"t" * 1_000_000}">Intro</p><p {many}>Body</p><img alt="{alt}"><p>End</p>'
    nodes = parse(html, features)
    joined = " ".join(texts(nodes))
    assert joined.split()[:2] == ["Intro", "Body"] and joined.split()[-1] == "End"
    assert joined.count("word") == 200_000 and "t" * 100 not in joined
    assert_bounded(nodes, html)


@pytest.mark.parametrize("features", FEATURES)
def test_deeply_nested_inline_tags_and_entity_chains_do_not_recurse(features):
    n = 20_000
    html = "<p>" + "<b>" * n + "deep" + "</b>" * n + "</p><p>" + "&amp;amp;" * n + "</p>"
    nodes = parse(html, features)
    joined = "".join(texts(nodes)).replace("\n", "")
    assert joined.startswith("deep&amp;") and joined.count("&amp;") == n
    assert_bounded(nodes, html)


@pytest.mark.parametrize("features", FEATURES)
def test_an_attribute_given_twice_keeps_its_first_value_with_every_builder(features):
    """bs4's html.parser builder kept the last value; lxml and browsers keep the first."""
    html = (
        '<p aria-hidden="true" aria-hidden="false">hidden</p><p>shown <img alt="A" alt="B"></p>'
        "<table><tr><td colspan=2 colspan=1>x</td><td>y</td></tr>"
        "<tr><td>p</td><td>q</td><td>r</td></tr></table>"
    )
    assert texts(parse(html, features)) == [
        "shown A\n\n|  |  |  |\n| --- | --- | --- |\n| x | x | y |\n| p | q | r |"
    ]
