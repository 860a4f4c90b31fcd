"""Why tuning can hurt: audit the training signal a data set gives the encoder, before training.

Measures, on the training split, the three things that turn contrastive
training against the data:

1. **In-batch false negatives.** Rows are batched the way the encoder engine
   batches them (no duplicate texts per batch); for each row we count the other
   rows' texts in the batch that are *labelled* positives of this row's query -
   MultipleNegativesRankingLoss pushes the query away from each of them.
2. **Mined false negatives.** For SQuAD-derived sets (``--squad``), the share of
   mined hard negatives that contain a reference answer of the question: almost
   surely relevant, yet trained as negatives. Reported per source (BM25, dense)
   and per filter setting.
3. **Weak positives.** The share of (query, positive) pairs below the top grade.

Example::

    python -m benchmarks.negatives_audit --beir benchmarks/data/squad-passages \\
        --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json --out benchmarks/results
    python -m benchmarks.negatives_audit --beir ../shared/data/scifact --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from llama_index_ragtune.commands.options import seed_number
from llama_index_ragtune.data import HardNegativeMiner, RetrievalDataset

BATCH_SIZE = 32
FILTERS = {
    "no filter": {"relative_margin": None},
    "dense 0.95 x weakest positive (old default)": {"relative_margin": {"dense": 0.95}},
    "both sides 0.95 x weakest positive": {"relative_margin": 0.95},
}


def in_batch_false_negatives(data: RetrievalDataset, seed: int = 0) -> dict[str, float]:
    """Share of rows whose batch holds a labelled positive of their query among other rows' texts."""
    rows = [(q, p) for q in data.query_ids for p in data.relevant_docs[q]]
    random.Random(seed).shuffle(rows)
    batches: list[list[tuple[str, str]]] = []
    pending = list(rows)
    while pending:  # greedy no-duplicates batching: one row per query and per passage
        batch, used_q, used_d, rest = [], set(), set(), []
        for q, p in pending:
            if len(batch) < BATCH_SIZE and q not in used_q and p not in used_d:
                batch.append((q, p))
                used_q.add(q)
                used_d.add(p)
            else:
                rest.append((q, p))
        batches.append(batch)
        pending = rest
    hit_rows, hits = 0, 0
    for batch in batches:
        docs = [p for _, p in batch]
        for i, (q, _) in enumerate(batch):
            positives = set(data.relevant_docs[q])
            found = sum(1 for j, d in enumerate(docs) if j != i and d in positives)
            hits += found
            hit_rows += found > 0
    return {
        "rows": len(rows),
        "rows_with_an_in_batch_false_negative": round(hit_rows / max(1, len(rows)), 4),
        "in_batch_false_negatives_per_row": round(hits / max(1, len(rows)), 4),
    }


def answers_by_question(squad_path: Path) -> dict[str, list[str]]:
    data = json.loads(squad_path.read_text(encoding="utf-8"))["data"]
    out: dict[str, list[str]] = {}
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                texts = [a["text"].strip() for a in qa.get("answers") or [] if a["text"].strip()]
                if texts:
                    out[str(qa["id"])] = texts
    return out


def mined_false_negatives(
    data: RetrievalDataset, answers: dict[str, list[str]], seed: int
) -> dict[str, dict[str, float]]:
    """Per filter and source: share of mined negatives that contain a reference answer."""
    out: dict[str, dict[str, float]] = {}
    for name, settings in FILTERS.items():
        miner = HardNegativeMiner(
            sources=("bm25", "dense"),
            num_negatives=3,
            range_max=30,
            seed=seed,
            show_progress=False,
            **settings,
        )
        mined = miner.mine(data)
        counts: Counter = Counter()
        holding: Counter = Counter()
        for qid, negatives in mined.negatives.items():
            patterns = [re.compile(rf"\b{re.escape(a.lower())}\b") for a in answers.get(qid, [])]
            for negative in negatives:
                counts[negative.source] += 1
                text = mined.corpus[negative.doc_id].lower()
                holding[negative.source] += any(p.search(text) for p in patterns)
        out[name] = {
            f"{source}_with_answer": round(holding[source] / counts[source], 4) for source in counts
        } | {f"{source}_negatives": counts[source] for source in counts}
    return out


def weak_positives(data: RetrievalDataset) -> dict[str, float]:
    grades = Counter(data.grade(q, d) for q in data.query_ids for d in data.relevant_docs[q])
    top = max(grades) if grades else 1
    total = sum(grades.values())
    return {
        "pairs": total,
        "positives_per_query": round(total / max(1, len(data)), 2),
        "pairs_below_top_grade": round(sum(n for g, n in grades.items() if g < top) / total, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", required=True)
    parser.add_argument("--squad", type=Path, help="SQuAD JSON the set was built from (answers)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=seed_number, default=0)
    args = parser.parse_args(argv)
    data = RetrievalDataset.from_beir(args.beir, split="train")
    result: dict[str, Any] = {
        "dataset": Path(args.beir).name,
        "command": "python -m benchmarks.negatives_audit " + shlex.join(sys.argv[1:]),
        "weak_positives": weak_positives(data),
        "in_batch": in_batch_false_negatives(data, args.seed),
    }
    if args.squad:
        result["mined"] = mined_false_negatives(data, answers_by_question(args.squad), args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"negatives_audit_{result['dataset']}.json"
    from llama_index_ragtune._atomic import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
