"""Decoder training steps beyond grounded SFT, used by ``ragtune train decoder`` and the benchmark.

- ``make_configs``: the SFT / DPO / LoRA configs with the command's flags applied;
- ``train_answerability``: the encoder side's answerability head
  (``AnswerabilityFinetuneEngine``) on the training contexts plus a
  gold-removed twin of half the answerable ones;
- ``mined_preferences``: DPO pairs mined from the SFT model's own sampled
  answers (``PreferenceBuilder.from_model_failures``);
- ``train_grpo``: TRL's ``GRPOTrainer`` from the SFT adapter, rewarded by our
  evaluator (``evaluation.rewards.GroundedReward``), merged for serving.

``args`` is the parsed command line of ``ragtune train decoder`` (or any object
with the same attributes: ``learning_rate``, ``epochs``, ``max_steps``...).

Example::

    sft, dpo, lora = make_configs(args, Path("runs/decoder"), "cpu", base_model)
    scorer, summary = train_answerability(args, data, Path("runs/decoder/answerability"), "cpu")
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def make_configs(
    args: argparse.Namespace, work: Path, device: str, base_model: str
) -> tuple[Any, Any, Any]:
    """SFT, DPO and LoRA configs: the engine defaults with the command's flags applied.

    Example::

        sft, dpo, lora = make_configs(args, Path("runs/decoder"), "cpu", base_model)
        sft.learning_rate == args.learning_rate          # True
    """
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


def train_answerability(
    args: argparse.Namespace, data: Any, output_dir: Path, device: str
) -> tuple[Any, dict[str, Any]]:
    """Train the answerability head on the training contexts, ``--answerability-examples``
    further training-split questions (never dev or test ones), and gold-removed twins of
    half the answerable ones.

    Returns ``(AnswerabilityScorer, summary)``. The head is served whatever validation
    says (``force_promotion``: the benchmark measures it on the test split); the
    summary records the validation AUC before and after.

    Example::

        scorer, summary = train_answerability(args, data, Path("runs/answerability"), "cpu")
        scorer(["Who founded Warsaw?"], [["Warsaw was founded by ..."]])   # [P(no answer)]
    """
    from llama_index_ragtune.data.answerability import answerability_pairs, with_gold_removed
    from llama_index_ragtune.finetuning.answerability import AnswerabilityFinetuneEngine
    from llama_index_ragtune.finetuning.budget import TrainingBudget

    contexts = list(data.train_contexts)
    extra = _extra_questions(data, args.answerability_examples, args.seed)
    if extra:  # more labelled questions for the head, never the dev or test ones
        contexts += data.builder.build_contexts(extra, force_gold=True, show_progress=False)
    # a twin needs a non-gold source: a question whose own sources (a QA file) are all gold
    # gets its distractors from the retriever
    retrieved = {
        qid: ids
        for qid, ids in data.retrieved.items()
        if not data.task.sources or qid not in data.task.sources or len(ids) > _n_gold(data, qid)
    }
    contexts = with_gold_removed(data.builder, contexts, retrieved, share=0.5, seed=args.seed)
    pairs = answerability_pairs(contexts)
    engine_args = AnswerabilityFinetuneEngine.default_args(
        output_dir, seed=args.seed, use_cpu=device == "cpu"
    )
    if args.answerability_steps > 0:
        engine_args.max_steps = args.answerability_steps
    budget = (
        None if args.answerability_steps > 0 else TrainingBudget(minutes=args.answerability_minutes)
    )
    engine = AnswerabilityFinetuneEngine(
        pairs,
        model=args.answerability_model,
        args=engine_args,
        budget=budget,
        max_length=args.answerability_max_length,
        force_promotion=True,
        device=device,
        show_progress=False,
    )
    start = time.perf_counter()
    result = engine.finetune()
    summary = {
        "pairs": len(pairs),
        "positives": int(sum(pairs["label"])),
        "questions": len(set(pairs["qid"])),
        "validation_auc_before": result.before.get("auc"),
        "validation_auc_after": result.after.get("auc"),
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "steps": result.global_step,
        "model": str(engine.final_model_path),
    }
    logger.info("Answerability head: %s", summary)
    return engine.get_finetuned_model(), summary


def _n_gold(data: Any, qid: str) -> int:
    example = next((e for e in data.task.train_pool if e.qid == qid), None)
    return len(example.gold_doc_ids) if example is not None else 0


def _extra_questions(data: Any, n: int, seed: int) -> list[Any]:
    """``n`` training-split questions outside the training and dev samples (seeded)."""
    import random

    if n <= 0:
        return []
    taken = {e.qid for e in data.task.train + data.task.dev}
    pool = [e for e in data.task.train_pool if e.qid not in taken]
    return random.Random(seed + 3).sample(pool, min(n, len(pool)))


def mined_preferences(
    llm: Any, contexts: Sequence[Any], evaluator: Any, args: argparse.Namespace, seed: int
) -> tuple[Any, float]:
    """DPO pairs from ``llm``'s own sampled answers, best against worst: (dataset, seconds).

    Example::

        pairs, seconds = mined_preferences(sft_llm, contexts, GenerationEvaluator(), args, seed=0)
    """
    from llama_index_ragtune.data.preference import PreferenceBuilder

    start = time.perf_counter()
    pairs = PreferenceBuilder(seed=seed).from_model_failures(
        llm,
        contexts,
        evaluator=evaluator,
        num_samples=args.mined_samples,
        temperature=args.mined_temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.generation_batch_size,
        show_progress=False,
    )
    return pairs, time.perf_counter() - start


def train_grpo(
    args: argparse.Namespace,
    base_model: str,
    sft_adapter: Path,
    contexts: Sequence[Any],
    evaluator: Any,
    output_dir: Path,
    device: str,
) -> tuple[Path, float]:
    """GRPO from the SFT adapter with our evaluator's reward; returns (merged folder, seconds).

    Example::

        folder, seconds = train_grpo(args, base_model, Path("runs/work/sft/adapter"), contexts,
                                     GenerationEvaluator(), Path("runs/work"), "cuda")
        LocalChatLLM(str(folder))
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from llama_index_ragtune.evaluation.rewards import GroundedReward, reward_dataset
    from llama_index_ragtune.models import load_model

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(sft_adapter))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = load_model(AutoModelForCausalLM.from_pretrained, base_model)
    model = load_model(PeftModel.from_pretrained, base, str(sft_adapter), is_trainable=True)
    config = GRPOConfig(
        output_dir=str(output_dir / "grpo"),
        num_generations=args.grpo_generations,
        per_device_train_batch_size=args.grpo_generations,
        max_completion_length=args.max_new_tokens,
        learning_rate=args.grpo_learning_rate,
        max_steps=args.grpo_steps,
        temperature=args.mined_temperature,
        beta=0.0,
        logging_steps=max(1, args.grpo_steps // 10),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        use_cpu=device == "cpu",
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[GroundedReward(evaluator)],
        args=config,
        train_dataset=reward_dataset(contexts),
        processing_class=tokenizer,
    )
    trainer.train()
    merged = trainer.model.merge_and_unload()
    folder = output_dir / "grpo-merged"
    merged.save_pretrained(str(folder))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(folder))
    return folder, time.perf_counter() - start
