"""StructuredMarkdownNodeParser: Markdown structure, offsets, metadata, relationships, bad input."""

from __future__ import annotations

import random
import re

import pytest
from llama_index.core import Document
from llama_index.core.schema import MediaResource, MetadataMode, NodeRelationship, TextNode
from np_helpers import (
    fixture,
    markdown_to_html,
    markdown_visible_text,
    missing_html_words,
    missing_words,
    visible_html_strings,
    whitespace_tokens,
)

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser


def make_parser(chunk_size: int = 200, **kwargs) -> StructuredMarkdownNodeParser:
    return StructuredMarkdownNodeParser(
        tokenizer=whitespace_tokens, chunk_size=chunk_size, **kwargs
    )


def guide_nodes(**kwargs):
    doc = Document(
        text=fixture("store_guide.md"),
        id_="guide",
        metadata={
            "store": "FreshMart",
            "department": "Grocery",
            "url": "https://example.com/guide",
        },
    )
    return doc, make_parser(**kwargs).get_nodes_from_documents([doc])


def test_sections_headings_and_block_types():
    doc, nodes = guide_nodes()
    by_path = {n.metadata["section_path"]: n for n in nodes}
    assert list(by_path) == [
        "",
        "Store operations guide",
        "Store operations guide > Returns > Perishables",
        "Store operations guide > Returns > Refund times",
        "Store operations guide > Till commands",
    ]
    perishables = by_path["Store operations guide > Returns > Perishables"]
    assert perishables.metadata["section_title"] == "Perishables"
    assert perishables.metadata["block_types"] == "heading,paragraph,list,blockquote"
    assert perishables.text.startswith("Returns\n-------\n\n### Perishables")  # heading words kept
    till = by_path["Store operations guide > Till commands"]
    assert "# Open the refunds screen" in till.text  # a '#' in a fence is code, not a heading
    assert till.metadata["block_types"] == "heading,code,paragraph"
    assert "    till --legacy refund 12345" in till.text  # indented code kept
    assert "reviewed by" not in till.text  # an HTML comment is not visible text
    front = by_path[""]
    assert front.metadata["block_types"] == "front_matter"
    assert front.text.startswith("---\ntitle: Store operations guide")


def test_document_metadata_propagates_and_offsets_are_honest():
    doc, nodes = guide_nodes()
    for node in nodes:
        assert node.metadata["store"] == "FreshMart"
        assert node.metadata["department"] == "Grocery"
        span = doc.text[node.start_char_idx : node.end_char_idx]
        if "table" in node.metadata["block_types"]:
            # a table's delimiter row is compacted; the cells come from the span
            assert (
                "Gift card" in span
                and "| Gift card      | Anywhere | Instantly        |" in node.text
            )
        else:
            assert span == node.text
    starts = [n.start_char_idx for n in nodes]
    assert starts == sorted(starts)


def test_node_relationships_and_excluded_metadata():
    doc, nodes = guide_nodes()
    assert len(nodes) >= 3
    for i, node in enumerate(nodes):
        assert node.relationships[NodeRelationship.SOURCE].node_id == "guide"
        assert node.ref_doc_id == "guide"
        if i > 0:
            assert node.relationships[NodeRelationship.PREVIOUS].node_id == nodes[i - 1].node_id
        if i + 1 < len(nodes):
            assert node.relationships[NodeRelationship.NEXT].node_id == nodes[i + 1].node_id
        embed = node.get_content(MetadataMode.EMBED)
        assert "block_types" not in embed and "oversized" not in embed
        assert "section_title" not in embed
        if node.metadata["section_path"]:
            assert f"section_path: {node.metadata['section_path']}" in embed
        assert "store: FreshMart" in embed


def test_metadata_counts_against_the_cap():
    doc, nodes = guide_nodes(chunk_size=60)
    for node in nodes:
        if not node.metadata["oversized"]:
            assert len(node.get_content(MetadataMode.EMBED).split()) <= 60
    # without counting the metadata, the text alone fits but what the encoder sees does not
    _, loose = guide_nodes(chunk_size=60, count_metadata=False)
    assert all(len(n.text.split()) <= 60 for n in loose)
    assert max(len(n.get_content(MetadataMode.EMBED).split()) for n in loose) > 60


def test_include_metadata_false_adds_no_metadata():
    _, nodes = guide_nodes(include_metadata=False)
    assert nodes and all(n.metadata == {} for n in nodes)


def test_prev_next_can_be_disabled():
    _, nodes = guide_nodes(include_prev_next_rel=False)
    assert all(NodeRelationship.NEXT not in n.relationships for n in nodes)


def test_setext_and_atx_headings_and_crlf_offsets():
    text = "Title\r\n=====\r\n\r\nIntro line.\r\n\r\n## Sub ##\r\n\r\n- a\r\n- b\r\n"
    doc = Document(text=text)
    nodes = make_parser().get_nodes_from_documents([doc])
    assert [n.metadata["section_path"] for n in nodes] == ["Title", "Title > Sub"]
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
    assert nodes[1].text == "## Sub ##\r\n\r\n- a\r\n- b"


