"""``ragtune tune``: your documents (+ labelled questions) -> a tuned, evaluated bundle.

Runs the tuning pipeline (:mod:`llama_index_ragtune.pipeline`): parse, hybrid index,
training data, encoder / fusion / reranker / decoder tuning (each part promoted
only when it beats the one it replaces on validation), evaluation on held-out
test questions, and a versioned bundle with its HTML report. Prints a cost
estimate before training and the before/after tables at the end.

Example::

    ragtune tune --docs help_centre/docs --queries help_centre/queries.jsonl --out runs/shop
    ragtune tune --docs docs/ --out runs/shop --time-budget 30 --skip decoder
    ragtune tune --docs docs/ --queries q.jsonl --out runs/shop --resume     # after a crash
    ragtune tune --docs zh_help/ --queries q.jsonl --out runs/zh --bm25-analyzer unicode
    ragtune tune --docs de_hilfe/ --queries q.jsonl --out runs/de --bm25-language german
    ragtune tune --docs shop/ --queries q.jsonl --out runs/shop --bm25-stopwords the,a,pcs
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

from llama_index_ragtune.commands.options import (
    MAX_MINUTES,
    CommaList,
    UsageError,
    bm25_language,
    bm25_language_value,
    bm25_stopwords,
    bm25_stopwords_value,
    bounded,
    check_device_option,
    existing_dir,
    existing_file,
    number_text_problem,
    seed_number,
)


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``ragtune tune`` and ``ragtune demo``."""
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="minutes of training in all, shared by encoder 30%%, reranker 30%%, decoder 40%%",
    )
    parser.add_argument(
        "--time-limit",
        type=_minutes_or_none,
        metavar="MIN",
        help="wall-clock minutes the whole run may take: the decoder trains for what is left "
        "once its evaluation is reserved ('none': no limit; the default of tune, while the "
        "demo's is 9.25)",
    )
    parser.add_argument(
        "--skip",
        action=CommaList,
        metavar="STEP,...",
        help="steps to leave out: encoder, fusion, reranker, decoder, evaluate, report",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT/work: finished steps are skipped, training resumes "
        "from the last checkpoint",
    )
    parser.add_argument(
        "--max-test-questions",
        type=bounded(int, 1),
        metavar="N",
        help="test questions answered by each decoder in the evaluation (default: all)",
    )
    parser.add_argument(
        "--max-over-refusal",
        type=_share_or_none,
        metavar="SHARE",
        help="most share of answerable dev questions the refusal policy may refuse, e.g. 0.1 "
        "('none': the best balanced accuracy, whatever it refuses; the default of tune, while "
        "the demo's is 0.1)",
    )
    parser.add_argument(
        "--over-refusal-confidence",
        type=_probability_or_none,
        metavar="P",
        help="make --max-over-refusal hold on new questions with probability P, e.g. 0.95, "
        "not only on the dev questions ('none': on the dev questions, the default of tune; "
        "the demo's is 0.95)",
    )
    parser.add_argument(
        "--dpo", action="store_true", help="add a DPO stage after the decoder's SFT"
    )
    parser.add_argument("--seed", type=seed_number, default=0, help="seed of splits and sampling")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def _number_or_none(text: str, accept: Any, expected: str) -> float | str:
    """``"none"``, or ``text`` as a number that ``accept`` takes (else an argparse error)."""
    if text.strip().lower() == "none":
        return "none"
    problem = number_text_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"expected {expected} or 'none', got {text!r}: {problem}")
    try:
        value = float(text) + 0.0  # + 0.0: -0.0 is 0.0
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected {expected} or 'none', got {text!r}")
    return value


def _minutes_or_none(text: str) -> float | str:
    return _number_or_none(
        text, lambda v: 0 < v <= MAX_MINUTES, f"minutes > 0 (at most {MAX_MINUTES})"
    )


def _share_or_none(text: str) -> float | str:
    return _number_or_none(text, lambda v: 0 <= v <= 1, "a share in [0, 1]")


