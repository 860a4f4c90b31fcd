"""Regression tests: unusual Markdown that real documents contain (reference definitions,
headings without text, invisible characters, classic-Mac line ends, stray arguments)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import (
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)

WORD = re.compile(r"[^\W_]+")


def md_nodes(text: str, chunk_size: int = 64):
    parser = StructuredMarkdownNodeParser(chunk_size=chunk_size, tokenizer=whitespace_tokens)
    return parser.get_nodes_from_documents([Document(text=text, id_="guide.md")])


def lost_words(text: str, nodes) -> Counter:
    return Counter(WORD.findall(text)) - Counter(w for n in nodes for w in WORD.findall(n.text))


@pytest.mark.parametrize(
    "text",
    [
        "[logo]: ./img/logo.png\n# Store\n\nOur ![logo][logo] shop.",
        '# Store\n\nSee [the policy][1].\n\n[1]: https://example.com/returns "Returns policy"\n',
        "# Store\n\nClaim.[^1]\n\n[^1]: Survey-2021\n\n## Hours\n\nNine to five.",
        "[home]: https://example.com\n[docs]: https://example.com/docs",
    ],
)
def test_link_reference_definitions_are_kept(text):
    # markdown-it gives them no token: they were dropped at the edges of a node.
    nodes = md_nodes(text)
    assert not lost_words(text, nodes)
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text


def test_a_heading_of_an_image_is_titled_by_its_alt_text():
    nodes = md_nodes("# ![Acme *Support*](logo.png)\n\nCall us.")
    assert nodes[0].metadata["section_path"] == "Acme Support"
    assert nodes[0].text.startswith("# ![Acme")


def test_a_heading_without_visible_title_keeps_its_text():
    text = "# <img src='logo.png' alt='Acme Corp'>\n\nCall us.\n\n# Hours\n\nNine to five."
    nodes = md_nodes(text)
    assert not lost_words(text, nodes)
    assert [n.metadata["section_path"] for n in nodes] == ["", "Hours"]


def test_invisible_characters_do_not_reach_section_titles():
    text = "# \u200b\ufeff\n\nIntro.\n\n## Re\u200bturns\u200f\n\n### \u2067Refunds\u2069\n\nIn 30 days."
    nodes = md_nodes(text)
    assert [n.metadata["section_path"] for n in nodes] == ["", "Returns > Refunds"]
    assert "Re\u200bturns" in nodes[1].text  # the text itself is the source
    html = "<h1>\u200b</h1><p>Intro.</p><h2>Re\u200bturns\u00ad</h2><p>In 30 days.</p>"
    parser = StructuredHTMLNodeParser(chunk_size=64, tokenizer=whitespace_tokens)
    paths = [
        n.metadata["section_path"] for n in parser.get_nodes_from_documents([Document(text=html)])
    ]
    assert paths == ["", "Returns"]


@pytest.mark.parametrize(
    "body",
    [
        "```python\n" + "".join(f"x_{i} = compute({i})\n" for i in range(120)) + "```\n",
        "".join(f"    indented_{i} = {i}\n" for i in range(120)),
    ],
)
def test_classic_mac_line_ends_split_code_at_lines(body):
    # A lone CR ends a line: code used to be cut mid-line (partial) as if it were one line.
    text = ("# Code\n\n" + body).replace("\n", "\r")
    nodes = md_nodes(text, chunk_size=40)
    assert len(nodes) > 3
    assert not any(n.metadata["partial_unit"] for n in nodes)
    assert not lost_words(text, nodes)
    lines = {line for line in text.split("\r") if line.strip()}
    for node in nodes:
        assert set(re.split(r"\r|\n", node.text)) - {""} <= lines


def test_classic_mac_line_ends_in_front_matter_and_fences():
    text = "---\r" + "".join(f"key{i}: value {i}\r" for i in range(60)) + "---\r# H\r\rBody."
    nodes = md_nodes(text, chunk_size=40)
    assert not any(n.metadata["partial_unit"] for n in nodes)
    assert all(n.text.startswith("---") for n in nodes[:-1])
    fence = "# C\r\r```sh\r" + "".join(f"run step {i}\r" for i in range(80)) + "```"
    nodes = md_nodes(fence, chunk_size=40)
    assert all(n.text.rstrip().endswith("```") for n in nodes)
    assert all("```sh" in n.text for n in nodes)


@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_unknown_arguments_are_refused_not_ignored(parser_class):
    with pytest.raises(TypeError, match="chunk_overlap.*do not overlap"):
        parser_class(chunk_size=128, chunk_overlap=20)
    with pytest.raises(TypeError, match="'chunk_sise'"):
        parser_class(chunk_sise=128)
    parser = parser_class(chunk_size=128, on_error="skip")
    assert parser_class.from_dict(parser.to_dict()).chunk_size == 128


@pytest.mark.parametrize(
    "metadata",
    [
        {"title": "Caf\udce9 menu"},
        {"tags": ["ok", "bad \ud800"]},
        {"source": {"file": "r\udcc3sum\udce9.md"}},
        {"bad\udce9key": "value"},
    ],
)
@pytest.mark.parametrize("parser_class", [StructuredMarkdownNodeParser, StructuredHTMLNodeParser])
def test_lone_surrogates_in_metadata_name_the_document_and_key(parser_class, metadata):
    # a lossy decode of a file name or title; was "TextInputSequence must be str" from the tokenizer
    from llama_index_ragtune.node_parser import DocumentParseError

    parser = parser_class(chunk_size=64)
    document = Document(text="# Menu\n\nSoup of the day.", id_="menu.md", metadata=metadata)
    with pytest.raises(DocumentParseError, match="menu.md.*key.*lone surrogates") as err:
        parser.get_nodes_from_documents([document])
    assert err.value.cause == "metadata"
    str(err.value).encode("utf-8")  # the message itself prints
    skipping = parser_class(chunk_size=64, on_error="skip")
    assert skipping.get_nodes_from_documents([document]) == []
