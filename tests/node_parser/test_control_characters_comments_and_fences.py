"""Regression tests from a second hostile-input battery: control characters (raw or from
numeric references), comments and declarations that ``html.parser`` showed as text,
``noframes``/``noembed`` content that lxml showed as markup, split code blocks with long
info strings, and ``$$`` display math."""

from __future__ import annotations

import re

import pytest
from llama_index.core import Document
from markdown_it import MarkdownIt
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import (
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)
from llama_index_ragtune.node_parser.markdown import markdown_blocks

FEATURES = ["lxml", "html.parser"]
#: What no node text may hold: C0/C1 controls other than tab and newline (CR belongs to a
#: Markdown source's CRLF line ends, kept verbatim), lone surrogates.
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def parse(parser_class, text: str, chunk_size: int = 64, **kwargs):
    parser = parser_class(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False, **kwargs
    )
    return parser.get_nodes_from_documents([Document(text=text, id_="doc")])


def texts(parser_class, text: str, **kwargs) -> list[str]:
    return [node.text for node in parse(parser_class, text, **kwargs)]


# ------------------------------------------------------------ control characters


REFERENCES = [
    *("&#1;", "&#0;", "&#x7f;", "&#X7F;", "&#x81;", "&#x8d;", "&#x9f;", "&#x0b;", "&#12;"),
    *("&#xD800;", "&#xdfff;", "&#x110000;", "&#99999999999;", "&#" + "9" * 40 + ";"),
    *("&#1", "&#0000001;", "&#x1b"),
]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("reference", REFERENCES)
def test_no_numeric_reference_puts_a_control_character_in_a_node(reference, features):
    # was: &#1;, &#x7f;, &#x81; (C1 controls the HTML table does not map) and &#x0b; in a
    # <pre> reached the node text, in paragraphs, code, headings, cells and alt text alike
    html = (
        f"<h2>T{reference}x</h2><p>a{reference}b</p><pre>c{reference}d</pre>"
        f"<table><tr><th>h{reference}</th></tr><tr><td>x{reference}y</td></tr></table>"
        f"<p><img alt='al{reference}t'></p><svg aria-label='s{reference}g'></svg>"
    )
    nodes = parse(StructuredHTMLNodeParser, html, parser_features=features)
    assert nodes
    for node in nodes:
        assert not FORBIDDEN.search(node.text), node.text
        assert not FORBIDDEN.search(node.metadata["section_path"])


@pytest.mark.parametrize("features", FEATURES)
def test_control_references_read_as_the_html_table_says_and_nothing_is_lost(features):
    html = "<p>&#x93;quoted&#x94; a&#1;b c&#x81;d &#x80;5 &#x85; e&#0;f</p><pre>x&#x0c;y</pre>"
    assert texts(StructuredHTMLNodeParser, html, parser_features=features) == [
        "\u201cquoted\u201d a b c d \u20ac5 \u2026 e\ufffdf\n\n```\nx y\n```"
    ]


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_raw_control_characters_are_replaced_one_for_one(parser_class):
    # was: raw C0/C1 controls (an ANSI colour code, Windows-1252 quotes read as Latin-1)
    # reached the nodes; a share above 10% is still refused as binary (DocumentParseError)
    text = (
        "# Log\x07 notes\n\nThe \x93quick\x94 fox\x01jumps \x1b[31mred\x1b[0m over the lazy dog, "
        "a\x0bb\x0cc and more words to keep the share of controls small."
    )
    nodes = parse(parser_class, text)
    joined = "\n".join(node.text for node in nodes)
    assert not FORBIDDEN.search(joined)
    assert "\u201cquick\u201d fox jumps [31mred [0m" in " ".join(joined.split())
    if parser_class is StructuredMarkdownNodeParser:  # offsets still point at the source
        assert nodes[0].metadata["section_path"] == "Log notes"
        for node in nodes:
            assert node.end_char_idx - node.start_char_idx == len(node.text)


def test_crlf_tab_and_newline_are_kept_in_markdown():
    text = "# T\r\n\r\nLine\tone\r\nline two"
    nodes = parse(StructuredMarkdownNodeParser, text)
    assert [node.text for node in nodes] == [text]


