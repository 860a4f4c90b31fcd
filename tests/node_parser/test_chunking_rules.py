"""Splitting and packing rules shared by both parsers, through the Markdown parser (whitespace tokens)."""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser
from llama_index_ragtune.node_parser.structure import Block, chunk_blocks, group_sections


def parse(text: str, chunk_size: int, **kwargs):
    parser = StructuredMarkdownNodeParser(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, count_metadata=False, **kwargs
    )
    return parser.get_nodes_from_documents([Document(text=text, id_="doc-1")])


def ntok(text: str) -> int:
    return len(text.split())


def test_table_larger_than_cap_is_split_by_rows_with_header_repeated():
    rows = [f"| item {i} | {i} days | shelf {i} |" for i in range(40)]
    text = "# Stock\n\n| Item | Shelf life | Where |\n|---|---|---|\n" + "\n".join(rows)
    nodes = parse(text, chunk_size=60)
    table_nodes = [n for n in nodes if "table" in n.metadata["block_types"]]
    assert len(table_nodes) > 3
    seen = []
    for node in table_nodes:
        lines = node.text.split("\n")
        start = lines.index("| Item | Shelf life | Where |")
        assert lines[start + 1] == "| --- | --- | --- |"
        body = lines[start + 2 :]
        assert body and all(line in rows for line in body)  # whole rows only
        seen.extend(body)
        assert ntok(node.text) <= 60
        assert node.metadata["oversized"] is False
    assert seen == rows  # every row exactly once, in order


def test_list_larger_than_cap_splits_between_items_never_mid_line():
    items = [f"- step {i}: scan the barcode and check the label carefully" for i in range(30)]
    text = "## Steps\n\n" + "\n".join(items)
    nodes = parse(text, chunk_size=50)
    assert len(nodes) > 2
    body = [line for n in nodes for line in n.text.split("\n") if line.startswith("- ")]
    assert body == items
    assert all(ntok(n.text) <= 50 for n in nodes)


def test_nested_list_item_larger_than_cap_splits_at_its_lines():
    nested = "\n".join(f"  - detail {i} of the long item" for i in range(20))
    text = f"- short item\n- long item\n{nested}\n- last item"
    nodes = parse(text, chunk_size=25)
    source_lines = text.split("\n")
    for node in nodes:
        assert ntok(node.text) <= 25
        for line in node.text.split("\n"):
            assert line in source_lines  # lines are never cut
    assert [line for n in nodes for line in n.text.split("\n")] == source_lines


def test_code_block_larger_than_cap_is_split_at_lines_with_fences_repeated():
    lines = [f"print('line {i}')  # step {i}" for i in range(40)]
    text = "```python\n" + "\n".join(lines) + "\n```"
    nodes = parse(text, chunk_size=30)
    assert len(nodes) > 2
    got = []
    for node in nodes:
        parts = node.text.split("\n")
        assert parts[0] == "```python" and parts[-1] == "```"
        got.extend(parts[1:-1])
        assert ntok(node.text) <= 30
    assert got == lines


def test_single_overlong_line_is_split_at_words_and_marked_partial(caplog):
    long_line = "- " + " ".join(f"w{i}" for i in range(80))
    text = f"# Notes\n\n- a\n{long_line}\n- b"
    with caplog.at_level(logging.INFO):
        nodes = parse(text, chunk_size=20)
    assert all(ntok(n.text) <= 20 for n in nodes)
    assert not any(n.metadata["oversized"] for n in nodes)
    partial = [n for n in nodes if n.metadata["partial_unit"]]
    assert len(partial) >= 4  # 81 words at most 20 a node
    assert " ".join(n.text for n in nodes).split() == text.split()  # every word once, in order
    for node in nodes:  # every part is a verbatim slice of the source, offsets honest
        assert text[node.start_char_idx : node.end_char_idx] == node.text
    assert nodes[0].text == "# Notes\n\n- a" and not nodes[0].metadata["partial_unit"]
    assert "doc-1" in caplog.text and "partial_unit" in caplog.text