def test_duplicate_text_keeps_its_own_offsets():
    text = "# A\n\nSame line.\n\n# B\n\nSame line.\n\n# C\n\nSame line."
    nodes = make_parser().get_nodes_from_documents([Document(text=text)])
    assert [text[n.start_char_idx : n.end_char_idx] for n in nodes] == [n.text for n in nodes]
    assert len({n.start_char_idx for n in nodes}) == 3


@pytest.mark.parametrize("text", ["", "   \n\t\n  "])
def test_empty_document_gives_no_nodes(text):
    assert make_parser().get_nodes_from_documents([Document(text=text)]) == []


def test_nul_bytes_raise_value_error_naming_the_document():
    doc = Document(text="%PDF-1.7\x00\x00\x01 binary", id_="report.pdf")
    with pytest.raises(ValueError, match="report.pdf"):
        make_parser().get_nodes_from_documents([doc])


def test_mostly_non_printable_text_raises():
    doc = Document(text="\x01\x02\x03\x04\x05abc\x06\x07\x08\x0e\x0f", id_="blob")
    with pytest.raises(ValueError, match="'blob'.*non-printable"):
        make_parser().get_nodes_from_documents([doc])


def test_lossy_decoded_bytes_raise():
    text = b"caf\xe9 menu \xff\xfe".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValueError, match="'menu.md'.*undecodable"):
        make_parser().get_nodes_from_documents([Document(text=text, id_="menu.md")])
    replaced = (b"\xff\xfe\xfa" * 20).decode("utf-8", errors="replace")
    with pytest.raises(ValueError, match="'menu2.md'"):
        make_parser().get_nodes_from_documents([Document(text=replaced, id_="menu2.md")])


def test_binary_resource_that_is_not_text_raises():
    doc = Document(
        text_resource=MediaResource(data=b"\x89PNG\r\n\x1a\n\xff\xd8\xff"), id_="logo.png"
    )
    with pytest.raises(ValueError, match="logo.png"):
        make_parser().get_nodes_from_documents([doc])
    ok = Document(text_resource=MediaResource(data=b"# Hi\n\nText."), id_="hi.md")
    assert make_parser().get_nodes_from_documents([ok])[0].metadata["section_path"] == "Hi"


def test_a_few_replacement_characters_are_accepted():
    text = "# Menu\n\nCaf\ufffd au lait and croissants are served until noon every day."
    nodes = make_parser().get_nodes_from_documents([Document(text=text)])
    assert nodes[0].text == text


def test_text_nodes_as_input_work_too():
    node = TextNode(text="# Hello\n\nWorld.", metadata={"brand": "Volt"})
    out = make_parser()([node])
    assert out[0].metadata["brand"] == "Volt"
    assert out[0].ref_doc_id == node.node_id


def test_class_name_from_defaults_and_serialisation():
    parser = StructuredMarkdownNodeParser.from_defaults(chunk_size=99, tokenizer=whitespace_tokens)
    assert parser.class_name() == "StructuredMarkdownNodeParser"
    data = parser.to_dict()
    assert data["chunk_size"] == 99 and data["class_name"] == "StructuredMarkdownNodeParser"
    assert StructuredMarkdownNodeParser.model_fields["chunk_size"].description


# ------------------------------------------------------------------ randomised

VOCAB = [
    "apple",
    "pear",
    "refund",
    "store",
    "order",
    "receipt",
    "delivery",
    "fee",
    "box",
    "opened",
    "item",
    "day",
    "week",
    "café",
    "3-5",
    "x86_64",
]
ATX = re.compile(r"^(#{1,6}) (.+)$")


def _random_markdown(rng: random.Random) -> str:
    def sentence(n: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(n)).capitalize() + rng.choice(
            [".", "!", "?"]
        )

    parts = []
    for _ in range(rng.randint(3, 14)):
        kind = rng.choice(["atx", "setext", "p", "p", "list", "table", "code", "quote", "hr"])
        if kind == "atx":
            parts.append("#" * rng.randint(1, 4) + " " + sentence(rng.randint(1, 4))[:-1])
        elif kind == "setext":
            title = sentence(rng.randint(1, 3))[:-1]
            parts.append(title + "\n" + rng.choice("=-") * max(3, len(title)))
        elif kind == "p":
            parts.append(" ".join(sentence(rng.randint(2, 30)) for _ in range(rng.randint(1, 6))))
        elif kind == "list":
            lines = []
            for _ in range(rng.randint(1, 10)):
                indent = "  " * rng.randint(0, 2 if lines else 0)
                lines.append(f"{indent}- {sentence(rng.randint(1, 25))}")
                if rng.random() < 0.2:
                    lines.append(f"{indent}  {sentence(rng.randint(1, 6))}")  # continuation line
            parts.append("\n".join(lines))
        elif kind == "table":
            cols = rng.randint(1, 4)
            head = "| " + " | ".join(rng.choice(VOCAB) for _ in range(cols)) + " |"
            rows = [
                "| " + " | ".join(sentence(rng.randint(1, 6)) for _ in range(cols)) + " |"
                for _ in range(rng.randint(1, 12))
            ]
            parts.append("\n".join([head, "|" + ":---|" * cols, *rows]))
        elif kind == "code":
            lines = [f"# {rng.choice(VOCAB)} {i}" for i in range(rng.randint(1, 15))]
            parts.append("```\n" + "\n".join(lines) + "\n```")
        elif kind == "quote":
            parts.append(
                "\n>\n".join("> " + sentence(rng.randint(2, 12)) for _ in range(rng.randint(1, 3)))
            )
        else:
            parts.append("---")
    return "\n\n".join(parts)