# ------------------------------------------------------ markup that showed as text


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>a</p><!-- unclosed comment <p>hidden</p>", ["a"]),  # runs to the end
        ("<p>a</p><!-- unclosed comment", ["a"]),
        ("<p>a</p><!--> <p>b</p>", ["a\n\nb"]),  # an empty comment
        ("<p>a</p><!---> <p>b</p>", ["a\n\nb"]),
        ("<p>a</p><!-- x --!> <p>b</p>", ["a\n\nb"]),  # --!> closes a comment
        ("<p>a</p><!-- x -- > y --> <p>b</p>", ["a\n\nb"]),  # "-- >" does not
        ("<!DOCTYPE html", []),
        ("<p>a</p><!", ["a"]),
        ("<p>a</p><!-", ["a"]),
        ("<p>a</p><?xml unclosed", ["a"]),
        ("<p>a <?php echo 1; ?> b</p>", ["a b"]),
        ("<!DOCTYPE html><!--x--><p>a</p><!-- <script>s()</script> -->", ["a"]),
        (  # "&#65b" is "A" and "b": html.parser read the rest of the page as text
            "<p>a&#65b c</p><script>x()</script><nav>Menu</nav><p>&#x42</p>",
            ["aAb c\n\nB"],
        ),
        ("<p>end &#65", ["end A"]),
        (  # comments inside a script or an attribute are not cut out
            "<script>var s = '<!-- x';</script><p title='<!--'>a</p><p>b --!> c</p>",
            ["a\n\nb --!> c"],
        ),
        (  # nor in text-only elements: the page goes on after them (html.parser's
            # <textarea><!-- </textarea> hid the rest of the page, with or without this fix)
            "<textarea><!-- </textarea><p>kept</p><noembed><!-- x</noembed><p>too</p>",
            ["kept\n\ntoo"],
        ),
        ("<iframe><!-- x</iframe><p>after</p><!-- y -->", ["after"]),
        (  # a title's content is text: html.parser showed "a <!-- b</title>"
            "<head><title>a <!-- b &amp; c</title></head><p>kept</p>",
            ["kept"],
        ),
        (  # a title in the body is not shown either (lxml showed "<b>t</b>")
            "<p>x</p><title><b>t</b> <!-- c</title><p>y</p>",
            ["x\n\ny"],
        ),
    ],
)
def test_comments_and_declarations_are_never_text(html, expected):
    # was: html.parser (the fallback when lxml is missing) showed them, and often the rest
    # of the page, as text; lxml did not
    assert texts(StructuredHTMLNodeParser, html, parser_features="html.parser") == expected
    assert texts(StructuredHTMLNodeParser, html, parser_features="lxml") == expected


def test_an_svg_title_is_not_escaped_as_a_text_only_title():
    html = "<svg><title>Sales <b>chart</b></title></svg><p>a</p>"
    assert texts(StructuredHTMLNodeParser, html, parser_features="html.parser") == [
        "Sales chart\n\na"
    ]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            "<p>x</p><noframes><p>Your browser <b>lacks</b> frames &amp; more</p></noframes>",
            ["x\n\nYour browser lacks frames & more"],
        ),
        ("<noembed><h2>Plugin</h2><p>missing</p></noembed><p>y</p>", ["## Plugin\n\nmissing\n\ny"]),
        (
            "<frameset><frame src=a><noframes><body><p>Frames needed</p></body></noframes>"
            "</frameset>",
            ["Frames needed"],
        ),
        ("<noembed>a<noembed>b<noembed><i>c</i></noembed>d</noembed>e", ["abcde"]),
        ("<p>x</p><template><p>t</p></template><iframe><p>i</p></iframe><p>y</p>", ["x\n\ny"]),
    ],
)
def test_noframes_and_noembed_content_is_text_not_markup(html, expected, features):
    # was: lxml reads their content as raw text, so the nodes showed "<p>Your browser ..."
    assert texts(StructuredHTMLNodeParser, html, parser_features=features) == expected


@pytest.mark.parametrize("features", FEATURES)
def test_deeply_nested_noembed_is_parsed_once(features, monkeypatch):
    from llama_index_ragtune.node_parser import html_text

    depth = 3000
    html = "<noembed>" * depth + "<b>x &amp;lt; y</b>" + "</noembed>" * depth + "<p>z</p>"
    parsed: list[int] = []
    original = html_text.for_html_parser

    def counting(markup):
        parsed.append(len(markup))
        return original(markup)

    monkeypatch.setattr(html_text, "for_html_parser", counting)
    assert texts(StructuredHTMLNodeParser, html, parser_features=features) == ["x &lt; y\n\nz"]
    assert sum(parsed) <= 2 * len(html)  # each character parsed at most twice: linear


# ------------------------------------------------------------------ code and math


_MD = MarkdownIt("commonmark")


