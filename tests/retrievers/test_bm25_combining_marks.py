"""The default BM25 (plain analyzer) reads words with their combining marks: Hindi, Tamil
or Thai vowel signs and viramas stay inside terms instead of cutting every word apart."""

from __future__ import annotations

import json
import re

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.bm25_index import DEFAULT_TOKEN_PATTERN, BM25Tokenizer

HELP_CENTRE = {  # a small Hindi help centre
    "returns": "फल की वापसी नीति: खराब फल 48 घंटे में लौटाएं।",
    "delivery": "होम डिलीवरी दो दिन में पहुंचती है।",
    "gift": "उपहार कार्ड पांच साल तक मान्य हैं।",
    "donation": "दान पेटी हर दुकान पर रखी है।",
}


@pytest.fixture(scope="module")
def retriever():
    nodes = [TextNode(id_=k, text=v) for k, v in HELP_CENTRE.items()]
    return BM25Retriever(nodes, similarity_top_k=2, language=None)


def test_plain_terms_keep_vowel_signs():
    tokenizer = BM25Tokenizer(language=None)
    # before: ['पस'] (every other word fell apart into one-letter pieces, then dropped)
    assert tokenizer("सेब की वापसी नीति क्या है?") == ["सेब", "की", "वापसी", "नीति", "क्या", "है"]
    assert tokenizer("தமிழ்நாடு கடை") == ["தமிழ்நாடு", "கடை"]


@pytest.mark.parametrize(
    "question, expected",
    [
        ("दान कहाँ दें?", "donation"),  # before: nothing found (no term survived)
        ("वापसी नीति क्या है?", "returns"),
        ("डिलीवरी कितने दिन में?", "delivery"),
    ],
)
def test_hindi_questions_reach_their_page(retriever, question, expected):
    assert retriever.retrieve(question)[0].node.node_id == expected


def test_text_without_marks_is_read_as_before():
    new, old = BM25Tokenizer(language=None), BM25Tokenizer(language=None, split_marks=True)
    text = "The café's CO₂ m² USB-C charger, I'm naïve: x_y 5 15"
    assert new(text) == old(text) == re.findall(DEFAULT_TOKEN_PATTERN, text.lower())


def test_split_marks_reads_as_older_indexes_did():
    assert BM25Tokenizer(language=None, split_marks=True)("सेब की वापसी") == ["पस"]
    assert BM25Tokenizer(language=None).config()["split_marks"] is False


def test_split_marks_must_be_a_bool():
    with pytest.raises(TypeError, match="split_marks"):
        BM25Tokenizer(split_marks="yes")


def test_persisted_index_records_how_it_read_text(tmp_path, retriever):
    retriever.persist(tmp_path / "bm25")
    manifest = json.loads((tmp_path / "bm25" / "bm25_retriever.json").read_text("utf-8"))
    assert manifest["params"]["split_marks"] is False
    loaded = BM25Retriever.from_persist_dir(tmp_path / "bm25")
    assert loaded.tokenizer.split_marks is False
    assert loaded.retrieve("दान कहाँ दें?")[0].node.node_id == "donation"


def test_index_persisted_before_marks_were_kept_loads_as_it_was_built(tmp_path):
    nodes = [TextNode(id_=k, text=v) for k, v in HELP_CENTRE.items()]
    BM25Retriever(nodes, language=None, split_marks=True).persist(tmp_path / "old")
    path = tmp_path / "old" / "bm25_retriever.json"
    manifest = json.loads(path.read_text("utf-8"))
    del manifest["params"]["split_marks"]  # as written before the setting existed
    path.write_text(json.dumps(manifest), "utf-8")
    loaded = BM25Retriever.from_persist_dir(tmp_path / "old", similarity_top_k=1)
    assert loaded.tokenizer.split_marks is True  # its vocabulary holds the cut terms
    assert loaded.retrieve("डिलीवरी कितने दिन में?")[0].node.node_id == "delivery"


def test_unicode_analyzer_finds_no_codes_inside_words_with_marks():
    tokenizer = BM25Tokenizer(language=None, analyzer="unicode")
    # before: "न/ब" (the letters around "/" of "दुकान/बाज़ार") was taken for a code: term 'नब'
    assert tokenizer("दुकान/बाज़ार") == ["दुकान", "बाज़ार"]
    assert (
        BM25Tokenizer(language=None, analyzer="unicode", split_marks=True)("दुकान/बाज़ार")[-1] == "नब"
    )
    # codes are found as before
    assert tokenizer("SKU-48213 हिन्दी usb-c")[-2:] == ["sku48213", "usbc"]
