"""``ragtune bench generation``: base decoder vs grounded SFT vs SFT + DPO on the same retrieved contexts.

One retriever is built once over all paragraphs (SQuAD 2.0) or abstracts
(SciFact); every question is retrieved once and its document ids are cached
(``retrieved.json``), so every row answers over identical sources. Training
contexts put the gold passage among retrieved distractors (``GroundedSFTBuilder``,
some with the gold removed -> refusal); test contexts are the retriever's own
top-k, so a test question expects the refusal when retrieval missed its
evidence. Each row is scored by ``GenerationEvaluator`` with greedy, batched
generation and calibrated refusal: by default every row's refusal threshold is
chosen on dev questions (``choose_refusal_threshold``), then applied to the test.

Splits: SQuAD 2.0 by article (all but the last 4 articles train, the last 4
test); SciFact claims by its qrels (``train`` / ``test``). Dev questions are
training-split questions left out of the training sample, over the
retriever's own top-k like the test ones.

Example::

    ragtune bench generation --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --max-train-examples 300 --max-test-examples 200 --out benchmarks/results/generation
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune.data.grounded import GroundedContext, GroundedSFTBuilder
from llama_index_ragtune.data.qa import QAExample

logger = logging.getLogger(__name__)

TUNE = "tune"  # --refusal-threshold: choose it on dev questions

COLUMNS = (
    ("citation_precision", "citation precision"),
    ("citation_recall", "citation recall"),
    ("answer", "answer F1 / label acc."),
    ("refusal_f1", "refusal F1"),
    ("over_refusal_rate", "over-refusal"),
    ("refusal_auc", "refusal AUC"),
    ("refusal_threshold", "refusal threshold"),
    ("train_seconds", "training wall time (s)"),
    ("tokens_per_second", "generation tokens/s"),
)


@dataclass
class GenerationTask:
    """Train/dev/test questions and the documents a retriever indexes for them."""

    name: str
    train: list[QAExample]
    test: list[QAExample]
    documents: list[Any]
    answer_metric: str
    dev: list[QAExample] = field(default_factory=list)


def _sample(
    examples: list[QAExample], n: int | None, seed: int, answerable_share: float | None = None
) -> list[QAExample]:
    """``n`` examples drawn with ``seed``; ``answerable_share`` fixes the answerable fraction."""
    rng = random.Random(seed)
    if answerable_share is None:
        return list(examples) if n is None or n >= len(examples) else rng.sample(examples, n)
    answerable = [e for e in examples if e.answerable]
    unanswerable = [e for e in examples if not e.answerable]
    n = len(examples) if n is None else n
    n_answerable = min(len(answerable), round(n * answerable_share))
    n_unanswerable = min(len(unanswerable), n - n_answerable)
    picked = rng.sample(answerable, n_answerable) + rng.sample(unanswerable, n_unanswerable)
    rng.shuffle(picked)
    return picked


def load_task(
    squad: str | Path | None = None,
    scifact: str | Path | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    train_answerable_share: float | None = None,
    max_dev: int = 0,
) -> GenerationTask:
    """SQuAD 2.0 (article split) or SciFact claims (qrels split), sampled with ``seed``.

    ``train_answerable_share`` fixes the answerable fraction of the training
    sample (the dev and test samples keep the data's own mix). ``max_dev`` dev
    questions come from the training split, outside the training sample.
    """
    from llama_index_ragtune.data.qa import load_scifact_claims, load_squad_v2

    if (squad is None) == (scifact is None):
        raise ValueError("Pass exactly one of --squad PATH or --scifact DIR.")
    if squad is not None:
        train, _ = load_squad_v2(squad, split="train")
        test, _ = load_squad_v2(squad, split="test")
        _, documents = load_squad_v2(squad)
        name, metric = "squad_v2", "squad"
    else:
        train, documents = load_scifact_claims(scifact, split="train")
        test, _ = load_scifact_claims(scifact, split="test")
        name, metric = "scifact", "scifact"
    train_sample = _sample(train, max_train, seed, train_answerable_share)
    taken = {e.qid for e in train_sample}
    rest = [e for e in train if e.qid not in taken]
    dev = _sample(rest, max_dev, seed + 2) if max_dev > 0 else []
    if max_dev > 0 and len(dev) < max_dev:
        logger.warning("Only %d dev questions left outside the training sample.", len(dev))
    return GenerationTask(
        name, train_sample, _sample(test, max_test, seed + 1), documents, metric, dev
    )


def build_retriever(documents: Sequence[Any], kind: str = "bm25", top_k: int = 10) -> Any:
    """A retriever over ``documents``: ``bm25`` (this package's BM25) or ``hybrid`` (dense + BM25)."""
    if kind == "bm25":
        try:
            from llama_index_ragtune.retrievers.bm25 import BM25Retriever
        except ImportError:  # pragma: no cover - fallback to the LlamaIndex integration
            from llama_index.retrievers.bm25 import BM25Retriever
        return BM25Retriever.from_defaults(nodes=list(documents), similarity_top_k=top_k)
    if kind == "hybrid":
        from llama_index_ragtune.retrievers import HybridRetriever

        return HybridRetriever.from_defaults(nodes=list(documents), similarity_top_k=top_k)
    raise ValueError(f"Unknown retriever {kind!r}; use 'bm25' or 'hybrid'.")


def retrieve_all(
    builder: GroundedSFTBuilder,
    examples: Sequence[QAExample],
    cache: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, list[str]]:
    """Document ids retrieved for every question, read from / written to the JSON ``cache``."""
    from tqdm.auto import tqdm

    path = Path(cache) if cache is not None else None
    retrieved: dict[str, list[str]] = (
        json.loads(path.read_text()) if path is not None and path.exists() else {}
    )
    missing = [e for e in examples if e.qid not in retrieved]
    for example in tqdm(missing, desc="Retrieving", disable=not show_progress):
        retrieved[example.qid] = builder.retrieve_ids(example.question)
    if path is not None and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(retrieved))
    return retrieved


@dataclass
class GroundedData:
    """What ``bench generation`` and ``train decoder`` build before training: the task,
    the context builder and the train / test contexts over the same retrieved sources."""

    task: GenerationTask
    builder: GroundedSFTBuilder
    train_contexts: list[GroundedContext]
    test_contexts: list[GroundedContext]
    dev_contexts: list[GroundedContext] = field(default_factory=list)


def prepare_grounded_data(
    args: argparse.Namespace, max_train_examples: int | None, cache_dir: str | Path
) -> GroundedData:
    """Load the task named by the command's flags, retrieve every question once (cached
    in ``cache_dir/retrieved-<task>-<retriever>.json``) and build the contexts.

    Training contexts always hold the gold passage (``force_gold``; ``--p-no-gold``
    turns some into refusals); dev and test contexts are the retriever's own top-k.
    Dev questions are drawn only when ``--refusal-threshold tune`` needs them.
    """
    task = load_task(
        args.squad,
        args.scifact,
        max_train_examples,
        args.max_test_examples,
        args.seed,
        args.train_answerable_share,
        max_dev=args.dev_examples if args.refusal_threshold == TUNE else 0,
    )
    retriever = build_retriever(task.documents, args.retriever, top_k=max(10, 3 * args.top_k))
    builder = GroundedSFTBuilder(
        retriever,
        task.documents,
        top_k=args.top_k,
        p_no_gold=args.p_no_gold,
        max_context_chars=args.max_context_chars,
        seed=args.seed,
    )
    retrieved = retrieve_all(
        builder,
        task.train + task.dev + task.test,
        cache=Path(cache_dir) / f"retrieved-{task.name}-{args.retriever}.json",
    )
    return GroundedData(
        task,
        builder,
        builder.build_contexts(task.train, retrieved, force_gold=True),
        builder.build_contexts(task.test, retrieved, force_gold=False),
        builder.build_contexts(task.dev, retrieved, force_gold=False),
    )


def evaluate_llm(
    llm: Any,
    contexts: Sequence[GroundedContext],
    evaluator: Any,
    name: str,
    batch_size: int = 8,
    max_new_tokens: int = 48,
    show_progress: bool = True,
) -> tuple[Any, float]:
    """Greedy batched answers on ``contexts`` scored by ``evaluator``: (GenerationReport, tokens/s)."""
    conversations = [c.messages() for c in contexts]
    start = time.perf_counter()
    responses = llm.generate_batch(
        conversations,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        show_progress=show_progress,
    )
    seconds = time.perf_counter() - start
    tokens = sum(int((r.raw or {}).get("usage", {}).get("completion_tokens", 0)) for r in responses)
    answers = [r.message.content or "" for r in responses]
    report = evaluator.evaluate(
        [c.evaluation_kwargs(a) for c, a in zip(contexts, answers, strict=True)],
        show_progress=False,
        name=name,
    )
    for row, response in zip(report.rows, responses, strict=True):
        probability = (response.raw or {}).get("refusal_probability")
        if probability is not None:
            row["refusal_probability"] = probability
    return report, tokens / seconds if seconds > 0 else 0.0


def calibrate_refusal(
    llm: Any, args: argparse.Namespace, dev_contexts: Sequence[GroundedContext]
) -> Any:
    """Apply ``--refusal-threshold`` to ``llm``: a fixed value as is, ``tune`` = the threshold
    ``choose_refusal_threshold`` picks on ``dev_contexts``. Returns the ThresholdChoice (or None)."""
    if args.refusal_threshold != TUNE:
        return None
    from llama_index_ragtune.evaluation.refusal_calibration import choose_refusal_threshold

    probabilities = llm.conversation_refusal_probabilities(
        [c.messages() for c in dev_contexts], batch_size=args.batch_size
    )
    try:
        choice = choose_refusal_threshold(probabilities, [c.answerable for c in dev_contexts])
    except ValueError as err:
        raise ValueError(
            f"--refusal-threshold tune: {err} Raise --dev-examples or pass a fixed threshold."
        ) from err
    llm.refusal_threshold = choice.threshold
    logger.info(
        "Refusal threshold %.4g chosen on %d dev questions.", choice.threshold, len(dev_contexts)
    )
    return choice


def summarize(
    report: Any,
    answer_metric: str,
    train_seconds: float | None,
    tokens_per_second: float,
    refusal_threshold: float | None = None,
) -> dict:
    """The benchmark columns of one row."""
    agg = report.aggregate
    return {
        "citation_precision": agg.get("citation_precision"),
        "citation_recall": agg.get("citation_recall"),
        "answer": agg.get("label_accuracy" if answer_metric == "scifact" else "f1"),
        "refusal_f1": agg.get("refusal_f1"),
        "over_refusal_rate": agg.get("over_refusal_rate"),
        "refusal_auc": agg.get("refusal_auc"),
        "refusal_threshold": refusal_threshold,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens_per_second,
    }


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """Rows x ``COLUMNS`` as a Markdown table."""
    lines = [
        "| model | " + " | ".join(label for _, label in COLUMNS) + " |",
        "| --- |" + " --- |" * len(COLUMNS),
    ]
    for name, row in rows.items():
        cells = []
        for key, _ in COLUMNS:
            value = row.get(key)
            cells.append(
                "—"
                if value is None
                else (
                    f"{value:.0f}"
                    if key == "train_seconds"
                    else f"{value:.3g}"
                    if key == "refusal_threshold"
                    else f"{value:.1f}"
                    if key == "tokens_per_second"
                    else f"{value:.3f}"
                )
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------- command
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``bench generation`` and ``train decoder``."""
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--squad", help="SQuAD 2.0 JSON (split by article: last 4 articles = test)")
    data.add_argument("--scifact", help="BEIR SciFact folder (claims; train/test from its qrels)")
    parser.add_argument(
        "--base-model",
        default=None,
        help="decoder folder or hub id (default: bundled SmolLM2-135M)",
    )
    parser.add_argument("--retriever", choices=("bm25", "hybrid"), default="bm25")
    parser.add_argument("--top-k", type=int, default=3, help="sources per prompt")
    parser.add_argument(
        "--max-context-chars",
        type=int,
        default=800,
        help="cut each source to N characters (same rule in training and test)",
    )
    parser.add_argument(
        "--p-no-gold",
        type=float,
        default=0.1,
        help="share of training answers turned into refusals",
    )
    parser.add_argument("--max-test-examples", type=int, default=200)
    parser.add_argument(
        "--train-answerable-share",
        type=float,
        default=0.6,
        help="answerable fraction of the sampled training questions (before --p-no-gold)",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="SFT and DPO epochs")
    parser.add_argument(
        "--max-steps", type=int, default=-1, help="cap optimizer steps per stage (smoke tests)"
    )
    parser.add_argument(
        "--max-length", type=int, default=1024, help="token limit of a training sequence"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=3e-4, help="SFT learning rate (LoRA)"
    )
    parser.add_argument(
        "--dpo-learning-rate", type=float, default=1e-4, help="DPO learning rate (LoRA)"
    )
    parser.add_argument(
        "--lora-top-layers",
        type=int,
        default=None,
        help="LoRA on the top N transformer layers only (faster backward on CPU; default: all)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8, help="generation batch size")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="generation weights dtype (auto: bfloat16 on GPUs and on CPUs with native bfloat16)",
    )
    parser.add_argument(
        "--refusal-threshold",
        type=_threshold,
        default=TUNE,
        help="refuse exactly when the model gives the refusal sentence this probability "
        "(LocalChatLLM(refusal_threshold=...)); 'tune' (default) picks it per model on "
        "--dev-examples held-out questions; 'none' decodes greedily",
    )
    parser.add_argument(
        "--dev-examples",
        type=int,
        default=100,
        help="training-split questions held out to tune the refusal threshold on",
    )
    parser.add_argument("--seed", type=int, default=0)


def _threshold(value: str) -> float | str | None:
    if value.strip().lower() == "none":
        return None
    if value.strip().lower() == TUNE:
        return TUNE
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a probability in [0, 1], 'tune' or 'none', got {value}"
        )
    return number


def llm_options(args: argparse.Namespace) -> dict[str, Any]:
    """``LocalChatLLM`` keyword arguments from the command's flags (same for every row);
    ``tune`` starts at 0.5 until ``calibrate_refusal`` sets the tuned threshold."""
    threshold = 0.5 if args.refusal_threshold == TUNE else args.refusal_threshold
    return {"dtype": args.dtype, "refusal_threshold": threshold}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--max-train-examples", type=int, default=300)
    parser.add_argument(
        "--max-preference-examples",
        type=int,
        default=None,
        help="contexts used for DPO pairs (default: all training contexts)",
    )
    parser.add_argument(
        "--rows",
        default="base,sft,dpo",
        help="comma-separated rows to run: base (untuned), sft (+ grounded SFT), dpo (+ SFT + DPO)",
    )
    parser.add_argument(
        "--out", default="benchmarks/results/generation", help="folder for JSON + Markdown"
    )


def make_configs(
    args: argparse.Namespace, work: Path, device: str, base_model: str
) -> tuple[Any, Any, Any]:
    """SFT, DPO and LoRA configs: the engine defaults with the command's flags applied."""
    from llama_index_ragtune.finetuning.decoder import (
        default_dpo_config,
        default_lora_config,
        default_sft_config,
    )

    sft = default_sft_config(work / "sft", device)
    dpo = default_dpo_config(work / "dpo", device)
    sft.learning_rate, dpo.learning_rate = args.learning_rate, args.dpo_learning_rate
    for config in (sft, dpo):
        config.num_train_epochs = args.epochs
        config.max_steps = args.max_steps
        config.max_length = args.max_length
        config.seed = args.seed
    lora = default_lora_config()
    if args.lora_top_layers:
        from peft import LoraConfig
        from transformers import AutoConfig

        n_layers = AutoConfig.from_pretrained(base_model).num_hidden_layers
        lora = LoraConfig(
            r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            task_type="CAUSAL_LM",
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            layers_to_transform=list(range(max(0, n_layers - args.lora_top_layers), n_layers)),
        )
    return sft, dpo, lora


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build data once, evaluate base / SFT / SFT + DPO, return the result dict."""
    import torch

    from llama_index_ragtune.data.preference import PreferenceBuilder
    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.models import resolve_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base_model = resolve_model(args.base_model, kind="decoder")
    data = prepare_grounded_data(args, args.max_train_examples, out)
    task, builder = data.task, data.builder
    train_contexts, test_contexts = data.train_contexts, data.test_contexts
    evaluator = GenerationEvaluator(answer_metric=task.answer_metric)
    gen = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
    rows: dict[str, dict[str, Any]] = {}
    reports: dict[str, Any] = {}
    calibration: dict[str, dict[str, Any]] = {}

    def score(name: str, llm: Any, train_seconds: float | None) -> None:
        choice = calibrate_refusal(llm, args, data.dev_contexts)
        if choice is not None:
            calibration[name] = asdict(choice)
        report, tps = evaluate_llm(llm, test_contexts, evaluator, name, **gen)
        reports[name] = report
        rows[name] = summarize(
            report, task.answer_metric, train_seconds, tps, llm.refusal_threshold
        )
        report.to_json(out / f"answers-{task.name}-{_slug(name)}.json")
        print(f"{name}: {json.dumps(rows[name])}", flush=True)

    wanted = {r.strip() for r in args.rows.split(",") if r.strip()}
    unknown = wanted - {"base", "sft", "dpo"}
    if unknown:
        raise ValueError(f"--rows: unknown rows {sorted(unknown)}; use base, sft and/or dpo.")
    if "base" in wanted:
        score("base", LocalChatLLM(base_model, device=device, **llm_options(args)), None)

    preference = None
    if wanted & {"sft", "dpo"}:
        sft_config, dpo_config, lora_config = make_configs(args, out / "work", device, base_model)
        if "dpo" in wanted:
            pref_contexts = train_contexts[: args.max_preference_examples or len(train_contexts)]
            preference = PreferenceBuilder(seed=args.seed).build(pref_contexts)
        # the benchmark measures the tuned model on the test split, so nothing is held out
        # for a promotion decision here (the dev questions choose the refusal threshold)
        engine = DecoderFinetuneEngine(
            builder.to_dataset(train_contexts),
            model=base_model,
            output_dir=out / "work",
            preference_dataset=preference,
            args=sft_config,
            preference_args=dpo_config,
            lora_config=lora_config,
            val_fraction=0,
            force_promotion=True,
            device=device,
        )
        engine.train_sft()
        sft_seconds = engine.timings["sft_seconds"]
        if "sft" in wanted:
            adapter = LocalChatLLM(str(engine.sft_adapter_dir), device=device, **llm_options(args))
            score("+ grounded SFT", adapter, sft_seconds)
        if preference is not None:
            engine.train_preference()
            engine.save()
            seconds = sft_seconds + engine.timings["dpo_seconds"]
            score("+ SFT + DPO", engine.get_finetuned_model(**llm_options(args)), seconds)

    result = {
        "task": task.name,
        "config": {k: v for k, v in vars(args).items() if not callable(v)},
        "base_model": base_model,
        "device": device,
        "n_train": len(train_contexts),
        "n_train_answer_targets": sum(c.answerable for c in train_contexts),
        "n_preference_pairs": 0 if preference is None else len(preference),
        "n_test": len(test_contexts),
        "n_test_answerable": sum(c.answerable for c in test_contexts),
        "n_dev": len(data.dev_contexts),
        "n_dev_answerable": sum(c.answerable for c in data.dev_contexts),
        "rows": rows,
        "reports": {name: r.aggregate for name, r in reports.items()},
        "refusal_calibration": calibration,
    }
    (out / f"generation-{task.name}.json").write_text(json.dumps(result, indent=2, default=str))
    table = markdown_table(rows)
    (out / f"generation-{task.name}.md").write_text(
        f"# Generation benchmark: {task.name}\n\n{len(train_contexts)} training contexts "
        f"({result['n_preference_pairs']} DPO pairs), {len(test_contexts)} test questions "
        f"({result['n_test_answerable']} answerable in their retrieved top-{args.top_k}), "
        f"{args.retriever} retrieval, device {device}; {_threshold_note(args, result)}.\n\n{table}\n"
    )
    result["table"] = table
    return result


def _threshold_note(args: argparse.Namespace, result: dict[str, Any]) -> str:
    if args.refusal_threshold == TUNE:
        return (
            f"refusal threshold chosen per row on {result['n_dev']} dev questions "
            f"({result['n_dev_answerable']} answerable; macro F1 of refusing / answering)"
        )
    if args.refusal_threshold is None:
        return "greedy decoding, no refusal threshold"
    return f"refusal threshold {args.refusal_threshold}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "row"


def run(args: argparse.Namespace) -> int:
    result = run_benchmark(args)
    print()
    print(result["table"])
    print(f"\nWritten to {Path(args.out).resolve()}")
    return 0