def _one_closed_fence(text: str) -> str:
    """The info string of ``text`` when it is exactly one closed fenced code block."""
    tokens = [t for t in _MD.parse(text) if t.level == 0 and t.nesting != -1]
    assert [t.type for t in tokens] == ["fence"], text
    last = text.rstrip().splitlines()[-1].strip()
    assert set(last) == {tokens[0].markup[0]} and len(last) >= len(tokens[0].markup), text
    return tokens[0].info


@pytest.mark.parametrize("marker", ["```", "~~~~"])
@pytest.mark.parametrize("chunk_size", [24, 40])
def test_a_split_code_block_with_a_long_info_string_is_fenced_in_every_part(marker, chunk_size):
    # was: an opening line longer than a third of the cap was not repeated: the middle parts
    # were bare code lines, the first an unclosed fence and the last a stray closing fence
    info = 'python title="a b c d e f g h i j" linenums="1" hl_lines="2 3"'  # 14 words
    code = [f"line{i} = {i} + {i}" for i in range(30)]
    text = f"{marker}{info}\n" + "\n".join(code) + f"\n{marker}"
    nodes = parse(StructuredMarkdownNodeParser, text, chunk_size=chunk_size)
    assert len(nodes) > 2
    infos = [_one_closed_fence(node.text) for node in nodes]
    assert infos[0] == info and set(infos[1:]) == {"python"}
    lines = [line for node in nodes for line in node.text.splitlines()[1:-1]]
    assert lines == code
    assert all(len(node.text.split()) <= chunk_size for node in nodes)


def test_a_code_block_whose_opening_line_nearly_fills_the_cap_is_still_split_within_it():
    # no room for that line and code in one part: split as lines, as before, within the cap
    info = "python " + " ".join(f"k{i}=v" for i in range(40))
    text = f"```{info}\n" + "\n".join(f"x{i} = {i}" for i in range(30)) + "\n```"
    nodes = parse(StructuredMarkdownNodeParser, text, chunk_size=48)
    assert all(len(node.text.split()) <= 48 for node in nodes)
    assert "".join(text.split()) == "".join("".join(node.text for node in nodes).split())


def test_display_math_is_one_block_even_when_its_lines_look_like_markdown():
    # was: "+ c" read as a list and "# x" as a heading, splitting the formula (and the section)
    text = "# Sums\n\nIntro.\n\n$$\na = b\n+ c\n# x\n$$\n\nAfter."
    blocks = markdown_blocks(text)
    assert [b.kind for b in blocks] == ["heading", "paragraph", "math", "paragraph"]
    assert blocks[2].text == "$$\na = b\n+ c\n# x\n$$"
    nodes = parse(StructuredMarkdownNodeParser, text)
    assert [node.text for node in nodes] == [text]
    assert nodes[0].metadata["block_types"] == "heading,paragraph,math"


def test_a_display_math_block_longer_than_the_cap_is_split_between_lines_each_part_delimited():
    # was: a paragraph split at words, mid-line, with one "$$" in the first and last parts only
    formula = [f"a_{{{i}}} + b_{{{i}}} = c_{{{i}}} \\\\" for i in range(30)]
    text = "Before.\n\n$$\n" + "\n".join(formula) + "\n$$\n\nAfter."
    nodes = parse(StructuredMarkdownNodeParser, text, chunk_size=24)
    math = [node.text for node in nodes if "$$" in node.text]
    assert len(math) > 2
    for part in math:
        body = part[part.index("$$") : part.rindex("$$") + 2]
        assert body.startswith("$$\n") and body.endswith("\n$$"), part
        assert body.count("$$") == 2
    lines = [line for part in math for line in part.splitlines() if line.startswith("a_")]
    assert lines == formula


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("$$x = y$$", ["math"]),
        ("$$ a\nb $$", ["math"]),
        ("$$$ expensive\n\nprice $$", ["paragraph", "paragraph"]),  # not an opening line
        ("$$\nx\n\ny\n$$", ["paragraph", "paragraph"]),  # a blank line: not one formula
        ("Text\n$$\nx\n$$", ["paragraph"]),  # does not interrupt a paragraph
        ("$$\nx", ["paragraph"]),  # never closed
        ("```\n$$\nx\n$$\n```", ["code"]),
        ("- item\n\n  $$\n  x\n  $$", ["list"]),
    ],
)
def test_what_is_display_math(text, kinds):
    assert [block.kind for block in markdown_blocks(text)] == kinds


def test_many_unclosed_math_openers_are_each_read_once():
    # each failed search for a closing line stops at the next "$$" line: linear in the lines
    text = "\n".join(f"$$ a{i}\nword{i}" for i in range(20_000))
    blocks = markdown_blocks(text)
    assert [b.kind for b in blocks] == ["paragraph"]
    assert blocks[0].text == text
