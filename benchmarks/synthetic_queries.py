"""How good are synthetic questions from the bundled decoder? Measured on the demo corpus.

When a user has no labelled questions, the tuning pipeline asks an LLM for questions
each node answers (``pipeline.query_sources.synthetic_queries``; offline default: the
bundled SmolLM2-135M-Instruct). This script samples ``--nodes`` nodes of the shipped
help centres, generates the questions, and reports:

* what the filters kept (copies of the passage, too short, duplicates dropped);
* seconds per node;
* how findable each kept question's own node is for the untuned hybrid retriever
  (Recall@10, MRR@10 against that one node), next to the same figures for the
  corpus's human-written training questions (against their gold nodes, under their
  store filters): a question
  that does not retrieve its own node teaches the encoder little;
* a sample of the questions, to read.

Only the public API is used.

Example::

    python -m benchmarks.synthetic_queries --nodes 40 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from pathlib import Path


def _ranks(retriever, questions: list[tuple[str, list[str], dict]]) -> dict[str, float]:
    from llama_index_ragtune.evaluation.metrics import compute_metrics
    from llama_index_ragtune.pipeline.context import metadata_filters

    scores = [
        compute_metrics(
            [h.node.node_id for h in retriever.with_filters(metadata_filters(f)).retrieve(q)],
            dict.fromkeys(gold, 1),
            (10,),
            ("recall", "mrr"),
        )
        for q, gold, f in questions
    ]
    return {k: statistics.fmean(s[k] for s in scores) for k in ("recall@10", "mrr@10")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=40, help="nodes sampled (seeded)")
    parser.add_argument("--per-node", type=int, default=2, help="questions asked per node")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default="benchmarks/results", help="folder for the JSON + Markdown"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.synthetic_queries", *argv])

    from llama_index_ragtune.demo import demo_dir
    from llama_index_ragtune.pipeline import load_queries, parse_documents, read_documents
    from llama_index_ragtune.pipeline.query_sources import synthetic_queries
    from llama_index_ragtune.retrievers import HybridRetriever

    root = demo_dir()
    nodes = parse_documents(read_documents(root / "docs", metadata=root / "metadata.json"))
    sample = random.Random(args.seed).sample(nodes, min(args.nodes, len(nodes)))
    start = time.perf_counter()
    queries, stats = synthetic_queries(
        sample, questions_per_node=args.per_node, seed=args.seed, show_progress=True
    )
    seconds = time.perf_counter() - start
    retriever = HybridRetriever.from_defaults(nodes=nodes, similarity_top_k=10)
    synthetic = _ranks(retriever, [(q.question, q.gold_node_ids, {}) for q in queries])
    labelled = [
        q
        for q in load_queries(root / "queries.jsonl", nodes)
        if q.split == "train" and q.answerable
    ]
    human = _ranks(retriever, [(q.question, q.gold_node_ids, q.filters) for q in labelled])
    result = {
        "nodes": len(sample),
        "questions_per_node": args.per_node,
        "stats": stats,
        "seconds_per_node": seconds / len(sample),
        "synthetic": synthetic,
        "human_train": {**human, "questions": len(labelled)},
        "command": command,
        "examples": [
            {"question": q.question, "node": q.gold_node_ids[0]}
            for q in random.Random(args.seed).sample(queries, min(10, len(queries)))
        ],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic_queries_demo.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Synthetic questions from the bundled decoder (demo corpus)",
        "",
        f"{len(sample)} nodes, {args.per_node} questions asked per node, "
        f"{result['seconds_per_node']:.1f} s per node. Filter outcome: {stats}.",
        "",
        "| questions | count | Recall@10 of their node | MRR@10 |",
        "| --- | ---: | ---: | ---: |",
        f"| synthetic (kept) | {len(queries)} | {synthetic['recall@10']:.3f} | "
        f"{synthetic['mrr@10']:.3f} |",
        f"| human-written train questions (under their store filter) | {len(labelled)} | "
        f"{human['recall@10']:.3f} | {human['mrr@10']:.3f} |",
        "",
        "Examples:",
        "",
        *(f"- {e['question']} (`{e['node']}`)" for e in result["examples"]),
        "",
        f"Command: `{command}`",
    ]
    (out / "synthetic_queries_demo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