def _expected_path(text: str, end: int) -> str:
    """Heading chain in force at offset ``end`` (headings outside code fences only)."""
    stack: list[tuple[int, str]] = []
    lines = text.split("\n")
    offset, fenced = 0, False
    for i, line in enumerate(lines):
        if offset >= end:
            break
        if line.startswith("```"):
            fenced = not fenced
        heading = None
        if not fenced and ATX.match(line):
            heading = (len(ATX.match(line).group(1)), ATX.match(line).group(2))
        elif (
            not fenced
            and i + 1 < len(lines)
            and line.strip()
            and not line.startswith(("|", "-", " ", ">"))
            and re.fullmatch(r"=+|-+", lines[i + 1])
            and (i == 0 or not lines[i - 1].strip())
        ):
            heading = (1 if lines[i + 1][0] == "=" else 2, line)
        if heading:
            while stack and stack[-1][0] >= heading[0]:
                stack.pop()
            stack.append(heading)
        offset += len(line) + 1
    return " > ".join(title for _, title in stack)


@pytest.mark.parametrize("seed", range(30))
def test_random_documents_keep_every_word_sections_and_the_cap(seed):
    rng = random.Random(seed)
    text = _random_markdown(rng)
    cap = rng.randint(8, 48)
    parser = make_parser(chunk_size=cap, count_metadata=False)
    nodes = parser.get_nodes_from_documents([Document(text=text)])
    assert missing_words(markdown_visible_text(text), [n.text for n in nodes]) == []
    lines = set(text.split("\n"))
    for node in nodes:
        assert node.metadata["section_path"] == _expected_path(text, node.end_char_idx)
        if node.metadata["oversized"]:
            # only one unsplittable line may exceed the cap (with its repeated table header)
            body = node.text.split("\n")
            if node.metadata["block_types"] == "table":
                body = body[2:]
            assert len(body) == 1 and body[0] in lines
        else:
            assert len(node.text.split()) <= cap
        assert node.start_char_idx < node.end_char_idx
        kinds = set(node.metadata["block_types"].split(","))
        if not kinds & {"table", "code", "blockquote", "list"}:
            assert text[node.start_char_idx : node.end_char_idx] == node.text
        elif not kinds & {"table", "code"}:  # a part may repeat its quote markers / fences
            span = text[node.start_char_idx : node.end_char_idx]
            assert " ".join(span.split()) in " ".join(node.text.split())

    # the same document as HTML: same words kept, same cap
    page = markdown_to_html(text)
    html_nodes = StructuredHTMLNodeParser(
        tokenizer=whitespace_tokens, chunk_size=cap, count_metadata=False
    )([Document(text=page)])
    assert missing_html_words(visible_html_strings(page), [n.text for n in html_nodes]) == []
    assert all(len(n.text.split()) <= cap for n in html_nodes if not n.metadata["oversized"])


def test_tokenizer_by_path_reads_the_cap_from_the_model_folder(minilm_path, tmp_path):
    parser = StructuredMarkdownNodeParser(tokenizer=minilm_path)
    assert parser.tokenizer_name == minilm_path
    assert parser.effective_chunk_size == 254  # sentence_bert_config max_seq_length 256 - 2
    assert (
        StructuredMarkdownNodeParser(tokenizer=minilm_path, chunk_size=32).effective_chunk_size
        == 32
    )
    missing = StructuredMarkdownNodeParser(tokenizer=str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        missing.get_nodes_from_documents([Document(text="# A\n\nB.")])


def test_metadata_larger_than_the_cap_is_a_clear_error():
    doc = Document(text="# A\n\nText.", id_="long-meta", metadata={"notes": "word " * 50})
    with pytest.raises(ValueError, match="long-meta.*count_metadata=False"):
        make_parser(chunk_size=20).get_nodes_from_documents([doc])
    nodes = make_parser(chunk_size=20, count_metadata=False).get_nodes_from_documents([doc])
    assert nodes[0].text == "# A\n\nText."
