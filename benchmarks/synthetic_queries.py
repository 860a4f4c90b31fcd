"""Tuning without labelled questions: synthetic questions from the bundled decoder, judged on real ones.

A user with documents and no questions runs ``ragtune tune --docs DIR``: the pipeline
asks an LLM (offline default: the bundled SmolLM2-135M-Instruct) for questions each
node answers, filters them (``data.synthetic``: copies, too short, ``QualityFilter``,
duplicates), and tunes the encoder and the fusion on them, each promoted only when it
beats the part it replaces on held-out *synthetic* questions. This benchmark runs that
path (the reranker and the decoder left out) and then asks what the user cares about:
did the served retriever get better or worse on *real* questions it never saw?

- ``--demo`` (default): the shipped help centres; the real questions are the 304
  labelled ones (every answerable one, under its store filter).
- ``--beir DIR``: a BEIR set; the corpus is every document judged for a test query plus
  a seeded sample of the others up to ``--max-docs``; the real questions are the test
  queries.

Reported: the synthetic questions (generated, kept, why the others were dropped,
seconds per node, how findable each kept question's own node is for the untuned
hybrid, examples), the validation decisions, and nDCG@10 / Recall@10 / MRR@10 of the
untuned hybrid and the served stack on the real questions. Writes ``synthetic.json`` and
``synthetic.md`` into ``--out`` (paths relative to the working directory, the command
recorded).

Example::

    ragtune bench synthetic --demo --out benchmarks/results/synthetic-demo
    ragtune bench synthetic --beir ../shared/data/scifact --max-docs 1000 \\
        --synthetic-nodes 200 --out benchmarks/results/synthetic-scifact
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import time
from pathlib import Path
from typing import Any

from benchmarks._paths import display_path, display_value
from llama_index_ragtune.commands.options import MAX_MINUTES, bounded, seed_number

KEYS = ("ndcg@10", "recall@10", "mrr@10")
SKIPPED_STEPS = ("reranker", "decoder", "evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--demo", action="store_true", help="the shipped help centres (the default)")
    data.add_argument("--beir", help="BEIR folder: the test queries are the real questions")
    parser.add_argument(
        "--max-docs",
        type=bounded(int, 1),
        default=1000,
        help="BEIR: documents kept (every judged one, then a seeded sample)",
    )
    parser.add_argument(
        "--synthetic-nodes",
        type=bounded(int, 1),
        default=None,
        help="nodes asked for questions (seeded sample; default: every node)",
    )
    parser.add_argument(
        "--per-node", type=bounded(int, 1), default=2, help="questions asked per node"
    )
    parser.add_argument(
        "--encoder-minutes",
        type=bounded(float, 0, MAX_MINUTES, above=True),
        default=3.0,
        help="encoder training budget",
    )
    parser.add_argument(
        "--encoder-model", default=None, help="starting encoder (default: bundled MiniLM)"
    )
    parser.add_argument(
        "--question-model",
        default=None,
        help="decoder folder that writes the questions (default: bundled SmolLM2-135M)",
    )
    parser.add_argument("--seed", type=seed_number, default=0)
    parser.add_argument(
        "--work", default=None, help="pipeline work folder (default: <out>/work, removed after)"
    )
    parser.add_argument("--out", required=True, help="folder for synthetic.json / .md")


def _config(args: argparse.Namespace, beir: bool) -> Any:
    from llama_index_ragtune.finetuning import TrainingBudget
    from llama_index_ragtune.pipeline import PipelineConfig

    return PipelineConfig(
        encoder_budget=TrainingBudget(max_pairs_per_query=4, minutes=args.encoder_minutes),
        encoder_args={"num_train_epochs": 2, "per_device_train_batch_size": 16},
        eval_points=0,
        max_val_queries=50,
        synthetic_questions_per_node=args.per_node,
        encoder_model=args.encoder_model,
        max_synthetic_nodes=args.synthetic_nodes,
        seed=args.seed,
        # a BEIR corpus has no store or department to draw confusers from
        **({"group_key": None, "curated_keys": ()} if beir else {}),
    )


def _beir_inputs(args: argparse.Namespace, folder: Path) -> tuple[list[Any], Path, dict]:
    """The BEIR documents kept and a queries file of the test queries over them."""
    from llama_index.core import Document

    from llama_index_ragtune.data import load_beir

    data = load_beir(args.beir, split="test")
    relevant = data.relevant_docs()
    judged = sorted({d for docs in relevant.values() for d in docs})
    others = sorted(set(data.corpus) - set(judged))
    extra = random.Random(args.seed).sample(
        others, max(0, min(len(others), args.max_docs - len(judged)))
    )
    kept = set(judged) | set(extra)
    documents = [
        Document(id_=d, text=f"{data.titles.get(d, '')}\n\n{data.corpus[d]}".strip())
        for d in sorted(kept)
    ]
    path = folder / "real_questions.jsonl"
    lines = [
        {
            "id": qid,
            "question": text,
            "gold": [{"doc_id": d} for d in relevant[qid]],
            "split": "test",
        }
        for qid, text in data.queries.items()
        if relevant.get(qid)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return documents, path, {"documents": len(documents), "judged_documents": len(judged)}


def _rows(ctx: Any, questions: list[Any], served: bool) -> dict[str, float]:
    from llama_index_ragtune.pipeline.evaluate import retrieval_rows

    metrics, _ = retrieval_rows(ctx, questions, served=served, rerank=False)
    return {k: metrics[k] for k in KEYS}


def _decision(steps: dict[str, Any], step: str) -> dict[str, Any]:
    record = steps.get(step) or {}
    decision = record.get("decision") or {}
    return {
        "promoted": bool(record.get("promoted")),
        "reason": decision.get("reason", record.get("note")),
        "gain": decision.get("gain"),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the pipeline on synthetic questions and score both stacks on the real ones."""
    from llama_index_ragtune.pipeline import TuningPipeline
    from llama_index_ragtune.pipeline.queries import load_queries

    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    beir = args.beir is not None
    if beir:
        documents, questions_file, corpus = _beir_inputs(args, work)
        metadata = None
        name = Path(args.beir).name
    else:
        from llama_index_ragtune.demo import demo_dir

        root = demo_dir()
        documents, questions_file, metadata = (
            root / "docs",
            root / "queries.jsonl",
            root / "metadata.json",
        )
        corpus, name = {}, "demo help centres"
    writer = None
    if args.question_model:
        from llama_index_ragtune.llms import LocalChatLLM
        from llama_index_ragtune.pipeline.query_sources import SYNTHETIC_MAX_NEW_TOKENS

        writer = LocalChatLLM(args.question_model, max_new_tokens=SYNTHETIC_MAX_NEW_TOKENS)
    start = time.perf_counter()
    pipeline = TuningPipeline(
        documents,
        work / "run",
        metadata=metadata,
        config=_config(args, beir),
        skip=list(SKIPPED_STEPS),
        synthetic_llm=writer,
    )
    pipeline.run()
    seconds = time.perf_counter() - start
    ctx = pipeline.context
    steps = ctx.state.data["steps"]
    synthetic = ctx.queries
    real = [q for q in load_queries(questions_file, ctx.nodes) if q.answerable and q.gold_node_ids]
    data = steps.get("data") or {}
    stats = dict(data.get("synthetic") or {})
    return {
        "data_set": name,
        "corpus": {**corpus, "nodes": len(ctx.nodes)},
        "synthetic": {
            "stats": stats,
            "seconds_per_node": data.get("seconds", 0.0) / max(1, stats.get("nodes", 1)),
            "train": data.get("train"),
            "test": data.get("test"),
            "own_node_untuned": _rows(ctx, synthetic, served=False),
            "examples": [
                {"question": q.question, "node": q.gold_node_ids[0]}
                for q in random.Random(args.seed).sample(synthetic, min(10, len(synthetic)))
            ],
        },
        "decisions": {step: _decision(steps, step) for step in ("encoder", "fusion")},
        "real_questions": len(real),
        "rows": {
            "hybrid, untuned": _rows(ctx, real, served=False),
            "served after tuning on synthetic questions": _rows(ctx, real, served=True),
        },
        "pipeline_seconds": seconds,
    }


