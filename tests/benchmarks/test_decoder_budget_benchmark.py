"""``benchmarks.decoder_budget train`` end to end on a tiny model and hand-made prepared data."""

from __future__ import annotations

import json

from benchmarks.decoder_budget import main

SYSTEM = "Answer from the numbered sources and cite them as [n]."
REFUSAL = "I don't have enough information to answer."


def _messages(question: str, source: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Sources:\n[1] {source}\n\nQuestion: {question}"},
    ]


def _item(split: str, i: int, answerable: bool | None, store: str = "grocery") -> dict:
    node = f"{store}/page.md#{i}"
    source = f"Item {i} at the {store} store can be returned within {i + 2} days."
    return {
        "split": split,
        "id": f"{split}-{i}",
        "question": f"How long is the return window of item {i}?",
        "filters": {"store": store},
        "messages": _messages(f"How long is the return window of item {i}?", source),
        "source_node_ids": [node],
        "source_texts": [source],
        "answerability": (i % 10) / 10,
        "answerable": answerable,
        "retrieved_gold": bool(answerable),
        "gold_node_ids": [node] if answerable else [],
        "answer": f"{i + 2} days" if answerable else None,
        "groups": {node: store},
    }


def test_train_measures_each_setting_and_writes_the_tables(tmp_path, tiny_causal_lm_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(12):
        answer = f"[1] {i + 2} days." if i % 3 else REFUSAL
        rows.append(
            {
                "prompt": _messages(f"How long is the return window of item {i}?", f"Item {i} ..."),
                "completion": [{"role": "assistant", "content": answer}],
                "qid": f"q{i}",
                "answerable": bool(i % 3),
            }
        )
    (data / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = [_item("dev", i, i % 2 == 0) for i in range(10)]
    items += [_item("test", 20, True), _item("test", 21, False), _item("seed", 30, None)]
    (data / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    meta = {
        "run": "ragtune-demo",
        "sft_rows": len(rows),
        "items": {"dev": 10, "test": 2, "seed": 1},
        "max_new_tokens": 4,
        "max_val_queries": 4,
        "max_over_refusal": 0.1,
        "refusal_cv_repeats": 1,
        "seed": 0,
        "decoder_model": tiny_causal_lm_path,
        "decoder_args": {"warmup_steps": 0, "learning_rate": 5e-4},
        "decoder_max_pairs": 192,
    }
    (data / "prepared.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    main(["train", "--data", str(data), "--configs", "max_steps=1", "--device", "cpu",
          "--out", str(out)])  # fmt: skip

    payload = json.loads((out / "decoder-budget.json").read_text())
    (result,) = payload["results"]
    assert result["overrides"] == {"max_steps": 1} and result["steps"] == 1
    assert result["policy"]["name"] in {"none", "decoder", "answerability", "combined"}
    assert result["policy"]["dev_questions"] == 10
    assert result["test"]["questions"] == 2 and result["test"]["should_refuse"] == 1
    assert [s["question"] for s in result["seeds"]] == [items[-1]["question"]]
    assert 0.0 <= result["seeds"][0]["p_refusal"] <= 1.0
    table = (out / "decoder-budget.md").read_text()
    assert "| `max_steps=1` | 1 |" in table
    assert str(tmp_path) not in table and str(tmp_path) not in json.dumps(payload["command"])
