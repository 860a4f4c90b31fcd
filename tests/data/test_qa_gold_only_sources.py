"""A ``--qa`` line whose only sources are its gold ones (one source, the answer's): the gold
cannot be removed from what it shows, so it is kept instead of a raw "No sources" error
(before training for ``--p-no-gold``, after the decoder's training for the answerability
head's gold-removed twins)."""

from __future__ import annotations

import json
from pathlib import Path

from llama_index_ragtune.data.answerability import with_gold_removed
from llama_index_ragtune.data.grounded import GroundedSFTBuilder
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.retrievers import BM25Retriever

HOURS = {"id": "hours", "text": "The store opens at 8am and closes at 9pm."}
FEES = {"id": "fees", "text": "A restocking fee of 15 percent applies to opened laptops."}
LINES = [
    {"id": "alone", "question": "When do you open?", "sources": [HOURS], "gold": ["hours"]}
    | {"answer": "8am"},
    {"id": "pair", "question": "Is there a fee?", "sources": [HOURS, FEES], "gold": ["fees"]}
    | {"answer": "15 percent"},
]


def _builder(tmp_path: Path, p_no_gold: float):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES), encoding="utf-8")
    qa = load_grounded_qa(path)
    retriever = BM25Retriever.from_defaults(nodes=qa.documents, similarity_top_k=2)
    builder = GroundedSFTBuilder(retriever, qa.documents, top_k=3, p_no_gold=p_no_gold)
    return qa, builder


def test_a_gold_only_line_keeps_its_gold_when_the_draw_would_remove_it(tmp_path):
    qa, builder = _builder(tmp_path, p_no_gold=1.0)
    contexts = builder.build_contexts(qa.train, qa.sources, force_gold=True, show_progress=False)
    by_id = {c.qid: c for c in contexts}
    assert by_id["alone"].answerable and by_id["alone"].source_ids == ["hours"]
    assert not by_id["alone"].gold_removed
    assert not by_id["pair"].answerable and by_id["pair"].source_ids == ["hours"]  # removed


def test_a_gold_only_line_gets_no_gold_removed_twin(tmp_path):
    qa, builder = _builder(tmp_path, p_no_gold=0.0)
    contexts = builder.build_contexts(qa.train, qa.sources, force_gold=True, show_progress=False)
    both = with_gold_removed(builder, contexts, qa.sources, share=1.0)
    assert sorted(c.qid for c in both) == ["alone", "pair", "pair#gold-removed"]
