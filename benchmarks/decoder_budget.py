"""The demo's decoder with more training than its CPU budget allows: does the refusal separate?

``ragtune demo`` trains the bundled 135M decoder for a few minutes on 2 CPU cores
(about 54 SFT steps). This benchmark asks what more steps (or another learning
rate) would buy on the same data, on a GPU, in two parts:

- ``prepare`` (CPU, next to a finished ``ragtune demo --out RUN``): the decoder
  step's SFT rows (the same training contexts the demo built), and for the
  demo's dev and test generation questions and its seed questions the exact
  messages the served stack sends the decoder, the labels, and the served
  encoder's answerability value. Writes ``sft.jsonl`` and ``items.jsonl``.
- ``train`` (any device; meant for a GPU): for each ``--configs`` entry, the
  demo's SFT recipe with those ``SFTConfig`` overrides (champion/challenger
  forced: every challenger is measured), then the demo's refusal-policy choice
  on the dev questions (none / decoder / answerability / combined, balanced
  accuracy cross-validated, at most 10 % of answerable ones refused) and its
  test metrics. Writes ``decoder-budget.json`` and ``decoder-budget.md``.

Example::

    ragtune demo --out ragtune-demo
    python -m benchmarks.decoder_budget prepare --run ragtune-demo --out runs/decoder-budget-data
    python -m benchmarks.decoder_budget train --data runs/decoder-budget-data \\
        --configs "max_steps=54" "num_train_epochs=5" --device cuda \\
        --out benchmarks/results/decoder-budget
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._paths import display_path


def _message_dicts(messages: Any) -> list[dict[str, str]]:
    return [{"role": m.role.value, "content": m.content or ""} for m in messages]


def prepare(run: Path, out: Path) -> None:
    """Write ``sft.jsonl`` and ``items.jsonl`` from the finished demo run in ``run``."""
    from llama_index.core.schema import QueryBundle

    from llama_index_ragtune.commands.demo import SEED_QUESTIONS
    from llama_index_ragtune.demo import demo_dir
    from llama_index_ragtune.llms.answerability import SimilarityAnswerabilityScorer
    from llama_index_ragtune.pipeline import PipelineConfig, TuningPipeline
    from llama_index_ragtune.pipeline.evaluate import generation_questions
    from llama_index_ragtune.pipeline.steps import TIME_LIMITED_DECODER_ARGS, decoder_contexts

    config = PipelineConfig.demo()  # a default `ragtune demo` run's settings
    try:  # the steps it skipped (the fusion and the reranker, unless it was asked for them)
        steps = json.loads((run / "work" / "state.json").read_text(encoding="utf-8"))["steps"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"{run}: not a finished `ragtune demo --out {run}` ({exc})") from None
    skipped = [name for name, step in steps.items() if step.get("status") == "skipped"]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"  # opening a run may rewrite its state: work on a copy
        shutil.copytree(run, copy, symlinks=True)
        root = demo_dir()
        pipeline = TuningPipeline(
            root / "docs",
            copy,
            queries=root / "queries.jsonl",
            metadata=root / "metadata.json",
            config=config,
            skip=skipped,
            resume=True,
        )
        ctx = pipeline.context
        if not ctx.state.done("decoder"):
            raise SystemExit(
                f"{run}: not a finished default `ragtune demo --out {run}` (its settings differ "
                "from PipelineConfig.demo(), or it stopped before the decoder)"
            )
        contexts = decoder_contexts(ctx)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "sft.jsonl", "w", encoding="utf-8") as f:
            for c in contexts:
                row = {
                    "prompt": c.messages(),
                    "completion": [{"role": "assistant", "content": c.target}],
                    "qid": c.qid,
                    "answerable": c.answerable,
                }
                f.write(json.dumps(row) + "\n")
        llm = ctx.llm(ctx.base_decoder)  # fits prompts to the decoder's window, as served
        scorer = SimilarityAnswerabilityScorer(ctx.embed_model(ctx.served_encoder))
        test, dev = generation_questions(ctx)
        group = config.group_key
        items = []
        kinds = [("dev", q.id, q.question, q.filters, q) for q in dev]
        kinds += [("test", q.id, q.question, q.filters, q) for q in test]
        kinds += [
            ("seed", f"seed-{i}", s, {group: f} if f else None, None)
            for i, (s, f) in enumerate(SEED_QUESTIONS)
        ]
        for split, qid, question, filters, q in kinds:
            engine = ctx.query_engine(llm, filters)
            nodes = engine.retrieve(QueryBundle(question))
            if nodes and split != "dev":  # the test answers see what serving shows the LLM
                nodes = engine.fit_prompt(question, nodes).nodes
            ids = [n.node.node_id for n in nodes]
            gold = list(q.gold_node_ids) if q is not None else []
            items.append(
                {
                    "split": split,
                    "id": qid,
                    "question": question,
                    "filters": filters,
                    "messages": _message_dicts(engine.messages(question, nodes)),
                    "source_node_ids": ids,
                    "source_texts": engine.source_texts(nodes),
                    "answerability": float(scorer([question], [engine.source_texts(nodes)])[0]),
                    "answerable": None if q is None else bool(q.answerable),
                    "retrieved_gold": bool(set(gold) & set(ids)),
                    "gold_node_ids": gold,
                    "answer": None if q is None else q.answer,
                    "groups": {
                        i: ctx.node_map[i].metadata.get(group)
                        for i in sorted({*ids, *gold})
                        if i in ctx.node_map
                    }
                    if group
                    else {},
                }
            )
        with open(out / "items.jsonl", "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item) + "\n")
        meta = {
            "run": display_path(run),
            "sft_rows": len(contexts),
            "answer_targets": sum(c.answerable for c in contexts),
            "items": {k: sum(i["split"] == k for i in items) for k in ("dev", "test", "seed")},
            "max_new_tokens": config.max_new_tokens,
            "max_val_queries": min(config.max_val_queries, 50),
            "max_over_refusal": config.max_over_refusal,
            "over_refusal_confidence": config.over_refusal_confidence,
            "refusal_cv_repeats": config.refusal_cv_repeats,
            "seed": config.seed,
            "decoder_model": config.decoder_model,
            "decoder_args": {**TIME_LIMITED_DECODER_ARGS, **config.decoder_args},
            "decoder_max_pairs": config.decoder_budget.max_pairs if config.decoder_budget else None,
        }
        (out / "prepared.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(meta, indent=2))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class _LookupScorer:
    """The served encoder's answerability, read from the prepared items (no encoder needed)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.table = {self.key(i["question"], i["source_texts"]): i["answerability"] for i in items}

    @staticmethod
    def key(question: str, sources: Any) -> str:
        return question + "\x00" + "\x01".join(sources)

    def __call__(self, questions: Any, sources: Any) -> list[float]:
        return [self.table[self.key(q, s)] for q, s in zip(questions, sources, strict=True)]


