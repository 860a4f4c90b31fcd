"""The decoder's validation split keeps twin questions (one question under two ids) together.

Was: ``GroundedSFTBuilder`` rows had no ``question`` column, so the decoder held out rows by
qid alone and a question's twin (the same question up to case, spacing, punctuation and
invisible characters) could be trained on while the other was scored on validation.
"""

from __future__ import annotations

import json

import pytest

datasets = pytest.importorskip("datasets")

from llama_index_ragtune.data.grounded import GroundedSFTBuilder  # noqa: E402
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa  # noqa: E402
from llama_index_ragtune.finetuning.decoder import SFT_COLUMNS, DecoderFinetuneEngine  # noqa: E402

N_QUESTIONS = 20


def _twin_rows(tmp_path):
    """SFT rows of a grounded QA file: each question twice, ``a<i>`` and ``b<i>``."""
    lines = []
    for i in range(N_QUESTIONS):
        record = {
            "sources": [{"id": f"s{i}", "text": f"Store {i} opens at {i} am."}],
            "gold": [f"s{i}"],
            "answer": f"{i} am",
        }
        lines.append({"id": f"a{i}", "question": f"When does store {i} open?", **record})
        lines.append({"id": f"b{i}", "question": f"when does STORE {i} o\u200bpen", **record})
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    qa = load_grounded_qa(path)
    builder = GroundedSFTBuilder(None, qa.documents, top_k=1)
    gold = {e.qid: list(e.gold_doc_ids) for e in qa.train}
    contexts = builder.build_contexts(qa.train, retrieved=gold, show_progress=False)
    return builder.to_dataset(contexts)


def _engine(rows, tmp_path) -> DecoderFinetuneEngine:
    return DecoderFinetuneEngine(
        rows,
        model="org/not-loaded",  # a hub id: nothing is loaded to split
        output_dir=tmp_path / "run",
        val_fraction=0.25,
        show_progress=False,
    )


def _twins_split_apart(train, val) -> list[str]:
    train = set(train["qid"])
    return [q for q in val["qid"] if {"a": "b", "b": "a"}[q[0]] + q[1:] in train]


def test_grounded_rows_carry_their_question_and_keep_twins_on_one_side(tmp_path):
    rows = _twin_rows(tmp_path)
    assert rows["question"][:2] == ["When does store 0 open?", "when does STORE 0 o\u200bpen"]
    train, val = _engine(rows, tmp_path).split_validation()
    assert _twins_split_apart(train, val) == []
    assert len(val) == 10 and len(train) == 30  # 5 of 20 questions, each under two ids
    assert sorted(train.select_columns(list(SFT_COLUMNS)).column_names) == sorted(SFT_COLUMNS)


def test_rows_without_a_question_column_read_it_back_from_their_grounded_prompts(tmp_path):
    """Rows built by hand or by an older builder: the question is read from the prompt."""
    rows = _twin_rows(tmp_path)
    rows = rows.remove_columns([c for c in ("question",) if c in rows.column_names])
    train, val = _engine(rows, tmp_path).split_validation()
    assert _twins_split_apart(train, val) == [] and len(val) == 10
    assert "question" in train.column_names  # metadata only: the trainer takes SFT_COLUMNS


def test_rows_whose_prompts_are_not_grounded_are_split_by_qid_as_before(tmp_path):
    chat = [{"role": "user", "content": "hello"}]
    rows = datasets.Dataset.from_dict(
        {
            "prompt": [chat] * 8,
            "completion": [[{"role": "assistant", "content": "hi"}]] * 8,
            "qid": [f"q{i}" for i in range(8)],
        }
    )
    train, val = _engine(rows, tmp_path).split_validation()
    assert len(val) == 2 and len(train) == 6 and "question" not in val.column_names