def _probability_or_none(text: str) -> float | str:
    return _number_or_none(text, lambda v: 0 < v < 1, "a probability in (0, 1)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from llama_index_ragtune.retrievers.bm25_index import ANALYZERS

    parser.add_argument(
        "--docs",
        required=True,
        type=existing_dir,
        metavar="DIR",
        help="folder of Markdown / HTML / text documents (searched recursively)",
    )
    parser.add_argument(
        "--queries",
        type=existing_file,
        metavar="FILE",
        help="labelled questions (JSONL: question, gold doc_id/section or node_id, answer, "
        "answerable, split); without it: --feedback, else synthetic questions",
    )
    parser.add_argument(
        "--metadata",
        type=existing_file,
        metavar="FILE",
        help="metadata JSON {relative path or glob: {key: value}} (default: DIR/metadata.json "
        "or DIR/../metadata.json)",
    )
    parser.add_argument(
        "--feedback",
        type=existing_file,
        metavar="DB",
        help="a FeedbackStore SQLite file to take the questions from (instead of --queries)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (bundles/, work/)"
    )
    parser.add_argument("--encoder", metavar="MODEL", help="starting bi-encoder (default: bundled)")
    parser.add_argument(
        "--reranker-model",
        metavar="MODEL",
        help="starting cross-encoder (default: a new head on the encoder)",
    )
    parser.add_argument(
        "--decoder",
        metavar="MODEL",
        help="starting causal LM with a chat template (default: bundled)",
    )
    parser.add_argument(
        "--bm25-analyzer",
        choices=sorted(ANALYZERS),
        help="how the BM25 side of the index and the hard-negative miner read text: 'unicode' "
        "for documents in Chinese, Japanese, Thai or Korean (part of a sentence finds it), "
        "with accents or full-width text, or with product codes (SKU-48213 found by "
        "SKU48213); 'plain' (default) lower-cases and splits, for English",
    )
    parser.add_argument(
        "--bm25-language",
        type=bm25_language,
        metavar="LANGUAGE",
        help="stemmer of the BM25 side of the index and the hard-negative miner, the language "
        "of your documents: english (default), german, french, spanish, ... or 'none' (no "
        "stemming); its stopwords follow it (German ones for german)",
    )
    add_bm25_stopwords_option(parser)
    add_pipeline_options(parser)


STOPWORDS_HELP = (
    "words the BM25 side of the index (and so the served bundle) and the hard-negative miner "
    "drop: 'language' (default: the --bm25-language's list), 'none', a list code (en, de, fr, "
    "es, ...) or your words separated by commas ('the,a,an'; one word: 'sku,')"
)


def add_bm25_stopwords_option(parser: argparse.ArgumentParser, help: str = STOPWORDS_HELP) -> None:
    """``--bm25-stopwords LIST`` (checked by :func:`options.bm25_stopwords`; ``build_config``
    puts it into ``PipelineConfig.bm25_stopwords``): ``ragtune tune``, ``demo`` and ``refresh``.

    Example::

        add_bm25_stopwords_option(parser)   # ragtune demo --bm25-stopwords the,a,an
    """
    parser.add_argument("--bm25-stopwords", type=bm25_stopwords, metavar="LIST", help=help)


def build_config(args: argparse.Namespace, base: Any = None) -> Any:
    """A ``PipelineConfig`` from the command's options (over ``base`` when given)."""
    from dataclasses import replace

    from llama_index_ragtune.pipeline.config import PipelineConfig

    check_device_option(args.device)  # a device this machine lacks fails before any work
    config = base or PipelineConfig()
    changes: dict[str, Any] = {"seed": args.seed, "dpo": args.dpo or config.dpo}
    for option, field in (
        ("encoder", "encoder_model"),
        ("reranker_model", "reranker_model"),
        ("decoder", "decoder_model"),
        ("device", "device"),
        ("max_test_questions", "max_test_questions"),
        ("bm25_analyzer", "bm25_analyzer"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            changes[field] = value
    cap = getattr(args, "max_over_refusal", None)
    if cap is not None:
        changes["max_over_refusal"] = None if cap == "none" else cap
    confidence = getattr(args, "over_refusal_confidence", None)
    if confidence is not None:
        changes["over_refusal_confidence"] = None if confidence == "none" else confidence
    language = getattr(args, "bm25_language", None)
    if language is not None:
        changes["bm25_language"] = bm25_language_value(language)
    stopwords = getattr(args, "bm25_stopwords", None)
    if stopwords is not None:  # checked when the command line was read
        changes["bm25_stopwords"] = bm25_stopwords_value(stopwords)
    limit = getattr(args, "time_limit", None)
    if limit is not None:
        changes["time_limit_minutes"] = None if limit == "none" else limit
    try:
        config = replace(config, **changes)
    except (TypeError, ValueError) as exc:  # a bound of PipelineConfig: named as the option
        raise UsageError(_named_as_option(str(exc))) from None
    if args.time_budget is not None:
        try:
            config = config.with_time_budget(args.time_budget)
        except ValueError as exc:
            raise UsageError(f"argument --time-budget: {exc}") from None
    return config


# PipelineConfig fields the command line sets, and the option of each
FIELD_OPTIONS = {
    "seed": "--seed",
    "device": "--device",
    "encoder_model": "--encoder",
    "reranker_model": "--reranker-model",
    "decoder_model": "--decoder",
    "max_test_questions": "--max-test-questions",
    "bm25_analyzer": "--bm25-analyzer",
    "bm25_language": "--bm25-language",
    "bm25_stopwords": "--bm25-stopwords",
    "max_over_refusal": "--max-over-refusal",
    "over_refusal_confidence": "--over-refusal-confidence",
    "time_limit_minutes": "--time-limit",
    "encoder_budget": "--time-budget",
    "reranker_budget": "--time-budget",
    "decoder_budget": "--time-budget",
}


def _named_as_option(message: str) -> str:
    """``PipelineConfig.max_test_questions must be at most ...`` as ``argument
    --max-test-questions: must be at most ...`` (the option the user typed)."""
    found = re.search(r"PipelineConfig\.(\w+)(?:\.\w+)?:? ", message)
    option = FIELD_OPTIONS.get(found.group(1)) if found else None
    if found is None or option is None:
        return message
    return f"argument {option}: {message[: found.start()]}{message[found.end() :]}"


def check_arguments(args: argparse.Namespace) -> None:
    """Every option value checked before any document is read: ``UsageError`` (exit status 2)
    naming the option and the values it takes (a bound of ``PipelineConfig``, ``--skip``,
    ``--time-budget``, ``--device``, ``--out`` inside ``--docs``; these were exit status 1,
    as if the run had failed).

    Example::

        check_arguments(args)   # --max-test-questions 3000000000: UsageError naming it
    """
    from llama_index_ragtune.pipeline.runner import check_outside_documents

    if args.queries and args.feedback:
        raise UsageError("give --queries or --feedback, not both")
    try:  # the next run would read the bundles as documents (was exit status 1)
        check_outside_documents(args.docs, {"--out": args.out})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_pipeline_options(args)


def check_pipeline_options(args: argparse.Namespace, base: Any = None) -> None:
    """``UsageError`` naming the option when the options of :func:`add_pipeline_options` (and
    the BM25 ones) make no ``PipelineConfig`` over ``base``, or ``--skip`` names a step that
    cannot be skipped or a blank one (``--skip ""``, ``--skip "encoder,"``). ``ragtune tune``
    and ``ragtune demo`` run it before their work.

    Example::

        check_pipeline_options(args, PipelineConfig.demo())   # ragtune demo's check
    """
    from llama_index_ragtune.pipeline.config import SKIPPABLE, check_skip

    build_config(args, base)
    given = getattr(args, "skip", None)
    if given is not None and any(not part.strip() for part in str(given).split(",")):
        # `--skip "$STEPS"` unset, "," or a doubled comma: nothing was skipped, silently
        raise UsageError(
            f"argument --skip: {given!r} holds a blank step name; give step names separated "
            f"by commas, from {', '.join(SKIPPABLE)} (leave --skip out to run every step)"
        )
    try:
        check_skip(skip_of(args))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"argument --skip: {exc}") from None


def skip_of(args: argparse.Namespace) -> list[str]:
    """The steps ``--skip`` names."""
    return [s.strip() for s in (args.skip or "").split(",") if s.strip()]


def run_pipeline(pipeline: Any) -> Any:
    """Run ``pipeline``; its user errors become one-line CLI errors (``UsageError``)."""
    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.pipeline.bundle_folders import BundleError
    from llama_index_ragtune.pipeline.state import PipelineStateError

    try:
        return pipeline.run()
    except (BundleError, PipelineStateError) as exc:
        raise UsageError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.models import check_model_path
    from llama_index_ragtune.pipeline import TuningPipeline

    if args.decoder:
        try:
            check_model_path(args.decoder)
        except FileNotFoundError as exc:
            raise UsageError(f"argument --decoder: {exc}") from None
    try:
        config = build_config(args)
        pipeline = TuningPipeline(
            args.docs,
            args.out,
            queries=args.queries,
            metadata=args.metadata,
            feedback=args.feedback,
            config=config,
            skip=args.skip,
            resume=args.resume,
            echo=lambda line: print(line, flush=True),
        )
    except ValueError as exc:  # bad --skip, --time-budget or settings
        raise UsageError(str(exc)) from None
    result = run_pipeline(pipeline)
    print()
    print(result.summary())
    sys.stdout.flush()
    return 0
