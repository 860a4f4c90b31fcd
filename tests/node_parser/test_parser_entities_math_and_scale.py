"""Named character references without ``;`` and MathML in HTML, the cost per node on large
corpora (counted, never timed), and hostile Markdown (byte-order marks inside a file, a
heading of one giant "word")."""

from __future__ import annotations

import html

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser
from llama_index_ragtune.node_parser.html_entities import spell_named_references

FEATURES = ["lxml", "html.parser"]


def html_texts(markup: str, features: str, **kwargs) -> list[str]:
    parser = StructuredHTMLNodeParser(
        parser_features=features, tokenizer=whitespace_tokens, chunk_size=200, **kwargs
    )
    return [node.text for node in parser.get_nodes_from_documents([Document(text=markup)])]


# ------------------------------------------------ named references without ';'

#: Text whose references the HTML standard reads by the longest legacy name (no ';' needed).
_TEXT_REFERENCES = [
    "Tom &amp Jerry",
    "&copy 2024 VoltHub",
    "x &notin set",
    "x &notit; y",
    "&ampx &copyx &lt3 &gt;",
    "&copy-2024 and &copy.",
    "an &foo; stays, &hellip; is known, &hellip without ';' is not",
    "&AMP &COPY &nbsp;end",
]


@pytest.mark.parametrize("text", _TEXT_REFERENCES)
def test_named_references_in_text_read_as_html5_with_both_tree_builders(text):
    """html.parser (with bs4) dropped the ';' of an unknown name (``&foo;`` read "&foo"),
    read ``&notin`` as "∉" (the standard: "¬in"), and left ``&ampx``/``&copy-2024`` as
    text; lxml reads them as the standard does (Python's ``html.unescape`` too)."""
    expected = " ".join(html.unescape(text).replace("\xa0", " ").split())
    for features in FEATURES:
        assert html_texts(f"<p>{text}</p>", features) == [expected], features


@pytest.mark.parametrize(
    ("alt", "expected"),
    [
        ("a &copy b", "a © b"),
        ("a &copyx b", "a &copyx b"),  # followed by a letter: not a reference in an attribute
        ("?a=1&copy=2", "?a=1&copy=2"),  # followed by '=': not a reference in an attribute
        ("&lt3 &amp;x &notin &not in &foo;", "&lt3 &x &notin ¬ in &foo;"),
    ],
)
def test_named_references_in_attribute_values_read_as_html5(alt, expected):
    for features in FEATURES:
        assert html_texts(f'<p>Chart: <img alt="{alt}"></p>', features) == [f"Chart: {expected}"], (
            features
        )


def test_spelling_named_references_leaves_tags_known_references_and_plain_text_alone():
    markup = '<a href="/x?q=1&amp;r=2" title="T">AT&T &amp; R&D</a>'
    assert spell_named_references(markup).replace("&amp;T", "&T").replace("&amp;D", "&D") == (
        markup
    )
    assert spell_named_references("no ampersand <b>here</b>") == "no ampersand <b>here</b>"


# ------------------------------------------------------------------ MathML

_SQUARE = (
    "<math><semantics><msup><mi>x</mi><mn>2</mn></msup>"
    '<annotation encoding="application/x-tex">x^2</annotation></semantics></math>'
)


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        (f"<p>{_SQUARE} is squared</p>", "x^2 is squared"),
        (
            "<p>Area <math><mi>π</mi><msup><mi>r</mi><mn>2</mn></msup><mo>+</mo><mn>1</mn>"
            "</math> ok</p>",
            "Area π r 2 + 1 ok",
        ),
        ('<p>Sum <math alttext="a+b"><mi>a</mi><mo>+</mo><mi>b</mi></math></p>', "Sum a+b"),
        (
            "<p><math><semantics><mi>y</mi><annotation-xml encoding='MathML-Content'>"
            "<ci>y</ci></annotation-xml></semantics></math> alone</p>",
            "y alone",
        ),
        (f"<table><tr><th>f</th><th>g</th></tr><tr><td>{_SQUARE}</td><td>1</td></tr></table>",
         "| f | g |\n| --- | --- |\n| x^2 | 1 |"),
    ],
)  # fmt: skip
def test_mathml_reads_as_one_form_with_both_tree_builders(markup, expected, features):
    """The annotation was glued to the presentation text ("x2x^2"), tokens to each other."""
    assert html_texts(markup, features) == [expected]


