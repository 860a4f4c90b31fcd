"""``ragtune train decoder``: grounded SFT (+ DPO) of the decoder and a refusal decided by both halves.

Builds cite-or-refuse training data over contexts retrieved by BM25 (or the
hybrid retriever) -- for SQuAD 2.0 with two-hop questions whose answers cite
both needed sources (``data.multihop``) --, trains a LoRA adapter with
``DecoderFinetuneEngine``, writes ``<output>/adapter`` and ``<output>/merged``,
trains the encoder-side answerability head (``<output>/answerability/final``),
and fits the refusal policies on held-out dev questions:

- ``<output>/refusal_threshold.json``: the decoder-only threshold
  (``LocalChatLLM(merged, refusal_threshold=t)``);
- ``<output>/refusal_policy.json``: the decoder's and the encoder's signals
  combined (``LocalChatLLM(merged, refusal_policy=load_refusal_policy(path))``).

The base and the tuned model are then scored on the test split (and, for
SQuAD, the multi-hop test set) over the same retrieved sources.

Your own data: ``--qa FILE``, grounded QA as JSONL (``data.qa_jsonl``; the format is
at the end of ``ragtune train decoder --help``): each question is shown its own
sources, and the lines with ``"split": "test"`` are scored after training.

Example::

    ragtune train decoder --qa my_qa.jsonl --out runs/decoder --refusal-threshold 0.5
    ragtune train decoder --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --out runs/decoder --dpo --max-train-examples 300 --max-test-examples 100
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from llama_index_ragtune.commands.decoder_arguments import (
    add_common_arguments,
    check_squad_only,
    llm_options,
)
from llama_index_ragtune.commands.options import (
    DeprecatedNames,
    UsageError,
    bounded,
    check_device_option,
    check_out_apart,
)
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.grounded_tasks import TUNE, GroundedData, prepare_grounded_data
from llama_index_ragtune.evaluation.decoder_scoring import (
    CachedScorer,
    fit_policies,
    markdown_table,
    score_set,
    summarize,
)
from llama_index_ragtune.finetuning.decoder_recipes import make_configs, train_answerability

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``ragtune train decoder`` (the ``--qa`` file format as the help's epilog).

    Example::

        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(["--qa", "my_qa.jsonl", "--out", "runs/decoder"])
    """
    from llama_index_ragtune.data.qa_jsonl import FORMAT

    parser.epilog = FORMAT
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_common_arguments(parser)
    parser.add_argument(
        "--out",
        "--output",
        dest="out",
        action=DeprecatedNames,
        deprecated=("--output",),
        required=True,
        metavar="DIR",
        help="folder for checkpoints, adapter/ and merged/ (--output: deprecated name)",
    )
    parser.add_argument(
        "--dpo", action="store_true", help="run DPO on rule-made preference pairs after SFT"
    )
    parser.add_argument(
        "--max-train-examples",
        "--max-examples",
        dest="max_train_examples",
        action=DeprecatedNames,
        deprecated=("--max-examples",),
        type=bounded(int, 0),
        default=300,
        help="training questions (sampled; --max-examples: deprecated name)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="resume from the last checkpoints in --out"
    )


def check_arguments(args: argparse.Namespace) -> str:
    """``--multihop-*`` only with ``--squad``, ``--out`` apart from the model folders
    (``check_out_apart``), ``--device`` and ``--dtype`` checked before the data is
    prepared: a typo, or a device this machine lacks, is a ``UsageError`` (exit status 2),
    not a failure after training when the models answer the test questions. Returns the
    device the run uses.

    Example::

        check_arguments(args)   # --device gpu: UsageError naming --device
    """
    import torch

    from llama_index_ragtune.llms.loading import torch_dtype

    check_squad_only(args)
    check_out_apart(
        args.out,
        {
            "--base-model": (args.base_model, ("merged", "challenger")),
            "--answerability-model": (args.answerability_model, ("answerability",)),
        },
    )
    device = check_device_option(args.device) or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch_dtype(args.dtype, device)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"argument --dtype: {exc}") from None
    return device


