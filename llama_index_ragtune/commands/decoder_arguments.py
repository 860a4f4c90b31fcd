"""Arguments shared by ``ragtune train decoder`` and the decoder benchmark (``ragtune bench generation``).

The data (``--squad`` / ``--scifact`` / ``--qa``), the retrieval that builds the contexts,
the training settings (``--epochs``, ``--learning-rate``...), generation and the
refusal policy (``--refusal-threshold``, ``--dev-examples``, the answerability
head). ``llm_options`` maps them onto ``LocalChatLLM`` keyword arguments.

Example::

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args(["--squad", "dev-v2.0.json"])
    llm = LocalChatLLM(model, **llm_options(args))
"""

from __future__ import annotations

import argparse
from typing import Any

from llama_index_ragtune.commands.options import MAX_MINUTES, DeprecatedNames, bounded, seed_number
from llama_index_ragtune.data.grounded_tasks import TUNE

__all__ = ["add_common_arguments", "check_squad_only", "llm_options"]

MULTIHOP_DEFAULTS = {
    "multihop_train_examples": 48,
    "multihop_dev_examples": 25,
    "multihop_test_examples": 50,
}
"""The two-hop question counts (SQuAD 2.0 only) when the options are left out."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags shared by ``ragtune bench generation`` and ``ragtune train decoder``.

    Example::

        parser = argparse.ArgumentParser()
        add_common_arguments(parser)
        args = parser.parse_args(["--squad", "dev-v2.0.json", "--top-k", "3"])
    """
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--squad", help="SQuAD 2.0 JSON (split by article: last 4 articles = test)")
    data.add_argument("--scifact", help="BEIR SciFact folder (claims; train/test from its qrels)")
    data.add_argument(
        "--qa",
        metavar="FILE",
        help="your own grounded QA data, JSONL: one {question, sources: [{id, text}], gold: "
        '[source ids], answer ("" = unanswerable), split} a line (see `ragtune train decoder '
        "--help`)",
    )
    parser.add_argument(
        "--base-model",
        default=None,
        help="decoder folder or hub id (default: bundled SmolLM2-135M)",
    )
    parser.add_argument("--retriever", choices=("bm25", "hybrid"), default="bm25")
    parser.add_argument("--top-k", type=bounded(int, 1), default=3, help="sources per prompt")
    parser.add_argument(
        "--max-context-chars",
        type=bounded(int, 1),
        default=800,
        help="cut each source to N characters (same rule in training and test)",
    )
    parser.add_argument(
        "--p-no-gold",
        type=bounded(float, 0, 1),
        default=0.1,
        help="share of training answers turned into refusals",
    )
    parser.add_argument("--max-test-examples", type=bounded(int, 0), default=200)
    parser.add_argument(
        "--train-answerable-share",
        type=bounded(float, 0, 1),
        default=None,
        help="answerable fraction of the sampled training questions (before --p-no-gold; "
        "default: 0.6 for --squad / --scifact, the file's own mix for --qa)",
    )
    parser.add_argument(
        "--epochs", type=bounded(float, 0, above=True), default=1.0, help="SFT and DPO epochs"
    )
    parser.add_argument(
        "--max-steps",
        type=bounded(int, -1),
        default=-1,
        help="cap optimizer steps per stage (smoke tests)",
    )
    parser.add_argument(
        "--max-length",
        type=bounded(int, 1),
        default=1024,
        help="token limit of a training sequence",
    )
    parser.add_argument(
        "--learning-rate",
        "--lr",
        type=bounded(float, 0, above=True),
        default=3e-4,
        help="SFT learning rate (LoRA)",
    )
    parser.add_argument(
        "--dpo-learning-rate",
        type=bounded(float, 0, above=True),
        default=1e-4,
        help="DPO learning rate (LoRA)",
    )
    parser.add_argument(
        "--lora-top-layers",
        type=bounded(int, 1),
        default=None,
        help="LoRA on the top N transformer layers only (faster backward on CPU; default: all)",
    )
    parser.add_argument("--max-new-tokens", type=bounded(int, 1), default=48)
    parser.add_argument(
        "--generation-batch-size",
        "--batch-size",
        dest="generation_batch_size",
        action=DeprecatedNames,
        deprecated=("--batch-size",),
        type=bounded(int, 1),
        default=8,
        help="prompts answered at once when generating (--batch-size: deprecated name)",
    )
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
        "--refusal-cv-repeats",
        type=bounded(int, 1),
        default=10,
        metavar="N",
        help="with --refusal-threshold tune: differently seeded cross-validation splits of the "
        "dev questions averaged when choosing the refusal policy (repeated stratified k-fold; "
        "one split of a few dozen questions decides by luck)",
    )
    parser.add_argument(
        "--dev-examples",
        type=bounded(int, 0),
        default=100,
        help="training-split questions held out to tune the refusal threshold on",
    )
    parser.add_argument(
        "--multihop-train-examples",
        type=bounded(int, 0),
        default=MULTIHOP_DEFAULTS["multihop_train_examples"],
        help="SQuAD: two-hop questions (each + its gold-removed twin) added to the training data",
    )
    parser.add_argument(
        "--multihop-dev-examples",
        type=bounded(int, 0),
        default=MULTIHOP_DEFAULTS["multihop_dev_examples"],
        help="SQuAD: two-hop questions (+ twins) added to the dev questions the refusal is fitted on",
    )
    parser.add_argument(
        "--multihop-test-examples",
        type=bounded(int, 0),
        default=MULTIHOP_DEFAULTS["multihop_test_examples"],
        help="SQuAD: two-hop test questions (+ twins) from the test articles, scored as a second set",
    )
    parser.add_argument(
        "--answerability-minutes",
        type=bounded(float, 0, MAX_MINUTES),
        default=8.0,
        help="training budget of the encoder-side answerability head (0: decoder signal only)",
    )
    parser.add_argument(
        "--answerability-steps",
        type=bounded(int, -1),
        default=-1,
        help="fixed answerability training steps instead of the minutes budget",
    )
    parser.add_argument(
        "--answerability-examples",
        type=bounded(int, 0),
        default=1000,
        help="further training-split questions (outside the training and dev samples) the "
        "answerability head learns from, on top of the training contexts",
    )
    parser.add_argument(
        "--answerability-model",
        default=None,
        help="starting encoder of the answerability head (default: bundled MiniLM, new head)",
    )
    parser.add_argument(
        "--answerability-max-length",
        type=bounded(int, 1),
        default=320,
        help="token limit of a (question, source) pair for the answerability head",
    )
    parser.add_argument("--seed", type=seed_number, default=0)


