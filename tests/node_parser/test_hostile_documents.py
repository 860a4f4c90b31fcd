"""Regression tests: boilerplate rules never empty a page, nodes are bounded in characters,
unusable configuration is rejected, and shadowed metadata keys are reported."""

from __future__ import annotations

import logging

import pytest
from llama_index.core import Document
from np_helpers import whitespace_tokens

from llama_index_ragtune.node_parser import (
    StructuredHTMLNodeParser,
    StructuredMarkdownNodeParser,
)
from llama_index_ragtune.node_parser.tokens import MAX_CHARS_PER_TOKEN

BODY = "<h3>Returns</h3><p>Refund within 30 days.</p>"
EXPECTED = ["### Returns\n\nRefund within 30 days."]


def html_texts(html: str, features: str = "lxml") -> list[str]:
    parser = StructuredHTMLNodeParser(
        chunk_size=64, tokenizer=whitespace_tokens, parser_features=features
    )
    return [n.text for n in parser.get_nodes_from_documents([Document(text=html, id_="page-7")])]


@pytest.mark.parametrize("features", ["lxml", "html.parser"])
def test_a_form_wrapping_the_content_is_kept_without_warning(features, caplog):
    html = f"<body><form id=form1><input type=hidden name=vs>{BODY}</form></body>"
    with caplog.at_level(logging.WARNING):
        assert html_texts(html, features) == EXPECTED
    assert not caplog.records


def test_a_form_of_controls_only_is_still_dropped():
    html = f"{BODY}<form><label>Newsletter</label><input><button>Go</button></form>"
    assert html_texts(html) == EXPECTED


@pytest.mark.parametrize(
    "html",
    [
        f"<body style='display:none'>{BODY}</body>",
        f"<html hidden><body>{BODY}</body></html>",
        f"<body><header>{BODY}</header></body>",
        f"<body><div role=menu>{BODY}</div></body>",
        f"<body><aside>{BODY}</aside></body>",
        f"<body><a href=#x>Skip</a><div aria-hidden=true>{BODY}</div></body>",
    ],
)
@pytest.mark.parametrize("features", ["lxml", "html.parser"])
def test_boilerplate_rules_never_empty_a_page_and_warn_naming_it(html, features, caplog):
    with caplog.at_level(logging.WARNING):
        texts = html_texts(html, features)
    assert "Refund within 30 days." in "\n".join(texts)
    assert "Returns" in "\n".join(texts)
    assert any(
        "page-7" in r.getMessage() and "boilerplate" in r.getMessage() for r in caplog.records
    )


def test_small_pages_with_real_content_keep_dropping_boilerplate():
    html = "<div role=navigation>Menu</div><div hidden>Secret</div><p>Kept</p>"
    assert html_texts(html) == ["Kept"]


def test_a_navigation_only_page_gives_no_nodes_but_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert html_texts("<nav>Home About</nav>") == []
    assert any("page-7" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("html", ["", "<html><body> </body></html>", "<script>x()</script>"])
def test_pages_without_text_give_no_nodes_silently(html, caplog):
    with caplog.at_level(logging.WARNING):
        assert html_texts(html) == []
    assert not caplog.records


# ------------------------------------------------------------ character bound

GIANT = [
    "a" * 200_000,
    "e" + "\u0301" * 100_000,
    "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 5_000,
    "0123456789abcdef" * 4_000,
]


@pytest.mark.parametrize("word", GIANT, ids=["ascii", "combining", "zwj", "hex"])
@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_a_giant_word_gives_nodes_bounded_in_characters(word, fmt, minilm_path, caplog):
    cap = 64
    if fmt == "markdown":
        parser = StructuredMarkdownNodeParser(tokenizer=minilm_path, chunk_size=cap)
        text = f"# T\n\n{word}"
    else:
        parser = StructuredHTMLNodeParser(tokenizer=minilm_path, chunk_size=cap)
        text = f"<h1>T</h1><p>{word}</p>"
    with caplog.at_level(logging.WARNING):
        nodes = parser.get_nodes_from_documents([Document(text=text, id_="blob")])
    assert len(nodes) > 1
    assert max(len(n.text) for n in nodes) <= cap * MAX_CHARS_PER_TOKEN
    assert "".join("".join(n.text.split()) for n in nodes).count(word[:64]) >= 1
    assert len("".join(n.text for n in nodes)) >= len(word)
    assert any("blob" in r.getMessage() and "character" in r.getMessage() for r in caplog.records)


def test_ordinary_text_is_not_affected_by_the_character_bound(caplog):
    text = "# Returns\n\n" + " ".join(
        f"Item {i} may be returned within 30 days." for i in range(50)
    )
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=64)
    with caplog.at_level(logging.WARNING):
        nodes = parser.get_nodes_from_documents([Document(text=text)])
    assert all(len(n.text.split()) <= 64 for n in nodes)
    assert not caplog.records


@pytest.mark.parametrize("tokenizer", [lambda s: [], lambda s: 3, lambda s: 1 / 0])
def test_an_unusable_tokenizer_is_a_configuration_error(tokenizer):
    parser = StructuredMarkdownNodeParser(chunk_size=2, tokenizer=tokenizer, on_error="skip")
    with pytest.raises(ValueError, match="tokenizer"):
        parser.get_nodes_from_documents([Document(text="w " * 1000)])


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_chunk_size_is_rejected(value):
    with pytest.raises(ValueError, match="chunk_size"):
        StructuredMarkdownNodeParser(chunk_size=value)


def test_document_metadata_shadowed_by_parser_keys_is_reported(caplog):
    doc = Document(
        text="# A\n\nText.", id_="manual-3", metadata={"section_path": "USER", "oversized": "x"}
    )
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=64)
    with caplog.at_level(logging.WARNING):
        nodes = parser.get_nodes_from_documents([doc])
    assert nodes[0].metadata["section_path"] == "A"
    assert nodes[0].metadata["oversized"] is False
    (record,) = [r for r in caplog.records if "manual-3" in r.getMessage()]
    assert "section_path" in record.getMessage() and "oversized" in record.getMessage()