def run(args: argparse.Namespace) -> int:

    from llama_index_ragtune.data.preference import PreferenceBuilder
    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.models import resolve_model

    output = Path(args.out)
    device = check_arguments(args)
    base_model = resolve_model(args.base_model, kind="decoder")
    fresh = not output.exists()
    data = prepare_grounded_data(args, args.max_train_examples, output)
    try:
        check_data(args, data)
    except (DataError, UsageError):
        if fresh:  # leave no output folder behind: only the retrieval cache was written
            for cache in output.glob("retrieved-*.json"):
                cache.unlink()
        raise
    head = _head_wanted(args, data)
    task, builder, train_contexts = data.task, data.builder, data.train_contexts
    preference = PreferenceBuilder(seed=args.seed).build(train_contexts) if args.dpo else None
    sft_config, dpo_config, lora_config = make_configs(args, output, device, base_model)
    engine = DecoderFinetuneEngine(
        builder.to_dataset(train_contexts),
        model=base_model,
        output_dir=output,
        preference_dataset=preference,
        args=sft_config,
        preference_args=dpo_config,
        lora_config=lora_config,
        device=device,
    )
    result = engine.finetune(resume_from_checkpoint=True if args.resume else None)
    print("validation (held-out training questions):")
    print(result.format_table())
    if result.promoted:
        print(f"Adapter: {engine.adapter_dir}\nMerged model: {engine.merged_dir}")
    else:
        print(f"Kept the base model; the tuned adapter is in {engine.challenger_path / 'adapter'}")
    print(f"Timings: {json.dumps(engine.timings)}")
    scorer = None
    if head:
        trained, head = train_answerability(args, data, output / "answerability", device)
        print(f"Answerability head: {json.dumps(head)}")
        scorer = CachedScorer(trained)
    if not data.test_contexts:
        return 0

    evaluator = GenerationEvaluator(answer_metric=task.answer_metric)
    sets = {task.name: data.test_contexts}
    if data.multihop_test_contexts:
        sets["multihop"] = data.multihop_test_contexts
    rows: dict[str, dict] = {name: {} for name in sets}
    gen = {"batch_size": args.generation_batch_size, "max_new_tokens": args.max_new_tokens}
    for name, llm, seconds in (
        ("base", LocalChatLLM(base_model, device=device, **llm_options(args)), None),
        ("tuned", engine.get_finetuned_model(**llm_options(args)), sum(engine.timings.values())),
    ):
        policies = fit_policies(
            llm,
            data.dev_contexts,
            args.refusal_threshold,
            scorer,
            args.generation_batch_size,
            repeats=args.refusal_cv_repeats,
        )
        if name == "tuned":
            _write_policies(output, engine, policies)
        for set_name, contexts in sets.items():
            scores = score_set(set_name, llm, contexts, policies, evaluator, **gen)
            policy = policies.get(scores.headline)
            rows[set_name][name] = summarize(
                scores.reports[scores.headline],
                task.answer_metric,
                seconds,
                scores.tokens_per_second,
                None if policy is None else policy.threshold,
                scores.headline,
            )
    tables = [markdown_table(rows[task.name])]
    if "multihop" in rows:
        tables += ["Multi-hop (two needed sources + a distractor; gold-removed twins):"]
        tables += [markdown_table(rows["multihop"])]
    text = "\n\n".join(tables)
    (output / "evaluation.md").write_text(text + "\n")
    print()
    print(text)
    return 0


