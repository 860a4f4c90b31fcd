"""Hostile inputs for containers and character references: code fences inside list items and
blockquotes over the cap, blockquotes and lists split at line boundaries, numeric character
references read the same by the Markdown and HTML parsers, and deep nesting."""

from __future__ import annotations

import re

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser
from llama_index_ragtune.node_parser.markdown import markdown_blocks
from llama_index_ragtune.node_parser.split import split_block

CODE = [f"total_{i} = price_{i} * quantity_{i}  # line {i}" for i in range(16)]
_PREFIX = re.compile(r"^(?:[ \t>]|[-*]|\d+\.)*")  # quote markers, list markers, indentation


def container_prefix(line: str) -> str:
    """The container prefix of ``line`` with list markers written as spaces."""
    prefix = _PREFIX.match(line).group()
    return re.sub(r"[-*]|\d+\.", lambda m: " " * len(m.group()), prefix).expandtabs(4)


def content(line: str) -> str:
    return line[len(_PREFIX.match(line).group()) :]


def md_nodes(text: str, chunk_size: int = 40):
    parser = StructuredMarkdownNodeParser(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False
    )
    return parser.get_nodes_from_documents([Document(text=text, id_="guide.md")])


def html_nodes(html: str, chunk_size: int = 40):
    parser = StructuredHTMLNodeParser(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False
    )
    return parser.get_nodes_from_documents([Document(text=html, id_="page.html")])


def assert_every_part_is_fenced(nodes, fence: str, prefix: str, code: list[str]) -> None:
    """Every node holding code opens and closes it with ``fence``, every code and fence line
    carries the container's ``prefix`` (list markers as spaces), and the code lines are all
    there, in order, once."""
    seen = []
    code_nodes = 0
    for node in nodes:
        lines = node.text.splitlines()
        holds = [k for k, line in enumerate(lines) if content(line) in code]
        if not holds:
            continue
        code_nodes += 1
        first, last = holds[0], holds[-1]
        assert first >= 1 and content(lines[first - 1]).startswith(fence), node.text
        assert last + 1 < len(lines) and content(lines[last + 1]) == fence, node.text
        for line in lines[first - 1 : last + 2]:
            assert container_prefix(line) == prefix, (line, node.text)
        seen.extend(content(lines[k]) for k in holds)
    assert code_nodes > 1  # the block was split
    assert seen == code


def fenced(fence: str, info: str, prefix: str, first_prefix: str, newline: str = "\n") -> str:
    lines = [f"{first_prefix}{fence}{info}", *(prefix + line for line in CODE), prefix + fence]
    return newline.join(lines) + newline


CONTAINERS = [  # (first line prefix, prefix of the following lines, normalised prefix)
    ("- ", "  ", "  "),
    ("12. ", "    ", "    "),
    ("> ", "> ", "> "),
    ("> - ", ">   ", ">   "),
    ("- > ", "  > ", "  > "),
    ("-\t", "\t", "    "),
]


@pytest.mark.parametrize("fence", ["```", "~~~", "`````", "~~~~~~~"])
@pytest.mark.parametrize("info", ["", "python", 'python title="x.py"'])
@pytest.mark.parametrize("container", CONTAINERS)
def test_a_code_fence_in_a_list_or_quote_is_fenced_in_every_part(fence, info, container):
    first, later, normal = container
    nodes = md_nodes("Intro.\n\n" + fenced(fence, info, later, first) + "\nAfter.\n")
    assert_every_part_is_fenced(nodes, fence, normal, CODE)


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_a_code_fence_in_a_container_with_crlf_or_cr_line_ends(newline):
    nodes = md_nodes(fenced("```", "sh", "> ", "> ", newline))
    assert_every_part_is_fenced(nodes, "```", "> ", CODE)


