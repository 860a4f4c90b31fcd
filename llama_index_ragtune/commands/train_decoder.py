"""``ragtune train decoder``: grounded SFT (+ DPO) of the decoder on SQuAD 2.0 or SciFact, with a before/after table.

Builds cite-or-refuse training data over contexts retrieved by BM25 (or the
hybrid retriever), trains a LoRA adapter with ``DecoderFinetuneEngine``,
writes ``<output>/adapter`` and ``<output>/merged`` and scores the base and
the tuned model on the test split over the same retrieved sources, each
with its refusal threshold chosen on held-out dev questions (written to
``<output>/refusal_threshold.json`` for the tuned model).

Example::

    ragtune train decoder --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --output runs/decoder --dpo --max-examples 300 --max-test-examples 100
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from llama_index_ragtune.bench.generation import (
    add_common_arguments,
    calibrate_refusal,
    evaluate_llm,
    llm_options,
    make_configs,
    markdown_table,
    prepare_grounded_data,
    summarize,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--output", required=True, help="folder for checkpoints, adapter/ and merged/"
    )
    parser.add_argument(
        "--dpo", action="store_true", help="run DPO on rule-made preference pairs after SFT"
    )
    parser.add_argument(
        "--max-examples", type=int, default=300, help="training questions (sampled)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="resume from the last checkpoints in --output"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from llama_index_ragtune.data.preference import PreferenceBuilder
    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.models import resolve_model

    output = Path(args.output)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base_model = resolve_model(args.base_model, kind="decoder")
    data = prepare_grounded_data(args, args.max_examples, output)
    task, builder, train_contexts = data.task, data.builder, data.train_contexts
    evaluate = bool(data.test_contexts)
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
    if not evaluate:
        return 0

    test_contexts = data.test_contexts
    evaluator = GenerationEvaluator(answer_metric=task.answer_metric)
    rows = {}
    for name, llm, seconds in (
        ("base", LocalChatLLM(base_model, device=device, **llm_options(args)), None),
        ("tuned", engine.get_finetuned_model(**llm_options(args)), sum(engine.timings.values())),
    ):
        choice = calibrate_refusal(llm, args, data.dev_contexts)
        if choice is not None and name == "tuned":
            (output / "refusal_threshold.json").write_text(json.dumps(asdict(choice), indent=2))
            print(
                f"Refusal threshold {choice.threshold:.4g} (chosen on {choice.n_examples} dev "
                f'questions): LocalChatLLM("{engine.merged_dir}", '
                f"refusal_threshold={choice.threshold:.4g})"
            )
        report, tps = evaluate_llm(
            llm, test_contexts, evaluator, name, args.batch_size, args.max_new_tokens
        )
        rows[name] = summarize(report, task.answer_metric, seconds, tps, llm.refusal_threshold)
    table = markdown_table(rows)
    (output / "evaluation.md").write_text(table + "\n")
    print()
    print(table)
    return 0
