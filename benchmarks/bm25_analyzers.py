"""BM25 analyzers side by side: ``"plain"`` (the default) against ``"unicode"`` on BEIR sets.

For each ``--beir`` folder and split, our :class:`~llama_index_ragtune.retrievers.BM25Retriever`
indexes the whole corpus once per analyzer and answers every judged query; the table
gives nDCG@10, Recall@100 and MRR@10 of each, and the change. The ``"unicode"``
analyzer (NFKC and case folding, accent-insensitive terms, whole product codes,
character bigrams for scripts written without spaces) is meant for corpora in other
scripts, with accents, full-width text or codes; on English sets this checks that it
costs nothing there.

Example::

    python -m benchmarks.squad_passages \\
        --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --out benchmarks/data/squad-passages
    python -m benchmarks.bm25_analyzers --beir ../shared/data/scifact \\
        --beir benchmarks/data/squad-passages --split test --split train --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._paths import display_path
from llama_index_ragtune.commands.options import existing_dir

ANALYZERS = ("plain", "unicode")
DEPTH = 100  # results per query (Recall@100)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--beir", action="append", required=True, type=existing_dir, help="a BEIR folder (repeat)"
    )
    parser.add_argument(
        "--split", action="append", help="qrels split(s) to evaluate (repeat; default: test)"
    )
    parser.add_argument("--out", required=True, help="folder for bm25_analyzers.{json,md}")
    return parser.parse_args(argv)


def evaluate(path: str, split: str) -> dict[str, Any]:
    """nDCG@10, Recall@100, MRR@10 of each analyzer on ``split`` of the BEIR set ``path``."""
    from llama_index.core.schema import TextNode

    from llama_index_ragtune.data.beir import load_beir
    from llama_index_ragtune.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k
    from llama_index_ragtune.retrievers import BM25Retriever

    data = load_beir(path, split=split)
    nodes = [TextNode(id_=doc_id, text=text) for doc_id, text in data.corpus.items()]
    row: dict[str, Any] = {
        "data": display_path(path),
        "split": split,
        "queries": len(data.qrels),
        "documents": len(nodes),
    }
    for analyzer in ANALYZERS:
        start = time.perf_counter()
        retriever = BM25Retriever(nodes, similarity_top_k=DEPTH, analyzer=analyzer)
        totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
        for qid, grades in data.qrels.items():
            ranked = [hit.node.node_id for hit in retriever.retrieve(data.queries[qid])]
            totals["ndcg@10"] += ndcg_at_k(ranked, grades, 10)
            totals["recall@100"] += recall_at_k(ranked, grades, DEPTH)
            totals["mrr@10"] += mrr_at_k(ranked, grades, 10)
        row[analyzer] = {name: round(total / len(data.qrels), 4) for name, total in totals.items()}
        row[analyzer]["seconds"] = round(time.perf_counter() - start, 1)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# BM25 analyzers: plain (default) vs unicode",
        "",
        "| data | split | queries | nDCG@10 plain | nDCG@10 unicode | change | Recall@100 plain "
        "| Recall@100 unicode | MRR@10 plain | MRR@10 unicode |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        plain, uni = row["plain"], row["unicode"]
        lines.append(
            f"| {row['data']} | {row['split']} | {row['queries']} | {plain['ndcg@10']:.4f} "
            f"| {uni['ndcg@10']:.4f} | {uni['ndcg@10'] - plain['ndcg@10']:+.4f} "
            f"| {plain['recall@100']:.4f} | {uni['recall@100']:.4f} "
            f"| {plain['mrr@10']:.4f} | {uni['mrr@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from llama_index_ragtune._atomic import atomic_write_text

    args = parse_args(argv)
    rows = []
    for path in args.beir:
        for split in args.split or ["test"]:
            rows.append(evaluate(path, split))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bm25_analyzers.json", json.dumps({"rows": rows}, indent=2) + "\n")
    atomic_write_text(out / "bm25_analyzers.md", markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