def test_a_code_fence_after_text_in_a_list_item_keeps_the_item_text_once():
    text = "- Step one: run this.\n\n  ```bash\n" + "".join(f"  {c}\n" for c in CODE) + "  ```\n"
    nodes = md_nodes(text)
    assert_every_part_is_fenced(nodes, "```", "  ", CODE)
    assert sum(n.text.count("Step one: run this.") for n in nodes) == 1


def test_a_display_math_block_in_a_list_item_repeats_its_dollar_lines():
    math = [f"x_{i} = y_{i} + z_{i}" for i in range(16)]
    text = "1. $$\n" + "".join(f"   {m}\n" for m in math) + "   $$\n"
    nodes = md_nodes(text, chunk_size=20)
    assert len(nodes) > 1
    for node in nodes:
        lines = node.text.splitlines()
        assert lines[0].strip(" 1.") == "$$" and lines[-1].strip() == "$$", node.text
    assert [line.strip() for n in nodes for line in n.text.splitlines() if "=" in line] == math


def test_a_fence_that_never_closes_in_a_list_item_loses_nothing_and_reopens():
    text = "- Run:\n  ```\n" + "".join(f"  {c}\n" for c in CODE) + "\nAfter the list.\n"
    nodes = md_nodes(text)
    code_nodes = [n for n in nodes if any(c in n.text for c in CODE)]
    assert len(code_nodes) > 1
    for node in code_nodes[1:]:
        assert node.text.startswith("  ```\n"), node.text
    kept = [line.strip() for n in nodes for line in n.text.splitlines() if line.strip() in CODE]
    assert kept == CODE


def test_a_pre_in_an_html_list_item_or_blockquote_is_fenced_in_every_part():
    pre = "<pre>" + "\n".join(CODE) + "</pre>"
    for html, prefix in (
        (f"<ul><li>Run{pre}</li></ul>", "  "),
        (f"<blockquote>{pre}</blockquote>", "> "),
    ):
        assert_every_part_is_fenced(html_nodes(html), "```", prefix, CODE)


def test_a_fence_too_long_to_repeat_is_not_repeated_and_nothing_is_lost():
    text = fenced("```", "", "> ", "> ")
    nodes = md_nodes(text, chunk_size=4)  # the two fence lines would take the whole budget
    assert all(len(n.text.split()) <= 4 for n in nodes)
    assert sum(n.text.count("```") for n in nodes) == 2  # the source's own two fence lines
    kept = [w for n in nodes for w in n.text.split() if w not in (">", "```")]
    assert kept == [w for w in text.split() if w not in (">", "```")]


def test_no_part_holds_a_bare_fence_line():
    text = "- Run these words first\n  then these words\n  ```\n"
    text += "".join(f"  {c}\n" for c in CODE) + "  ```\n  and a last line here\n"
    block = markdown_blocks(text)[0]
    for budget in range(12, 60):
        for piece in split_block(block, budget, lambda part: len(part.split())):
            fence_lines = [line for line in piece.text.splitlines() if line.strip() == "```"]
            assert len(fence_lines) % 2 == 0, (budget, piece.text)  # each opened fence closed


# ------------------------------------------------------------------ blockquotes


QUOTE_LINES = [f"Quoted line {i} says something short" for i in range(12)]


def test_a_blockquote_over_the_cap_is_split_at_line_boundaries():
    text = "".join(f"> {line}\n" for line in QUOTE_LINES)
    nodes = md_nodes(text, chunk_size=20)
    assert len(nodes) > 1
    for node in nodes:
        assert all(line.startswith("> ") for line in node.text.splitlines()), node.text
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert not node.metadata["partial_unit"]
    assert [line[2:] for n in nodes for line in n.text.splitlines()] == QUOTE_LINES


