"""``ragtune bench generation``: base decoder vs grounded SFT vs preference tuning, refusal from both halves.

Every row answers the same retrieved contexts (``llama_index_ragtune.data.grounded_tasks``): the
SQuAD 2.0 or SciFact test questions and, for SQuAD, a multi-hop set made from
the test articles (two needed halves + a distractor, and the same question
with the gold removed). The encoder side's answerability head is trained once
(``--answerability-minutes``); every row fits its refusal policies -- decoder,
answerability, their logistic combination -- per set on dev questions drawn
like that set's test questions (the multi-hop set on multi-hop dev questions,
the task's set on the task's own; a policy calibrated on a mixture misplaces
its threshold on each part) and is scored
with each and with none (``llama_index_ragtune.evaluation.decoder_scoring``); the headline is the
policy with the best cross-validated balanced accuracy on dev (``select_refusal_policy``), with
the citation post-check measured both ways (flag / cite).

Rows (``--rows``): ``base`` (untuned), ``sft`` (grounded SFT, multi-source
targets included), ``dpo`` (+ DPO on rule-made pairs), ``mined`` (+ DPO on
pairs mined from the SFT model's own sampled answers), ``grpo`` (+ GRPO from
the SFT adapter, rewarded by our evaluator; a GPU row).

Example::

    ragtune bench generation --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --max-train-examples 300 --max-test-examples 200 --rows base,sft,mined \\
        --out benchmarks/results/generation
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

from benchmarks._paths import display_path, display_value
from llama_index_ragtune.commands.decoder_arguments import add_common_arguments, llm_options
from llama_index_ragtune.commands.options import bounded
from llama_index_ragtune.data.grounded_tasks import (
    TUNE,
    GenerationTask,
    GroundedData,
    build_retriever,
    load_task,
    prepare_grounded_data,
    retrieve_all,
)
from llama_index_ragtune.evaluation.decoder_scoring import (
    COLUMNS,
    CachedScorer,
    fit_policies,
    markdown_table,
    policy_table,
    post_check_table,
    score_set,
    summarize,
)
from llama_index_ragtune.finetuning.decoder_recipes import (
    make_configs,
    mined_preferences,
    train_answerability,
    train_grpo,
)

__all__ = [
    "COLUMNS",
    "TUNE",
    "GenerationTask",
    "GroundedData",
    "add_arguments",
    "add_common_arguments",
    "build_retriever",
    "llm_options",
    "load_task",
    "make_configs",
    "markdown_table",
    "prepare_grounded_data",
    "retrieve_all",
    "run",
    "run_benchmark",
    "summarize",
]

logger = logging.getLogger(__name__)

ROWS = {
    "base": "base",
    "sft": "+ grounded SFT",
    "dpo": "+ SFT + DPO",
    "mined": "+ SFT + DPO (own failures)",
    "grpo": "+ SFT + GRPO",
}


# ------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    # The committed results chose each row's refusal policy on one fold split; pass
    # --refusal-cv-repeats 10 for the choice `ragtune train decoder` and the pipeline make.
    parser.set_defaults(refusal_cv_repeats=1)
    parser.add_argument("--max-train-examples", type=bounded(int, 1), default=300)
    parser.add_argument(
        "--max-preference-examples",
        type=bounded(int, 1),
        default=None,
        help="contexts used for DPO pairs, rule-made or mined (default: all training contexts)",
    )
    parser.add_argument(
        "--rows",
        default="base,sft,dpo",
        help="comma-separated rows: base, sft, dpo (rule-made pairs), mined (pairs from the SFT "
        "model's own failures), grpo (GRPO with our evaluator's reward)",
    )
    parser.add_argument(
        "--mined-samples",
        type=bounded(int, 2),
        default=4,
        help="answers sampled per context for mined pairs",
    )
    parser.add_argument(
        "--mined-temperature",
        type=bounded(float, 0, above=True),
        default=0.9,
        help="sampling temperature (mined, GRPO)",
    )
    parser.add_argument(
        "--grpo-steps", type=bounded(int, 1), default=50, help="GRPO optimizer steps"
    )
    parser.add_argument(
        "--grpo-generations",
        type=bounded(int, 2),
        default=4,
        help="answers sampled per GRPO prompt",
    )
    parser.add_argument("--grpo-learning-rate", type=bounded(float, 0, above=True), default=2e-5)
    parser.add_argument(
        "--out", default="benchmarks/results/generation", help="folder for JSON + Markdown"
    )


def _mined_dpo_config(args: argparse.Namespace, work: Path, device: str) -> Any:
    """The DPO config of the mined-pairs stage (its own checkpoint folder)."""
    from llama_index_ragtune.finetuning.decoder import default_dpo_config

    config = default_dpo_config(work / "dpo-mined", device)
    config.learning_rate = args.dpo_learning_rate
    config.num_train_epochs = args.epochs
    config.max_steps = args.max_steps
    config.max_length = args.max_length
    config.seed = args.seed
    return config


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "row"


def _wanted_rows(spec: str) -> list[str]:
    wanted = [r.strip() for r in spec.split(",") if r.strip()]
    unknown = sorted(set(wanted) - set(ROWS))
    if unknown:
        raise ValueError(f"--rows: unknown rows {unknown}; use {', '.join(ROWS)}.")
    return [r for r in ROWS if r in wanted]


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build data once, train what the rows need, score every row; return the result dict."""
    import torch

    from llama_index_ragtune.data.preference import PreferenceBuilder
    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.models import resolve_model

    wanted = _wanted_rows(args.rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base_model = resolve_model(args.base_model, kind="decoder")
    data = prepare_grounded_data(args, args.max_train_examples, out)
    task = data.task
    evaluator = GenerationEvaluator(answer_metric=task.answer_metric)
    sets = {task.name: data.test_contexts}
    if data.multihop_test_contexts:
        sets["multihop"] = data.multihop_test_contexts
    scorer, head = None, None
    train_answerability_head = args.answerability_minutes > 0 or args.answerability_steps > 0
    if args.refusal_threshold == TUNE and train_answerability_head:
        trained, head = train_answerability(args, data, out / "work" / "answerability", device)
        scorer = CachedScorer(trained)
    tables: dict[str, dict[str, Any]] = {name: {} for name in sets}
    policies_out: dict[str, dict[str, Any]] = {name: {} for name in sets}
    post_checks: dict[str, dict[str, Any]] = {name: {} for name in sets}
    calibration: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    gen = {"batch_size": args.generation_batch_size, "max_new_tokens": args.max_new_tokens}

    dev_sets = {name: dev_for_set(data, name) for name in sets}

    def score(name: str, llm: Any, train_seconds: float | None) -> None:
        for set_name, contexts in sets.items():
            # each set's policies are fitted on dev questions drawn like its test questions
            policies = fit_policies(
                llm,
                dev_sets[set_name],
                args.refusal_threshold,
                scorer,
                args.generation_batch_size,
                repeats=args.refusal_cv_repeats,
            )
            calibration.setdefault(set_name, {})[name] = {
                p: policy.to_dict() for p, policy in policies.items()
            }
            scores = score_set(set_name, llm, contexts, policies, evaluator, **gen)
            headline = scores.reports[scores.headline]
            thresholds = {p: policy.threshold for p, policy in policies.items()}
            tables[set_name][name] = summarize(
                headline,
                task.answer_metric,
                train_seconds,
                scores.tokens_per_second,
                thresholds.get(scores.headline),
                scores.headline,
            )
            policies_out[set_name][name] = {
                p: summarize(r, task.answer_metric, None, 0.0, thresholds.get(p), p)
                for p, r in scores.reports.items()
            }
            post_checks[set_name][name] = scores.post_check
            reports[f"{set_name}/{name}"] = headline.aggregate
            headline.to_json(out / f"answers-{set_name}-{_slug(name)}.json")
            print(f"{set_name} / {name}: {json.dumps(tables[set_name][name])}", flush=True)

    def release(llm: Any) -> None:
        del llm
        gc.collect()

    if "base" in wanted:
        llm = LocalChatLLM(base_model, device=device, **llm_options(args))
        score(ROWS["base"], llm, None)
        release(llm)

    n_pairs: dict[str, int] = {}
    skipped: dict[str, str] = {}
    if set(wanted) - {"base"}:
        sft_config, dpo_config, lora_config = make_configs(args, out / "work", device, base_model)
        n_pref = args.max_preference_examples or len(data.train_contexts)
        pref_contexts = data.train_contexts[:n_pref]
        rule_pairs = None
        if "dpo" in wanted:
            rule_pairs = PreferenceBuilder(seed=args.seed).build(pref_contexts)
            n_pairs["dpo"] = len(rule_pairs)
        # the benchmark measures the tuned model on the test split, so nothing is held out
        # for a promotion decision here (the dev questions fit the refusal policies)
        engine = DecoderFinetuneEngine(
            data.builder.to_dataset(data.train_contexts),
            model=base_model,
            output_dir=out / "work",
            preference_dataset=rule_pairs,
            args=sft_config,
            preference_args=dpo_config,
            lora_config=lora_config,
            val_fraction=0,
            force_promotion=True,
            device=device,
        )
        engine.train_sft()
        sft_seconds = engine.timings["sft_seconds"]
        sft_llm = None
        if "sft" in wanted or "mined" in wanted:
            sft_llm = LocalChatLLM(str(engine.sft_adapter_dir), device=device, **llm_options(args))
        if "sft" in wanted:
            score(ROWS["sft"], sft_llm, sft_seconds)
        if "dpo" in wanted:
            engine.train_preference()
            engine.save()
            seconds = sft_seconds + engine.timings["dpo_seconds"]
            llm = engine.get_finetuned_model(**llm_options(args))
            score(ROWS["dpo"], llm, seconds)
            release(llm)
        if "mined" in wanted:
            mined, mining_seconds = mined_preferences(
                sft_llm, pref_contexts, evaluator, args, args.seed
            )
            n_pairs["mined"] = len(mined)
            if len(mined) == 0:
                skipped["mined"] = (
                    f"no pair mined: the {args.mined_samples} sampled answers of every context "
                    "scored the same (raise --mined-samples or --mined-temperature)"
                )
                logger.warning("--rows mined: %s", skipped["mined"])
            else:
                engine.train_sft(resume_from_checkpoint=True)  # back to the SFT adapter
                engine.preference_dataset = mined
                engine.preference_args = _mined_dpo_config(args, out / "work", device)
                engine.train_preference()
                engine.save()
                seconds = sft_seconds + mining_seconds + engine.timings["dpo_seconds"]
                llm = engine.get_finetuned_model(**llm_options(args))
                score(ROWS["mined"], llm, seconds)
                release(llm)
        if sft_llm is not None:
            release(sft_llm)
        if "grpo" in wanted:
            folder, grpo_seconds = train_grpo(
                args,
                base_model,
                engine.sft_adapter_dir,
                pref_contexts,
                evaluator,
                out / "work",
                device,
            )
            llm = LocalChatLLM(str(folder), device=device, **llm_options(args))
            score(ROWS["grpo"], llm, sft_seconds + grpo_seconds)
            release(llm)

    main = task.name
    multihop = data.multihop_test_contexts
    result = {
        "task": main,
        "config": {k: display_value(v) for k, v in vars(args).items() if not callable(v)},
        "base_model": _model_name(args.base_model, base_model),
        "device": device,
        "n_train": len(data.train_contexts),
        "n_train_answer_targets": sum(c.answerable for c in data.train_contexts),
        "n_train_multi_source_targets": sum(
            c.answerable and len(c.gold_numbers) > 1 for c in data.train_contexts
        ),
        "n_preference_pairs": n_pairs.get("dpo", 0),
        "n_mined_pairs": n_pairs.get("mined", 0),
        "n_test": len(data.test_contexts),
        "n_test_answerable": sum(c.answerable for c in data.test_contexts),
        "n_multihop_test": len(multihop),
        "n_multihop_test_answerable": sum(c.answerable for c in multihop),
        "n_dev": len(data.dev_contexts),
        "n_dev_answerable": sum(c.answerable for c in data.dev_contexts),
        "dev_by_set": {
            name: {"questions": len(dev), "answerable": sum(c.answerable for c in dev)}
            for name, dev in dev_sets.items()
        },
        "answerability_head": head,
        "skipped_rows": skipped,
        "rows": tables[main],
        "multihop_rows": tables.get("multihop", {}),
        "policies": policies_out,
        "post_check": post_checks,
        "reports": reports,
        "refusal_calibration": calibration,
        "command": command_line(args),
    }
    result = display_value(result)  # a scorer's or a head's folder must not name this machine
    (out / f"generation-{main}.json").write_text(json.dumps(result, indent=2, default=str))
    result["table"] = _markdown(result, tables, policies_out, post_checks, args)
    (out / f"generation-{main}.md").write_text(result["table"] + "\n")
    return result


def _markdown(
    result: dict[str, Any],
    tables: dict[str, Any],
    policies: dict[str, Any],
    post_checks: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    head = result["answerability_head"]
    lines = [
        f"# Generation benchmark: {result['task']}",
        "",
        f"{result['n_train']} training contexts ({result['n_train_multi_source_targets']} with "
        f"several citations; {result['n_preference_pairs']} rule-made DPO pairs, "
        f"{result['n_mined_pairs']} mined pairs), {result['n_test']} test questions "
        f"({result['n_test_answerable']} answerable in their retrieved top-{args.top_k}), "
        f"{args.retriever} retrieval, device {result['device']}; {_threshold_note(args, result)}.",
    ]
    for row, reason in result["skipped_rows"].items():
        lines.append(f"Row {ROWS[row]!r} skipped: {reason}.")
    if head:
        lines.append(
            f"Answerability head: {head['pairs']} (question, source) pairs, validation AUC "
            f"{_fmt(head['validation_auc_before'])} -> {_fmt(head['validation_auc_after'])}, "
            f"{head['train_seconds']:.0f} s."
        )
    for set_name, rows in tables.items():
        if set_name == "multihop":
            lines += [
                "",
                f"## Multi-hop ({result['n_multihop_test']} contexts, "
                f"{result['n_multihop_test_answerable']} answerable: two halves + a distractor; "
                "the rest the same questions with the gold removed)",
            ]
        lines += ["", markdown_table(rows)]
        lines += ["", f"Refusal policies ({set_name}):", "", policy_table(policies[set_name])]
        lines += ["", f"Citation post-check ({set_name}, headline policy):", ""]
        lines.append(post_check_table(post_checks[set_name]))
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines)


def _model_name(given: str | None, resolved: str) -> str:
    """The decoder as recorded: the path or id given, or the bundled model's folder name."""
    return display_path(given) if given is not None else Path(resolved).name


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces a result: every option that differs from its default,
    paths relative to the working directory."""
    defaults = vars(_parser().parse_args(_data_argv(args)))
    parts = ["ragtune", "bench", "generation"]
    for name, value in vars(args).items():
        if name not in defaults or value == defaults[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is None:
            parts += [flag, "none"]
        else:
            parts += [flag, str(display_value(value))]
    return shlex.join(parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser


def _data_argv(args: argparse.Namespace) -> list[str]:
    """The required data flag, so that the defaults of every other option can be read."""
    for name in ("squad", "scifact", "qa"):
        if getattr(args, name, None) is not None:
            return [f"--{name}", "x"]
    return []


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def dev_for_set(data: Any, set_name: str) -> list[Any]:
    """The dev questions a set's refusal policies are fitted on: its own (``dev_contexts_for``)
    when they hold two questions of each class, else all of them."""
    own = data.dev_contexts_for(set_name)
    answerable = sum(c.answerable for c in own)
    return own if min(answerable, len(own) - answerable) >= 2 else list(data.dev_contexts)


def _threshold_note(args: argparse.Namespace, result: dict[str, Any]) -> str:
    if args.refusal_threshold == TUNE:
        per_set = ", ".join(
            f"{name} {d['questions']} ({d['answerable']} answerable)"
            for name, d in result["dev_by_set"].items()
        )
        return (
            f"refusal policies fitted per row and set on dev questions drawn like the set's "
            f"test questions: {per_set}; balanced accuracy of refusing / answering; headline: "
            "the best cross-validated balanced accuracy"
        )
    if args.refusal_threshold is None:
        return "greedy decoding, no refusal policy"
    return f"refusal threshold {args.refusal_threshold}"


def run(args: argparse.Namespace) -> int:
    result = run_benchmark(args)
    print()
    print(result["table"])
    print(f"\nWritten to {Path(args.out).resolve()}")
    return 0
