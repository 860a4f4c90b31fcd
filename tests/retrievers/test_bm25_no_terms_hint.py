"""A corpus BM25 cannot index: the error gives only advice that can help with the settings used."""

from __future__ import annotations

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune.retrievers import BM25Retriever
from llama_index_ragtune.retrievers.bm25_index import BM25Index, BM25Tokenizer


def _nodes(*texts: str) -> list[TextNode]:
    return [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(texts)]


@pytest.mark.parametrize("texts", [("a", "b"), ("\U0001f34e\U0001f34e", "\U0001f34c"), ("x", "+")])
def test_one_character_words_and_emoji_point_at_the_token_pattern(texts):
    # the error used to advise stopwords=None even with stopwords=None already passed
    with pytest.raises(ValueError, match=r"\['n0', 'n1'\]") as info:
        BM25Retriever(_nodes(*texts), stopwords=None)
    message = str(info.value)
    assert "pass stopwords=None" not in message
    assert "token_pattern" in message and "one-character words" in message
    # and it is the right advice: a pattern that keeps one-character terms indexes them
    kept = BM25Retriever(_nodes(*texts), stopwords=None, token_pattern=r"(?u)\S")
    assert len(kept.retrieve(texts[0])) >= 1


def test_stopwords_are_still_named_when_they_are_the_cause():
    with pytest.raises(ValueError, match="pass stopwords=None") as info:
        BM25Retriever(_nodes("the of and", "a an the"))
    assert "token_pattern" in str(info.value)


def test_a_custom_pattern_is_not_told_to_change_the_default():
    tokenizer = BM25Tokenizer(stopwords=None, token_pattern=r"\d+")
    with pytest.raises(ValueError, match="give texts with words") as info:
        BM25Index.build(["no digits", "here"], tokenizer)
    assert "one-character" not in str(info.value) and "pass stopwords" not in str(info.value)
