"""The pipeline's synthetic questions from a user's own LLM that fails, thinks aloud or
meets repeated passages: what ``synthetic_queries`` and the ``data`` step then do."""

from __future__ import annotations

import re

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune.cli import _user_error_types
from llama_index_ragtune.data import SyntheticQueryError
from llama_index_ragtune.pipeline import TuningPipeline
from llama_index_ragtune.pipeline.query_sources import synthetic_queries
from llama_index_ragtune.pipeline.training_data import retrieval_dataset
from tests.data.test_synthetic_hostile_llm import UserLLM

FOOTER = "Questions about returns? Call the service desk on 0800 123 456, open every day."
PRODUCE = "Fresh apples can be returned within seven days with the receipt."
PHONES = "Apple iPhones can be returned within fourteen days in their box."


def thinking_writer(prompt: str) -> str:
    """Thinks aloud, then asks about the passage's last three words."""
    passage = prompt.split("---------------------")[1]
    words = re.findall(r"[A-Za-z]+", passage)[-3:]
    return (
        "<think>\nWhich part of the passage would a user ask about? Perhaps "
        f"what is {' '.join(words)}?\n</think>\n1. What should I know about {' '.join(words)}?"
    )


def plain_writer(prompt: str) -> str:
    """``thinking_writer``'s question without its thoughts."""
    return thinking_writer(prompt).split("</think>\n")[1]


def pages() -> list[TextNode]:
    return [
        TextNode(id_="produce#0", text=PRODUCE),
        TextNode(id_="produce#1", text=FOOTER),
        TextNode(id_="phones#0", text=PHONES),
        TextNode(id_="phones#1", text=FOOTER),
        TextNode(id_="hours#1", text=FOOTER.upper()),  # the same text, up to case
    ]


def test_a_question_about_a_repeated_passage_names_every_copy_as_gold():
    llm = UserLLM(reply=plain_writer, prompts=[])
    queries, stats = synthetic_queries(pages(), llm=llm, questions_per_node=1, show_progress=False)
    assert len(llm.prompts) == 3  # the footer is asked about once
    gold = {q.question: q.gold_node_ids for q in queries}
    assert gold == {
        "What should I know about with the receipt?": ["produce#0"],
        "What should I know about open every day?": ["produce#1", "phones#1", "hours#1"],
        "What should I know about in their box?": ["phones#0"],
    }
    assert stats["kept"] == len(queries) == 3
    # downstream, each copy of the footer is a positive of its question, never a negative
    dataset = retrieval_dataset(queries, pages())
    footer_qid = next(q.id for q in queries if len(q.gold_node_ids) == 3)
    assert sorted(dataset.relevant_docs[footer_qid]) == ["hours#1", "phones#1", "produce#1"]


def test_copies_left_out_of_the_sample_are_gold_too():
    llm = UserLLM(reply=plain_writer, prompts=[])
    # seed 4 samples produce#1 (a footer) and phones#0: the other footers are not asked about
    queries, _ = synthetic_queries(
        pages(), llm=llm, questions_per_node=1, max_nodes=2, seed=4, show_progress=False
    )
    assert len(llm.prompts) == 2
    gold = {q.question: q.gold_node_ids for q in queries}
    assert gold["What should I know about open every day?"] == ["produce#1", "phones#1", "hours#1"]


def test_an_llm_failing_on_every_passage_stops_the_pipeline_with_its_error(
    tmp_path, tiny_corpus, make_config
):
    llm = UserLLM(reply=lambda p: ConnectionError("connection refused: localhost:11434"))
    pipeline = TuningPipeline(
        tiny_corpus["docs"],
        tmp_path,
        synthetic_llm=llm,
        config=make_config(synthetic_questions_per_node=1, test_fraction=0.3),
        echo=lambda line: None,
    )
    with pytest.raises(SyntheticQueryError) as caught:
        pipeline.run(until="data")
    assert isinstance(caught.value, _user_error_types())  # the CLI shows it as one line
    message = str(caught.value)
    assert "UserLLM ('user-model') failed on every one of the" in message
    assert "ConnectionError: connection refused: localhost:11434" in message


def test_a_reasoning_llm_gives_the_pipeline_its_questions_not_its_thoughts(
    tmp_path, tiny_corpus, make_config
):
    pipeline = TuningPipeline(
        tiny_corpus["docs"],
        tmp_path,
        synthetic_llm=UserLLM(reply=thinking_writer, prompts=[]),
        config=make_config(synthetic_questions_per_node=1, test_fraction=0.3),
        echo=lambda line: None,
    )
    pipeline.run(until="data")
    questions = [q.question for q in pipeline.context.queries]
    assert questions and all(q.startswith("What should I know about") for q in questions)
    assert not any("think" in q or "Perhaps" in q for q in questions)
