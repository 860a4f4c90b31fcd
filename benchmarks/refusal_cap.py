"""Does a refusal cap fitted on dev questions hold on new ones? (``max_over_refusal``)

A refusal policy capped at ``max_over_refusal`` refuses at most that share of the
answerable dev questions it is fitted on. This benchmark asks how often the cap is
broken on the questions that come next: for each data set it draws ``--splits`` random
dev / test splits, fits the threshold of the encoder side's answerability signal
(``SimilarityAnswerabilityScorer``: the bundled encoder's similarity of the question and
its closest retrieved source) on the dev questions under the cap, and measures on the
test questions the share of answerable ones refused (over-refusal) and of the ones to
refuse (unanswerable, or the gold not retrieved) that are refused. Rules compared: the
cap on the dev questions alone (``over_refusal_confidence=None``) and the cap holding on
new questions with probability 0.9 / 0.95 (``evaluation.refusal_calibration.
allowed_over_refusal``: a one-sided Clopper-Pearson bound).

Data: the demo help centres (every labelled question, asked of its store; 212 nodes)
and SQuAD 2.0 (``--squad-articles`` articles' paragraphs as the corpus, up to
``--squad-questions`` of their questions, half of them unanswerable).

Example::

    python -m benchmarks.refusal_cap \\
        --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --out benchmarks/results/refusal-cap
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._paths import display_value
from llama_index_ragtune.commands.options import bounded

RULES = (None, 0.9, 0.95)  # over_refusal_confidence
TOP_K = 5  # sources retrieved per question (the demo's generation sees 3 of them)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", help="SQuAD 2.0 JSON (left out when not given)")
    parser.add_argument("--squad-articles", type=bounded(int, 1), default=12)
    parser.add_argument("--squad-questions", type=bounded(int, 2), default=1200)
    parser.add_argument(
        "--cap", type=bounded(float, 0, 1), default=0.1, help="max_over_refusal (default 0.1)"
    )
    parser.add_argument(
        "--dev-size",
        type=bounded(int, 4),
        action="append",
        help="dev questions per split (repeat; 45, 120)",
    )
    parser.add_argument(
        "--splits", type=bounded(int, 1), default=400, help="random splits per setting"
    )
    parser.add_argument("--seed", type=bounded(int, 0), default=0)
    parser.add_argument("--out", required=True, help="folder for refusal_cap.{json,md}")
    return parser.parse_args(argv)


def _unit(vectors: Any) -> Any:
    import numpy as np

    array = np.asarray(vectors, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _signal(query_vector: Any, node_vectors: Any, candidates: list[int], gold: set[int]):
    """(P(no source holds the answer), gold retrieved) over the top ``TOP_K`` candidates."""
    import numpy as np

    sims = node_vectors[candidates] @ query_vector
    order = np.argsort(-sims)[:TOP_K]
    best = float(sims[order[0]])
    retrieved = {candidates[i] for i in order}
    return 1.0 - (1.0 + best) / 2.0, bool(retrieved & gold)


def demo_questions(embed: Any) -> list[tuple[float, bool]]:
    """(signal, should refuse) per labelled demo question, asked of its store."""
    from llama_index_ragtune.demo.corpus import load_demo_documents, load_demo_queries
    from llama_index_ragtune.pipeline.document_nodes import parse_documents

    nodes = parse_documents(load_demo_documents())
    vectors = _unit(embed.get_text_embedding_batch([n.get_content() for n in nodes]))
    keys = [(n.ref_doc_id, n.metadata.get("section_path")) for n in nodes]
    rows = []
    for q in load_demo_queries():
        candidates = [
            i for i, n in enumerate(nodes) if q.get("store") in (None, n.metadata.get("store"))
        ]
        gold_refs = {(g["doc_id"], g.get("section")) for g in q["gold"]}
        gold = {
            i
            for i, (doc, section) in enumerate(keys)
            if (doc, section) in gold_refs or (doc, None) in gold_refs
        }
        signal, hit = _signal(
            _unit([embed.get_query_embedding(q["question"])])[0], vectors, candidates, gold
        )
        rows.append((signal, not (q["answerable"] and hit)))
    return rows


def squad_questions(embed: Any, path: str, articles: int, limit: int, seed: int):
    """(signal, should refuse) per sampled SQuAD 2.0 question over its articles' paragraphs."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"][:articles]
    paragraphs, questions = [], []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append((qa["question"], bool(qa.get("is_impossible")), len(paragraphs)))
            paragraphs.append(paragraph["context"])
    random.Random(seed).shuffle(questions)
    questions = questions[:limit]
    vectors = _unit(embed.get_text_embedding_batch(paragraphs))
    everything = list(range(len(paragraphs)))
    rows = []
    for text, impossible, index in questions:
        signal, hit = _signal(
            _unit([embed.get_query_embedding(text)])[0], vectors, everything, {index}
        )
        rows.append((signal, impossible or not hit))
    return rows