@pytest.mark.parametrize("features", FEATURES)
def test_a_formula_in_a_heading_titles_its_section_by_its_tex(features):
    parser = StructuredHTMLNodeParser(
        parser_features=features, tokenizer=whitespace_tokens, chunk_size=64
    )
    page = f"<h2>Energy {_SQUARE.replace('x^2', 'E=mc^2')}</h2><p>Text.</p>"
    node = parser.get_nodes_from_documents([Document(text=page)])[0]
    assert node.metadata["section_title"] == "Energy E=mc^2"


def test_markdown_dollar_math_is_left_as_written():
    text = "# Energy\n\nInline $E=mc^2$ and\n\n$$\n\\int_0^1 x\\,dx\n$$\n"
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=200)
    assert [n.text for n in parser.get_nodes_from_documents([Document(text=text)])] == [
        text.strip()
    ]


# ------------------------------------------------------- cost per node (counted)


class _CountingTokenizer:
    calls = 0

    def __call__(self, text: str) -> list[str]:
        _CountingTokenizer.calls += 1
        return text.split()


def _token_counts(parser_class, document: str, **kwargs) -> tuple[int, int]:
    _CountingTokenizer.calls = 0
    parser = parser_class(tokenizer=_CountingTokenizer(), chunk_size=64, **kwargs)
    nodes = parser.get_nodes_from_documents([Document(text=document, metadata={"store": "S"})])
    return _CountingTokenizer.calls, len(nodes)


@pytest.mark.parametrize(
    ("parser_class", "section", "kwargs"),
    [
        (StructuredMarkdownNodeParser, "## Topic {i}\n\nShort answer {i}.\n\n", {}),
        (StructuredHTMLNodeParser, "<h2>Topic {i}</h2><p>Short answer {i}.</p>", {}),
        (
            StructuredHTMLNodeParser,
            "<h2>Topic {i}</h2><p>Short answer {i}.</p>",
            {"parser_features": "html.parser"},
        ),
    ],
)
def test_token_counts_grow_linearly_and_the_section_metadata_is_counted_once(
    parser_class, section, kwargs
):
    """Each section's metadata was counted twice (for the check, then again for the
    budget): six tokenizer calls per node of a heading-rich corpus where five do."""
    counts = {}
    for n in (200, 800):
        calls, nodes = _token_counts(
            parser_class, "".join(section.format(i=i) for i in range(n)), **kwargs
        )
        assert nodes == n
        counts[n] = calls
    assert counts[800] <= 5 * 800 + 10, counts
    assert counts[800] - counts[200] <= 5 * 600, counts  # linear: a fixed cost per section


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_a_heading_of_one_giant_word_is_clipped_in_the_metadata_and_kept_in_the_text(
    parser_class,
):
    """A tokenizer reads a 200,000-character run as one token: the whole heading was the
    section_path of every one of the ~200 nodes (40 MB of metadata), never clipped."""
    title = "y" * 200_000
    text = f"# {title}\n\nBody." if parser_class is StructuredMarkdownNodeParser else (
        f"<h1>{title}</h1><p>Body.</p>"
    )  # fmt: skip
    parser = parser_class(tokenizer=whitespace_tokens, chunk_size=64)
    nodes = parser.get_nodes_from_documents([Document(text=text)])
    assert all(len(node.metadata["section_path"]) <= 16 * 64 for node in nodes)
    assert nodes[0].metadata["section_path"].endswith("\u2026")
    assert sum(node.text.count("y") for node in nodes) == len(title) + 1  # "Body." has one


# ---------------------------------------------------- byte-order marks mid-file


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_byte_order_marks_at_line_starts_hide_no_heading_list_or_fence(newline):
    """Files concatenated after reading as utf-8 leave a BOM at the start of a later line:
    it hid the heading there, so its text was filed under the previous section."""
    lines = [
        "# Returns", "", "Within 14 days.", "\ufeff# Delivery", "", "Two days.", "",
        "\ufeff\ufeff## Fees", "", "\ufeff- Free over 50", "\ufeff```", "# not a heading",
        "\ufeff```", "\ufeffTracking", "\ufeff===", "", "By email.",
    ]  # fmt: skip
    text = newline.join(lines)
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=200)
    nodes = parser.get_nodes_from_documents([Document(text=text)])
    paths = [node.metadata["section_path"] for node in nodes]
    assert paths == ["Returns", "Delivery", "Delivery > Fees", "Tracking"]
    assert "# not a heading" in nodes[2].text and "- Free over 50" in nodes[2].text
    for node in nodes:  # node text is the source, BOMs and all
        assert text[node.start_char_idx : node.end_char_idx] == node.text
    assert "".join(node.text for node in nodes).count("\ufeff") == text.count("\ufeff")