def check_data(args: argparse.Namespace, data: GroundedData) -> None:
    """Stop before training when the questions cannot train (or tune) what the run asks for.

    Needs training questions, some of them answerable (refusals alone teach no answer),
    and, when ``--refusal-threshold tune`` fits the refusal before scoring, at least two
    answerable and two unanswerable held-out dev questions. Raises ``DataError`` naming
    the data file (``UsageError`` for a flag); warns when no test question is left to score.

    Example::

        check_data(args, prepare_grounded_data(args, args.max_train_examples, "runs/decoder"))
    """
    qa = getattr(args, "qa", None)
    source = qa or args.squad or args.scifact
    if not data.task.train_pool:
        what = 'every line has "split": "test"' if qa else "the data has no training split"
        hint = 'mark some lines "split": "train" (or leave split out)' if qa else None
        raise DataError(f"no training questions ({what})", path=source, hint=hint)
    train = data.train_contexts
    if not train:
        raise UsageError(
            f"--max-train-examples {args.max_train_examples} leaves no training question; "
            "pass a number >= 1"
        )
    if not any(c.answerable for c in train) and getattr(args, "p_no_gold", 0) >= 1:
        raise UsageError(
            f"--p-no-gold {args.p_no_gold:g} turns every training answer into a refusal; pass "
            "a share below 1 (default 0.1)"
        )
    if not any(c.answerable for c in train):
        raise DataError(
            f"none of the {len(train)} training questions has an answer: a decoder cannot "
            "learn to answer and cite from refusals alone",
            path=source,
            hint='give some "train" lines an "answer" and the "gold" ids of the sources '
            "that hold it"
            if qa
            else "raise --train-answerable-share",
        )
    if not data.test_contexts:
        if args.max_test_examples > 0:
            logger.warning(
                "%s: no test questions%s: nothing is scored after training%s.",
                source,
                ' (no line has "split": "test")' if qa else "",
                " and no refusal policy is fitted" if args.refusal_threshold == TUNE else "",
            )
        return
    if args.refusal_threshold == TUNE:
        dev = data.dev_contexts
        answerable = sum(c.answerable for c in dev)
        if min(answerable, len(dev) - answerable) < 2:
            raise DataError(
                "--refusal-threshold tune fits the refusal on held-out dev questions and "
                f"needs at least 2 answerable and 2 unanswerable ones; got {answerable} "
                f"answerable and {len(dev) - answerable} unanswerable (the training-split "
                f"questions not among the {len(data.task.train)} trained on)",
                path=source,
                hint="add answerable and unanswerable training-split questions, train on "
                "fewer (--max-train-examples) so more are held out (--dev-examples), or pass "
                "a fixed --refusal-threshold (e.g. 0.5) or none",
            )


def _head_wanted(args: argparse.Namespace, data: GroundedData) -> bool:
    """Whether to train the answerability head: asked for, and the training questions hold
    an unanswerable one (gold-removed twins alone are drawn at random and may be none)."""
    if args.refusal_threshold != TUNE or not (
        args.answerability_minutes > 0 or args.answerability_steps > 0
    ):
        return False
    if all(c.answerable for c in data.train_contexts):
        logger.warning(
            "%s: every training question is answerable: the answerability head is not "
            'trained (add unanswerable questions, "answer": "", to train it); the refusal '
            "is fitted on the decoder's signal alone.",
            getattr(args, "qa", None) or args.squad or args.scifact,
        )
        return False
    return True


def _write_policies(output: Path, engine, policies: dict) -> None:
    """``refusal_threshold.json`` (the decoder's) and ``refusal_policy.json`` (the policy with
    the best cross-validated balanced accuracy on the dev questions)."""
    decision = engine.decision
    served = (
        engine.base_model if decision is not None and not decision.promoted else engine.merged_dir
    )
    decoder = policies.get("decoder")
    if decoder is not None and decoder.calibration is not None:
        (output / "refusal_threshold.json").write_text(
            json.dumps(decoder.calibration, indent=2) + "\n"
        )
        print(
            f"Refusal threshold {decoder.threshold:.4g} (chosen on "
            f"{decoder.calibration['n_examples']} dev questions): "
            f'LocalChatLLM("{served}", refusal_threshold={decoder.threshold:.4g})'
        )
    if policies:
        name, chosen = next(iter(policies.items()))  # the cross-validated winner comes first
        path = chosen.save(output / "refusal_policy.json")
        calibration = chosen.calibration or {}
        score, objective = (
            calibration.get("cross_validated"),
            calibration.get("selection_objective"),
        )
        what = str(objective or "score").replace("_", " ")
        how = "" if score is None else f", cross-validated dev {what} {score:.3f}"
        splits = calibration.get("cv_repeats")
        if score is not None and splits:
            how += f" over {splits} split{'s' if splits > 1 else ''}"
        print(
            f"Refusal policy {name} (threshold {chosen.threshold:.4g}{how}): "
            f'LocalChatLLM("{served}", refusal_policy=load_refusal_policy("{path}"))'
        )
