"""Hostile answers on the query path, round s38: a source's own footnote marker copied into
the answer unquoted, with the source's words around it, is no citation of that number."""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune import grounding
from llama_index_ragtune.grounding import parse_answer
from llama_index_ragtune.query_engine.post_check import uncited_claims
from tests.query_engine.test_citation import engine_for

STUDY = "Smith and Jones [2] found that the drug lowers blood pressure in adults."
SOURCES = [STUDY, "Paris is the capital of France."]
NODES = [
    NodeWithScore(node=TextNode(id_="study", text=STUDY), score=1.0),
    NodeWithScore(node=TextNode(id_="paris", text=SOURCES[1]), score=0.5),
]


def served(answer: str, streaming: bool) -> dict:
    engine, _ = engine_for(answer, NODES, streaming=streaming)
    response = engine.query("What did the study find?")
    if streaming:
        "".join(response.response_gen)
    return response.metadata


@pytest.mark.parametrize("streaming", [False, True])
def test_a_footnote_copied_unquoted_is_no_citation_of_its_number(streaming):
    # was: cited_node_ids ['paris', 'study'], the copied "[2]" read as citing source 2
    meta = served("Smith and Jones [2] found that the drug lowers blood pressure [1].", streaming)
    assert meta["cited_node_ids"] == ["study"]
    assert [c["number"] for c in meta["citations"]] == [1]
    # copied without a citation of its own: uncited, not backed by source 2
    meta = served("Smith and Jones [2] found that the drug lowers blood pressure.", streaming)
    assert meta["cited_node_ids"] == [] and meta["uncited"]


@pytest.mark.parametrize("streaming", [False, True])
def test_citations_written_in_the_answers_own_words_are_kept(streaming):
    answers = {
        "The drug lowers blood pressure [1]. Paris is the capital [2].": ["study", "paris"],
        "Paris is the capital of France [2] and the drug works [1].": ["paris", "study"],
        # the marker ends the copied sentence: no source word follows it, so it is a citation
        "Smith and Jones [2]": ["paris"],
        "As reported, Smith and Jones [2] agree.": ["paris"],  # one word after, none matching
    }
    for answer, cited in answers.items():
        assert served(answer, streaming)["cited_node_ids"] == cited, answer


def test_the_rule_reads_the_words_around_the_marker_in_the_source_holding_it():
    text = "Smith and Jones [2] found that the drug lowers blood pressure [1]."
    assert grounding.copied_from_sources(text, SOURCES) == {15}
    assert (
        grounding.copied_from_sources(text, ["Smith and Jones found it.", "Nothing [2] here."])
        == set()
    )
    # normalised: case, spacing and punctuation do not hide the copy
    assert grounding.copied_from_sources("SMITH  and jones [2] found, that", SOURCES) == {16}
    # full-width markers as written in the source
    assert grounding.copied_from_sources(
        "Smith ［2］ found it [1].", ["Smith ［2］ found it."]
    ) == {5}
    assert grounding.copied_from_sources("no markers here", SOURCES) == set()


def test_quoted_and_copied_footnotes_are_read_in_one_place():
    sources = ["Rome.", "Smith [1] found it in 2001."]
    answer = '"Smith [1] found it" [2]. Smith [1] found it [2].'
    assert grounding.footnotes_from_sources(answer, sources) == {6, 31}
    parsed = parse_answer(answer, 2, source_texts=sources)
    assert parsed.citations == (2,) and parsed.text == answer
    # the post-check reads answers the same way: the copy's claim cites nothing
    claims = uncited_claims(
        "Smith and Jones [2] found that the drug lowers blood pressure.", 2, source_texts=SOURCES
    )
    assert len(claims) == 1


def test_the_copy_check_is_linear_in_the_texts():
    # many markers in a long answer over sources full of markers: one pass each
    source = "word [1] other " * 20_000
    answer = "word [1] other " * 5_000
    assert len(grounding.copied_from_sources(answer, [source])) == 5_000
