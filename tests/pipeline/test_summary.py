"""The plain-text run summary: what the data step says about the questions it found."""

from __future__ import annotations

from llama_index_ragtune.pipeline.summary import FEW_TEST_QUESTIONS, questions_text


def test_synthetic_questions_say_what_the_filter_dropped_and_warn_when_few():
    info = {
        "queries_source": "synthetic",
        "synthetic": {
            "nodes": 50,
            "generated": 76,
            "kept": 26,
            "too_long": 13,
            "off_passage": 17,
            "copy": 0,
            "failed_nodes": 0,
        },
        "train": 21,
        "test": 5,
        "dev_ids": ["a", "b", "c", "d"],
    }
    text = questions_text(info, test_with_gold=5)
    first, caution = text.split("\n")
    assert first == (
        "Questions: 26 synthetic (the LLM wrote 76 for 50 passages; dropped: off_passage 17, "
        "too_long 13): 21 train (4 of them dev), 5 test"
    )
    assert "one of the 5 answerable test questions moves a rate by 0.20" in caution
    assert "--queries" in caution


def test_enough_labelled_test_questions_give_one_line():
    info = {"queries_source": "file", "train": 200, "test": 60, "dev_ids": ["q"] * 20}
    text = questions_text(info, test_with_gold=FEW_TEST_QUESTIONS)
    assert text == "Questions: 260 from the questions file: 200 train (20 of them dev), 60 test"


def test_no_answerable_test_question_says_so_without_dividing_by_zero():
    info = {"queries_source": "feedback", "train": 3, "test": 1, "dev_ids": []}
    assert questions_text(info, test_with_gold=0) == (
        "Questions: 4 from feedback: 3 train (0 of them dev), 1 test\n"
        "  No answerable test question with gold: nothing to measure retrieval on."
    )