def check_squad_only(args: argparse.Namespace) -> None:
    """``UsageError`` for a ``--multihop-*-examples`` count other than its default (and not 0)
    with ``--qa`` or ``--scifact``: two-hop questions are made from SQuAD 2.0 paragraphs
    only, so the run trained and scored none while the command line asked for them.

    Example::

        check_squad_only(args)   # --qa my.jsonl --multihop-train-examples 100: UsageError
    """
    from llama_index_ragtune.commands.options import UsageError

    data = (
        "--qa"
        if getattr(args, "qa", None)
        else "--scifact"
        if getattr(args, "scifact", None)
        else None
    )
    asked = [
        f"--{dest.replace('_', '-')} {getattr(args, dest)}"
        for dest, default in MULTIHOP_DEFAULTS.items()
        if getattr(args, dest, default) not in (default, 0)
    ]
    if data and asked:
        raise UsageError(
            f"argument {asked[0].split()[0]}: two-hop questions are made from SQuAD 2.0 "
            f"(--squad) only, none from {data} data; drop {', '.join(asked)}"
        )


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
    """``LocalChatLLM`` keyword arguments shared by every model a command scores (refusals
    are decided by the fitted policies, so the LLM itself decodes plainly).

    Example::

        LocalChatLLM(base_model, device="cpu", **llm_options(args))
    """
    return {"dtype": args.dtype}