def simulate(
    rows: list[tuple[float, bool]], dev_size: int, cap: float, confidence, splits: int, seed: int
):
    """Fit on ``dev_size`` random questions, measure on the rest, ``splits`` times."""
    from llama_index_ragtune.evaluation.refusal_calibration import choose_refusal_threshold

    rng = random.Random(seed)
    over, recall, balanced, broken = [], [], [], 0
    for _ in range(splits):
        order = list(range(len(rows)))
        rng.shuffle(order)
        dev, test = [rows[i] for i in order[:dev_size]], [rows[i] for i in order[dev_size:]]
        answerable = [not refuse for _, refuse in dev]
        if all(answerable) or not any(answerable):
            continue
        threshold = choose_refusal_threshold(
            [s for s, _ in dev],
            answerable,
            max_over_refusal=cap,
            over_refusal_confidence=confidence,
        ).threshold
        answered = [s >= threshold for s, refuse in test if not refuse]
        refused = [s >= threshold for s, refuse in test if refuse]
        o, r = sum(answered) / len(answered), sum(refused) / len(refused)
        over.append(o)
        recall.append(r)
        balanced.append((r + 1 - o) / 2)
        broken += o > cap + 1e-12
    return {
        "splits": len(over),
        "over_refusal_mean": statistics.fmean(over),
        "over_refusal_p90": statistics.quantiles(over, n=10)[-1],
        "cap_broken_share": broken / len(over),
        "refused_of_should_refuse": statistics.fmean(recall),
        "balanced_accuracy": statistics.fmean(balanced),
    }


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Does the refusal cap hold on new questions?",
        "",
        f"`{result['command']}` ({result['seconds']:.0f} s). Cap `max_over_refusal={result['cap']}`; "
        f"{result['splits']} random dev / test splits per row; signal: the bundled encoder's "
        "question-source similarity. *cap broken*: share of splits whose test questions had "
        "more than the cap of their answerable questions refused.",
        "",
        "| data | questions (to refuse) | dev | cap holds | over-refusal mean | p90 | cap broken | refused of to-refuse | balanced acc. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        holds = (
            "on the dev questions"
            if row["confidence"] is None
            else f"on new ones, {row['confidence']:.0%}"
        )
        lines.append(
            f"| {row['data']} | {row['questions']} ({row['to_refuse']}) | {row['dev_size']} | {holds} | "
            f"{row['over_refusal_mean']:.3f} | {row['over_refusal_p90']:.3f} | {row['cap_broken_share']:.2f} | "
            f"{row['refused_of_should_refuse']:.3f} | {row['balanced_accuracy']:.3f} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from llama_index_ragtune.embeddings import default_embed_model

    args = parse_args(argv)
    start = time.perf_counter()
    embed = default_embed_model()
    sets = {"demo help centres": demo_questions(embed)}
    if args.squad:
        sets["SQuAD 2.0"] = squad_questions(
            embed, args.squad, args.squad_articles, args.squad_questions, args.seed
        )
    rows = []
    for name, questions in sets.items():
        for dev_size in args.dev_size or [45, 120]:
            for confidence in RULES:
                measured = simulate(
                    questions, dev_size, args.cap, confidence, args.splits, args.seed
                )
                rows.append({
                    "data": name, "questions": len(questions), "to_refuse": sum(r for _, r in questions),
                    "dev_size": dev_size, "confidence": confidence, **measured,
                })  # fmt: skip
    shown = [display_value(a) for a in (argv if argv is not None else sys.argv[1:])]
    result = {
        "command": "python -m benchmarks.refusal_cap " + " ".join(shown),
        "cap": args.cap,
        "splits": args.splits,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "refusal_cap.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result, out / "refusal_cap.md")
    print((out / "refusal_cap.md").read_text(encoding="utf-8"))
    return result


if __name__ == "__main__":
    main()