def test_long_paragraph_splits_at_sentences_then_words():
    sentences = [f"Sentence number {i} explains the refund rules in detail." for i in range(12)]
    giant = " ".join(f"word{i}" for i in range(50)) + "."
    text = " ".join(sentences) + " " + giant
    nodes = parse(text, chunk_size=24)
    assert all(ntok(n.text) <= 24 for n in nodes)
    assert not any(n.metadata["oversized"] for n in nodes)
    for node in nodes[:-3]:  # the sentence part: every node ends at a sentence end
        assert node.text.endswith(".")
    assert " ".join(n.text for n in nodes).split() == text.split()


def test_small_blocks_are_merged_but_never_across_sections():
    text = "# A\n\nOne.\n\nTwo.\n\n- three\n- four\n\n# B\n\nFive.\n\nSix."
    nodes = parse(text, chunk_size=100)
    assert [n.metadata["section_path"] for n in nodes] == ["A", "B"]
    assert nodes[0].text == "# A\n\nOne.\n\nTwo.\n\n- three\n- four"
    assert nodes[0].metadata["block_types"] == "heading,paragraph,list"
    assert nodes[1].text == "# B\n\nFive.\n\nSix."


def test_heading_only_parent_is_carried_into_its_first_subsection():
    text = "# Help\n\n## Returns\n\n### Perishables\n\nRefunds within 48 hours.\n\n## Delivery\n\nSlots."
    nodes = parse(text, chunk_size=100)
    assert [n.metadata["section_path"] for n in nodes] == [
        "Help > Returns > Perishables",
        "Help > Delivery",
    ]
    assert nodes[0].text.startswith("# Help\n\n## Returns\n\n### Perishables")


def test_group_sections_pops_same_or_deeper_levels():
    blocks = [
        Block("heading", "# A", level=1, title="A"),
        Block("heading", "### C", level=3, title="C"),
        Block("paragraph", "x"),
        Block("heading", "## B", level=2, title="B"),
        Block("paragraph", "y"),
    ]
    assert [s.path for s in group_sections(blocks)] == [("A",), ("A", "C"), ("A", "B")]


def test_chunk_blocks_respects_per_section_budget():
    blocks = [Block("heading", "# A", level=1, title="A")] + [
        Block("paragraph", f"p{i} a b c") for i in range(10)
    ]
    chunks = chunk_blocks(blocks, lambda section: 9, ntok)
    assert all(c.tokens <= 9 and ntok(c.text) == c.tokens for c in chunks)
    assert len(chunks) > 4


@pytest.mark.parametrize("chunk_size", [0, -5])
def test_invalid_chunk_size_is_rejected(chunk_size):
    with pytest.raises(ValueError):
        StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=chunk_size)


def test_callable_tokenizer_needs_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        StructuredMarkdownNodeParser(tokenizer=whitespace_tokens)


def test_cjk_paragraph_splits_at_full_stops_without_spaces():
    sentence = "生鲜 食品 须在 48 小时内 退货。"  # 6 whitespace tokens, no space after "。"
    text = "# 退货\n\n" + sentence * 12
    nodes = parse(text, chunk_size=20)
    assert len(nodes) > 3 and not any(n.metadata["oversized"] for n in nodes)
    body = "".join(n.text for n in nodes).replace("# 退货", "", 1).strip()
    assert body == sentence * 12  # cut only between sentences, nothing lost
    for node in nodes[1:]:
        assert node.text.endswith("。") and ntok(node.text) <= 20


def test_leading_byte_order_mark_keeps_headings_and_offsets():
    text = "\ufeff---\ntitle: Guide\n---\n# Returns\n\nWithin 30 days."
    nodes = parse(text, chunk_size=50)
    assert [n.metadata["section_path"] for n in nodes] == ["", "Returns"]
    assert nodes[0].metadata["block_types"] == "front_matter"
    assert all(text[n.start_char_idx : n.end_char_idx] == n.text for n in nodes)