def markdown(result: dict[str, Any]) -> str:
    stats = result["synthetic"]["stats"]
    own = result["synthetic"]["own_node_untuned"]
    rows = result["rows"]
    before, after = rows["hybrid, untuned"], rows["served after tuning on synthetic questions"]
    lines = [
        f"# Tuning on synthetic questions, judged on real ones ({result['data_set']})",
        "",
        f"Corpus: {result['corpus']}. Synthetic questions from the bundled decoder: "
        f"{stats.get('generated')} generated for {stats.get('nodes')} nodes, "
        f"{stats.get('kept')} kept ({result['synthetic']['train']} train, "
        f"{result['synthetic']['test']} test), "
        f"{result['synthetic']['seconds_per_node']:.1f} s per node. Dropped: "
        + ", ".join(
            f"{k} {v}" for k, v in stats.items() if k not in ("nodes", "generated", "kept") and v
        )
        + f". Kept questions find their own node in the untuned hybrid's top 10 "
        f"{own['recall@10']:.3f} of the time (MRR@10 {own['mrr@10']:.3f}).",
        "",
        f"Real questions ({result['real_questions']}, never seen by any step):",
        "",
        "| stack | nDCG@10 | Recall@10 | MRR@10 |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['mrr@10']:.4f} |"
            for name, m in rows.items()
        ),
        "",
        f"Change on the real questions: nDCG@10 {after['ndcg@10'] - before['ndcg@10']:+.4f}.",
        "",
        "Validation decisions (on held-out synthetic questions):",
        "",
        *(f"- {step}: {d['reason']}" for step, d in result["decisions"].items()),
        "",
        "Examples of kept questions:",
        "",
        *(f"- {e['question']} (`{e['node']}`)" for e in result["synthetic"]["examples"]),
        "",
        f"Pipeline wall time {result['pipeline_seconds'] / 60:.1f} min on {result['machine']}.",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def command_line(argv: list[str]) -> str:
    """The command that reproduces the result (absolute paths made relative)."""
    shown = [str(display_value(part)) if part.startswith("/") else part for part in argv]
    return shlex.join(["ragtune", "bench", "synthetic", *shown])


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    import os
    import shutil

    from llama_index_ragtune._atomic import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = measure(args)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
    result["command"] = command_line(argv if argv is not None else _argv(args))
    atomic_write_text(out / "synthetic.json", json.dumps(display_value(result), indent=2))
    atomic_write_text(out / "synthetic.md", markdown(result))
    if not args.work:
        shutil.rmtree(out / "work", ignore_errors=True)
    print(markdown(result))
    print(f"wrote {display_path(out / 'synthetic.md')}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The options that differ from their defaults, as command-line words."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--out", "x"]))
    words: list[str] = []
    for name, value in vars(args).items():
        if name not in defaults or (name != "out" and value == defaults[name]) or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not False:
            words += [flag, str(display_value(value))]
    return words


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