def _parse_config(text: str) -> tuple[str, dict[str, Any]]:
    args: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        args[key.strip()] = json.loads(value)
    return text, args


def _right_store(item: dict[str, Any], cited: list[str]) -> float | None:
    wanted = {item["groups"].get(g) for g in item["gold_node_ids"]} - {None}
    if not wanted:
        return None
    stores = [item["groups"].get(c) for c in cited]
    return float(bool(stores) and all(s in wanted for s in stores))


def train(data: Path, out: Path, configs: list[str], device: str | None) -> dict[str, Any]:
    """Train and measure one challenger per entry of ``configs``; returns the results."""
    import datasets
    from llama_index.core.base.llms.types import ChatMessage
    from tqdm.auto import tqdm

    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.evaluation.refusal_calibration import decision_scores, refusal_auc
    from llama_index_ragtune.finetuning import DecoderFinetuneEngine, TrainingBudget
    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.llms.refusal_selection import select_refusal_policy
    from llama_index_ragtune.models import resolve_model

    meta = json.loads((data / "prepared.json").read_text(encoding="utf-8"))
    rows = _jsonl(data / "sft.jsonl")
    items = _jsonl(data / "items.jsonl")
    dev = [i for i in items if i["split"] == "dev"]
    test = [i for i in items if i["split"] == "test"]
    seeds = [i for i in items if i["split"] == "seed"]
    scorer = _LookupScorer(items)
    base = resolve_model(meta["decoder_model"], kind="decoder")
    evaluator = GenerationEvaluator(answer_metric="squad")
    results = []
    work = Path(tempfile.mkdtemp(prefix="decoder-budget-"))

    def conversations(group: list[dict[str, Any]]) -> list[list[Any]]:
        return [[ChatMessage(**m) for m in i["messages"]] for i in group]

    for name, overrides in map(_parse_config, configs):
        start = time.perf_counter()
        folder = work / f"c{len(results)}"
        engine = DecoderFinetuneEngine(
            datasets.Dataset.from_list(rows),
            model=base,
            args=DecoderFinetuneEngine.default_args(
                folder, **{**meta["decoder_args"], **overrides}
            ),
            budget=TrainingBudget(max_pairs=meta["decoder_max_pairs"]),
            output_dir=folder,
            eval_points=0,
            max_val_queries=meta["max_val_queries"],
            force_promotion=True,
            device=device,
            show_progress=False,
        )
        result = engine.finetune()
        trained = time.perf_counter() - start
        llm = LocalChatLLM(
            engine.merged_dir, max_new_tokens=meta["max_new_tokens"], device=device, dtype="auto"
        )
        p_dev = llm.conversation_refusal_probabilities(conversations(dev))
        p_test = llm.conversation_refusal_probabilities(conversations(test + seeds))
        dev_answerable = [bool(i["answerable"] and i["retrieved_gold"]) for i in dev]
        selection = select_refusal_policy(
            dev_answerable,
            decoder_probabilities=p_dev,
            answerability=[i["answerability"] for i in dev],
            scorer=scorer,
            seed=meta["seed"],
            max_over_refusal=meta["max_over_refusal"],
            # data prepared before the setting existed: the cap on the dev questions
            over_refusal_confidence=meta.get("over_refusal_confidence"),
            repeats=meta["refusal_cv_repeats"],
        )
        policy = selection.policy
        answers = []
        asked = list(zip(test + seeds, p_test, strict=True))
        for item, p in tqdm(asked, desc=f"Answering ({name})"):
            messages = [ChatMessage(**m) for m in item["messages"]]
            decision = policy.decide([item["question"]], [item["source_texts"]], [p])[0]
            reply = llm.chat(messages, refuse=False)
            answers.append((item, p, decision, reply.message.content or ""))
        scored = []
        for item, _p, decision, text in answers[: len(test)]:
            shown = llm.refusal if decision.refused else text
            row = evaluator.evaluate_example(
                question=item["question"],
                answer_text=shown,
                source_node_ids=item["source_node_ids"],
                gold_node_ids=item["gold_node_ids"],
                gold_answers=[item["answer"]] if item["answer"] else [],
                answerable=item["answerable"],
                example_id=item["id"],
                source_texts=item["source_texts"],
            )
            if item["answerable"]:
                row["right_source"] = float(
                    bool(set(row["cited_node_ids"]) & set(item["gold_node_ids"]))
                )
                row["right_store"] = _right_store(item, row["cited_node_ids"])
            scored.append(row)
        answerable_rows = [r for r in scored if r["answerable"]]
        should_refuse = [not (i["answerable"] and i["retrieved_gold"]) for i in test]

        def mean(key: str, rows: list[dict[str, Any]] = scored) -> float | None:
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            return round(sum(values) / len(values), 3) if values else None

        refused = [bool(d.refused) for _i, _p, d, _t in answers[: len(test)]]
        decisions = decision_scores(refused, [not s for s in should_refuse])
        results.append(
            {
                "config": name,
                "overrides": overrides,
                "steps": result.global_step,
                "validation": {"before": result.before, "after": result.after},
                "train_seconds": round(trained, 1),
                "auc_decoder_dev": _round(refusal_auc(p_dev, dev_answerable)),
                "auc_decoder_test": _round(
                    refusal_auc(p_test[: len(test)], [not s for s in should_refuse])
                ),
                "auc_answerability_test": _round(
                    refusal_auc(
                        [1 - i["answerability"] for i in test], [not s for s in should_refuse]
                    )
                ),
                "policy": selection.to_dict(),
                "test": {
                    "questions": len(test),
                    "citation_precision": mean("citation_precision"),
                    "citation_recall": mean("citation_recall"),
                    "right_source": mean("right_source", answerable_rows),
                    "right_store": mean("right_store", answerable_rows),
                    "answer_f1": mean("f1"),
                    "refused": sum(refused),
                    "should_refuse": sum(should_refuse),
                    "refusal_f1": round(decisions["refusal_f1"], 3),
                },
                "seeds": [
                    {
                        "question": i["question"],
                        "filters": i["filters"],
                        "p_refusal": round(p, 3),
                        "refused": bool(d.refused),
                        "answer": t,
                        "cited_stores": sorted({str(i["groups"].get(n)) for n in _cited(t, i)}),
                    }
                    for i, p, d, t in answers[len(test) :]
                ],
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(results[-1], default=str)[:3000], flush=True)
        del llm, engine
        payload = _write(
            out, meta, device, results
        )  # after each challenger: a cut run keeps its rows
    shutil.rmtree(work, ignore_errors=True)
    return payload


def _write(
    out: Path, meta: dict[str, Any], device: str | None, results: list[Any]
) -> dict[str, Any]:
    payload = {
        "command": "python -m benchmarks.decoder_budget "
        + shlex.join([display_path(a) if os.path.isabs(a) else a for a in sys.argv[1:]]),
        "data": meta,
        "device": _device_name(device),
        "python": platform.python_version(),
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoder-budget.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8"
    )
    (out / "decoder-budget.md").write_text(_markdown(payload), encoding="utf-8")
    return payload


def _cited(text: str, item: dict[str, Any]) -> list[str]:
    from llama_index_ragtune.grounding import parse_answer

    ids = item["source_node_ids"]
    parsed = parse_answer(text, len(ids))
    return [ids[n - 1] for n in parsed.citations if 0 < n <= len(ids)]


def _loss(metrics: Any) -> Any:
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            if "loss" in key:
                return round(value, 3)
    return metrics


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _device_name(device: str | None) -> str:
    import torch

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def _markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# The demo's decoder with more training",
        "",
        f"`{payload['command']}` on {payload['device']}; {payload['data']['sft_rows']} SFT rows, "
        f"{payload['data']['items']['dev']} dev and {payload['data']['items']['test']} test questions.",
        "",
        "| config | steps | val loss | AUC decoder dev / test | policy | cit. prec. | cit. recall "
        "| right source | right store | answer F1 | refused / should | refusal F1 | grocery seed |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in payload["results"]:
        t, pol = r["test"], r["policy"]
        grocery = r["seeds"][0]
        lines.append(
            f"| `{r['config']}` | {r['steps']} | {_loss(r['validation']['before'])} -> "
            f"{_loss(r['validation']['after'])} | {r['auc_decoder_dev']} / {r['auc_decoder_test']} "
            f"| {pol.get('name')} @ {_round(pol.get('threshold'))} | {t['citation_precision']} | "
            f"{t['citation_recall']} | {t['right_source']} | {t['right_store']} | {t['answer_f1']} | "
            f"{t['refused']} / {t['should_refuse']} | {t['refusal_f1']} | "
            f"{'refused' if grocery['refused'] else grocery['cited_stores']} (P {grocery['p_refusal']}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="the demo run's decoder data and questions")
    p.add_argument("--run", type=Path, required=True, help="a finished `ragtune demo --out` folder")
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train and measure one challenger per config")
    t.add_argument("--data", type=Path, required=True, help="the folder `prepare` wrote")
    t.add_argument(
        "--configs",
        nargs="+",
        default=["max_steps=54"],
        help="SFTConfig overrides, KEY=JSON[,KEY=JSON...] per challenger",
    )
    t.add_argument("--device", default=None)
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.run, args.out)
    else:
        train(args.data, args.out, args.configs, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
