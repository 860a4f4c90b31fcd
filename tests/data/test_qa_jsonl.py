"""``load_grounded_qa``: the ``--qa`` JSONL format of ``ragtune train decoder``, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.grounded import GroundedSFTBuilder
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.retrievers import BM25Retriever

RETURNS = {
    "id": "returns",
    "text": "Opened electronics can be returned within 14 days of purchase.",
}
HOURS = {"id": "hours", "text": "The store opens at 8am and closes at 9pm."}
FEES = {"id": "fees", "text": "A restocking fee of 15 percent applies to opened laptops."}

GOOD = [
    {
        "id": "q1",
        "question": "How long can I return opened electronics?",
        "sources": [HOURS, RETURNS],
        "gold": ["returns"],
        "answer": "within 14 days",
    },
    {
        "question": "Is there a charge for returning an opened laptop?",
        "contexts": [FEES, HOURS],
        "gold": ["fees"],
        "answer": "Yes, a fee",
        "evidence": "A restocking fee of 15 percent applies",
        "split": "test",
    },
    {"id": "q3", "question": "Do you sell concert tickets?", "sources": [HOURS], "answer": ""},
]


def _write(tmp_path: Path, records: list, name: str = "qa.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n",
        encoding="utf-8",
    )
    return path


def test_loads_questions_sources_answers_and_splits(tmp_path: Path) -> None:
    qa = load_grounded_qa(_write(tmp_path, GOOD))
    assert [e.qid for e in qa.train] == ["q1", "q3"] and [e.qid for e in qa.test] == ["line-2"]
    first, refusal = qa.train
    assert first.gold_doc_ids == ["returns"] and first.answers == ["within 14 days"]
    assert first.answerable and not refusal.answerable and refusal.answers == []
    assert qa.test[0].evidence == ["A restocking fee of 15 percent applies"]
    assert qa.sources == {"q1": ["hours", "returns"], "line-2": ["fees", "hours"], "q3": ["hours"]}
    assert sorted(d.id_ for d in qa.documents) == ["fees", "hours", "returns"]


def test_contexts_show_the_lines_own_sources_with_cite_or_refuse_targets(tmp_path: Path) -> None:
    qa = load_grounded_qa(_write(tmp_path, GOOD))
    retriever = BM25Retriever.from_defaults(nodes=qa.documents, similarity_top_k=3)
    builder = GroundedSFTBuilder(retriever, qa.documents, top_k=3, p_no_gold=0.0)
    examples = qa.train + qa.test
    contexts = builder.build_contexts(examples, qa.sources, force_gold=False, show_progress=False)
    by_id = {c.qid: c for c in contexts}
    assert by_id["q1"].source_ids == ["hours", "returns"]
    assert by_id["q1"].answerable and by_id["q1"].target.startswith("within 14 days [2]")
    # an abstractive answer is checked by its evidence quote, not by the answer text
    assert by_id["line-2"].answerable
    assert by_id["line-2"].target.startswith('Yes, a fee [1]: "A restocking fee')
    assert not by_id["q3"].answerable and by_id["q3"].target == builder.refusal


BAD = [
    ("{not json", "malformed JSON"),
    ('["a list"]', "expected a JSON object, got list"),
    ({"sources": [HOURS], "answer": ""}, "missing field 'question'"),
    ({"question": "q", "answer": ""}, "missing field 'sources'"),
    ({"question": "q", "sources": [], "answer": ""}, "must be a non-empty list"),
    ({"question": "q", "sources": [{"id": "x"}], "answer": ""}, "exactly 'id' and 'text'"),
    ({"question": "q", "sources": [{"id": "x", "text": " "}]}, "sources[0].text must be"),
    ({"question": "q", "sources": [HOURS], "answer": "8am", "gold": ["nope"]}, "not among"),
    ({"question": "q", "sources": [HOURS], "answer": "8am"}, "no 'gold' source ids"),
    ({"question": "q", "sources": [HOURS], "gold": ["hours"], "answer": "noon"}, "does not appear"),
    (
        {"question": "q", "sources": [HOURS], "gold": ["hours"], "answer": "a", "evidence": "zzz"},
        "'evidence' quote is not in any gold source",
    ),
    ({"question": "q", "sources": [HOURS], "answer": "", "split": "dev"}, "split must be"),
    ({"question": "q", "sources": [HOURS], "answers": ["8am"]}, "unknown field(s) ['answers']"),
    ({"question": "q", "sources": [HOURS], "contexts": [HOURS]}, "both 'sources' and 'contexts'"),
    ({"question": "q", "sources": [{"id": "hours", "text": "Other."}]}, "another text on line 1"),
    ({"id": "q1", "question": "again", "sources": [HOURS]}, "used on line 1 too"),
    ({"question": 3, "sources": [HOURS]}, "field 'question' must be a string"),
]


@pytest.mark.parametrize(("bad", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, bad, message: str) -> None:
    path = _write(tmp_path, [GOOD[0], bad])
    with pytest.raises(DataError) as info:
        load_grounded_qa(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)
    assert info.value.line == 2


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no questions"):
        load_grounded_qa(path)