def test_an_over_long_quoted_line_is_split_at_sentences_and_every_part_stays_quoted():
    line = ". ".join(QUOTE_LINES) + "."
    for text, html in (
        (f"> > {line}\n", False),
        (f"<blockquote><blockquote><p>{line}</p></blockquote></blockquote>", True),
    ):
        nodes = html_nodes(text) if html else md_nodes(text, chunk_size=20)
        assert len(nodes) > 1
        for node in nodes:
            assert node.text.startswith("> > "), node.text
            assert node.text.endswith("."), node.text  # cut at sentence ends
        assert " ".join(n.text[4:] for n in nodes) == line


def test_a_quote_split_inside_its_markers_does_not_repeat_them():
    text = "> - " * 300 + "bottom"
    nodes = md_nodes(text, chunk_size=32)
    assert "".join(text.split()) == "".join("".join(n.text for n in nodes).split())


# ------------------------------------------------------------------ lists


def test_a_list_over_the_cap_is_split_between_items_and_nested_items_keep_their_indent():
    items = [f"- Item {i} has a few words.\n  - Sub item {i} words here." for i in range(10)]
    text = "\n".join(items) + "\n"
    nodes = md_nodes(text, chunk_size=24)
    assert len(nodes) > 1
    for node in nodes:
        assert node.text.startswith("- Item "), node.text
        assert text[node.start_char_idx : node.end_char_idx] == node.text
    assert "\n".join(n.text for n in nodes) == text.strip()


# ------------------------------------------------------------------ character references


REFERENCES = [
    "&#x93;", "&#147;", "&#X9C;", "&#x85;", "&#x81;", "&#0;", "&#x01;", "&#x7F;",
    "&#xD800;", "&#x110000;", "&#65;", "&amp;", "&#x2014;",
]  # fmt: skip


@pytest.mark.parametrize("reference", REFERENCES)
def test_numeric_references_in_titles_read_the_same_in_markdown_and_html(reference):
    markdown = md_nodes(f"# Say {reference}hi\n\nBody text.")[0].metadata
    page = html_nodes(f"<h1>Say {reference}hi</h1><p>Body text.</p>")[0].metadata
    assert markdown["section_path"] == page["section_path"]
    assert markdown["section_title"] == page["section_title"]


def test_c1_references_read_as_windows_1252_like_html5():
    nodes = md_nodes("# &#x93;Fresh&#x94; produce &#150; returns\n\n## Item &#x81;x\n\nText.")
    assert nodes[0].metadata["section_path"] == "\u201cFresh\u201d produce \u2013 returns > Item x"
    assert "&#x93;Fresh&#x94;" in nodes[0].text  # node text is the Markdown source


def test_a_reference_in_a_code_span_stays_literal():
    title = md_nodes("# Use `&#x93;` for quotes\n\nText.")[0].metadata["section_title"]
    assert title == "Use &#x93; for quotes"


# ------------------------------------------------------------------ deep nesting


class CountingTokenizer:
    """Whitespace tokens, counting the characters it was given (a measure of the work done)."""

    def __init__(self):
        self.characters = 0

    def __call__(self, text: str) -> list[str]:
        self.characters += len(text)
        return text.split()


@pytest.mark.parametrize(
    "text",
    [
        ">" * 10_000 + " deep quote\n",
        "> " * 5_000 + "deep quote\n",
        "- " * 5_000 + "deep item\n",
        "> - " * 2_500 + "```\n" + "".join(f"    code {i}\n" for i in range(200)),
    ],
    ids=["quote-markers", "spaced-quotes", "list-markers", "mixed-with-fence"],
)
def test_deep_nesting_keeps_the_text_with_bounded_work(text):
    tokenizer = CountingTokenizer()
    parser = StructuredMarkdownNodeParser(tokenizer=tokenizer, chunk_size=64, count_metadata=False)
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="deep.md")])
    kept = "".join("".join(n.text for n in nodes).split())
    assert kept.replace("```", "") == "".join(text.split()).replace("```", "")
    assert all(len(n.text.split()) <= 64 for n in nodes)
    assert tokenizer.characters < 200 * len(text)  # linear, not quadratic
