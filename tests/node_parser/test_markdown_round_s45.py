"""Regression tests from a hostile-Markdown round: a word over the cap (a table row of
thousands of cells, a long URL, CJK without spaces) cut inside its words at characters, and
an opening ``---`` read as front matter up to a thematic break far below, swallowing the
headings in between."""

from __future__ import annotations

import re

import pytest
from llama_index.core import Document

from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser

WORD = re.compile(r"[^\W_]+")


def parse(text: str, chunk_size: int = 128):
    parser = StructuredMarkdownNodeParser.from_defaults(chunk_size=chunk_size, count_metadata=False)
    return parser.get_nodes_from_documents([Document(text=text, id_="doc")])


def _words(text: str) -> set[str]:
    return set(WORD.findall(text))


# ------------------------------------------------- words over the cap: cut at punctuation

_COLUMNS = 3000
_WIDE_TABLE = (
    "|" + "|".join(f"c{i}" for i in range(_COLUMNS)) + "|\n"
    "|" + "---|" * _COLUMNS + "\n"
    "|" + "|".join(f"v{i}" for i in range(_COLUMNS)) + "|"
)


@pytest.mark.parametrize(
    "text",
    [
        _WIDE_TABLE,  # a row with no space: one "word" of 20 KB
        "# Links\n\nSee https://example.com/" + "/".join(f"seg{i}" for i in range(1500)),
        "# 店舗\n\n" + "、".join(f"東京{i}号店" for i in range(1500)),
    ],
    ids=["table-row", "url", "cjk"],
)
def test_a_word_over_the_cap_is_cut_between_its_parts_not_inside_them(text):
    # was: cut at a character wherever the cap fell: "c1074" became "c10" + "74" in two
    # nodes, so neither node held the cell a reader (or a keyword search) looks for
    nodes = parse(text)
    assert len(nodes) > 10
    seen = set().union(*(_words(node.text) for node in nodes))
    assert _words(text) <= seen  # every cell / path segment whole in some node
    assert not any(node.metadata["oversized"] for node in nodes)
    assert all(node.metadata["partial_unit"] for node in nodes)


def test_a_wide_table_keeps_every_cell_once_in_order():
    nodes = parse(_WIDE_TABLE)
    cells = [w for node in nodes for w in WORD.findall(node.text) if w[0] in "cv"]
    body = [w for w in cells if w.startswith("v")]
    assert body == [f"v{i}" for i in range(_COLUMNS)]
    assert {f"c{i}" for i in range(_COLUMNS)} <= set(cells)


def test_a_word_without_punctuation_is_still_cut_at_characters():
    # good input unchanged: no punctuation to cut at, so characters, and nothing lost
    word = "w" * 20_000
    nodes = parse(f"# Data\n\n{word}\n\nEnd.")
    assert (
        "".join(node.text.replace("# Data", "").replace("End.", "") for node in nodes)
        .replace("\n", "")
        .strip()
        == word
    )
    assert nodes[-1].text.endswith("End.")


# ------------------------------------------------ front matter closed by a thematic break


@pytest.mark.parametrize(
    "text",
    [
        "---\ntitle: Returns\n# Refunds\n\nWithin 30 days.\n\n---\n\nMore.",
        "---\nauthor: Ana\n\nWelcome to the shop.\n\n# Refunds\n\nWithin 30 days.\n\n---\nMore.",
    ],
)
def test_markdown_before_a_later_thematic_break_is_not_front_matter(text):
    # was: the first "---" opened front matter that ran to the thematic break: "# Refunds"
    # was YAML, the page had no section, every word was under section_path ""
    nodes = parse(text)
    assert "front_matter" not in {t for n in nodes for t in n.metadata["block_types"].split(",")}
    by_word = {w: n.metadata["section_path"] for n in nodes for w in WORD.findall(n.text)}
    assert by_word["Within"] == by_word["More"] == "Refunds"
    assert _words(text) <= set(by_word)


@pytest.mark.parametrize(
    "front_matter",
    [
        '---\ntitle: Returns\ndescription: "How returns work,\nwrapped at column 0"\n---',
        "---\ntags: [returns,\nrefunds]\nsummary: >\n  Folded\n---",
        "---\ntitle: Returns\n\n# a YAML comment\n- listed\n...",
    ],
)
def test_yaml_front_matter_that_wraps_at_column_0_is_still_front_matter(front_matter):
    nodes = parse(front_matter + "\n\n# Refunds\n\nWithin 30 days.")
    assert [n.metadata["section_path"] for n in nodes] == ["", "Refunds"]
    assert nodes[0].metadata["block_types"] == "front_matter"
    assert nodes[0].text == front_matter


# --------------------------------------------- deep indentation: packing in linear work


def test_a_deeply_nested_list_is_packed_in_linear_tokenizer_work():
    # the packer measured candidate nodes whole, indentation between their pieces and all:
    # 1,200 nested items (1.4 MB, mostly indentation) passed 24.6 M characters through the
    # tokenizer (16.9 per input character; 11 s with the bundled tokenizer at 2,000 levels)
    encoded: list[int] = []

    def tokenizer(text: str) -> list[str]:
        encoded.append(len(text))
        return text.split()

    text = "# A\n\n" + "\n".join("  " * i + f"- item {i}" for i in range(1200))
    parser = StructuredMarkdownNodeParser(tokenizer=tokenizer, chunk_size=64, count_metadata=False)
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="doc")])
    assert sum(encoded) <= 2 * len(text)
    numbers = [int(w) for n in nodes for w in WORD.findall(n.text) if w.isdigit()]
    assert numbers == list(range(1200))  # every item once, in order
    assert {n.metadata["section_path"] for n in nodes} == {"A"}
    assert not any(n.metadata["oversized"] for n in nodes)
