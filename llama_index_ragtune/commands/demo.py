"""``ragtune demo``: the whole product on the shipped help centres, offline, in minutes.

Two fictional shops' help centres ship with the package (Brambleway Market
groceries and Voltaris Electronics: Markdown and HTML pages with store /
department / brand metadata, and labelled questions split train / test). The
demo runs the tuning pipeline on them with the bundled models (all-MiniLM-L6-v2,
SmolLM2-135M-Instruct) and the budgets of ``PipelineConfig.demo()``, within its
time limit (9.25 minutes for the run; the decoder trains for what is left):

1. answers the seed questions with the untuned stack ("apple return policy?" asked
   of the grocery, "Apple return policy?" of the electronics store, and both without
   a store filter);
2. tunes the encoder and the decoder (the fusion too with ``--with-fusion``, the
   reranker with ``--with-reranker``), each promoted only when it beats the part it
   replaces on validation;
3. evaluates before / after on the held-out test questions (retrieval and generation
   tables, including how often answers cite the right store);
4. loads the bundle it wrote (``load_bundle``) and answers the same questions again;
5. prints where the bundle and the HTML report are, and the wall time.

Example::

    ragtune demo                       # writes ./ragtune-demo
    ragtune demo --out /tmp/demo --resume
    ragtune demo --bm25-stopwords none    # the BM25 side keeps every word
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

SEED_QUESTIONS = (
    ("apple return policy?", "grocery"),
    ("Apple return policy?", "electronics"),
    ("apple return policy?", None),
    ("Apple return policy?", None),
)
DEFAULT_OUT = "ragtune-demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from llama_index_ragtune.commands.tune import add_bm25_stopwords_option, add_pipeline_options

    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--with-reranker",
        action="store_true",
        help="tune the reranker too (left out by default: a new cross-encoder head needs about "
        "10 minutes of CPU training to help, more than the demo's budget)",
    )
    parser.add_argument(
        "--with-fusion",
        action="store_true",
        help="choose the fusion too (left out by default: on the demo's questions the chosen "
        "fusion has not beaten the library's preset, and its 10 to 30 s go to the decoder)",
    )
    add_bm25_stopwords_option(
        parser,
        help="words the BM25 side of the index (and so the bundle) drops: 'language' (default: "
        "the English list), 'none', a list code (en, de, fr, ...) or your words separated by "
        "commas ('the,a,an'; one word: 'sku,')",
    )
    add_pipeline_options(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """The options checked before the demo starts: ``UsageError`` (exit status 2) naming the
    option (:func:`llama_index_ragtune.commands.tune.check_pipeline_options`).

    Example::

        check_arguments(args)   # --max-test-questions 3000000000: UsageError naming it
    """
    from llama_index_ragtune.commands.tune import check_pipeline_options
    from llama_index_ragtune.pipeline.config import PipelineConfig

    check_pipeline_options(args, PipelineConfig.demo())


def _say(text: str = "") -> None:
    print(text, flush=True)


def _shorten(text: str, width: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + " ..."


def show_answers(title: str, engines: Any, questions: Sequence[tuple[str, str | None]]) -> None:
    """Ask each (question, store) of ``engines(store)`` and print the answer and its citations."""
    _say(title)
    for question, store in questions:
        start = time.perf_counter()
        response = engines(store).query(question)
        seconds = time.perf_counter() - start
        scope = f"asked of the {store} store" if store else "no store filter"
        _say(f'  Q: "{question}" ({scope})')
        # an answer that said nothing (markers alone) is served as the refusal: show what it was
        said_nothing = bool(response.metadata.get("empty_answer"))
        shown = "" if said_nothing else str(response.response or "").strip()
        _say(f"  A: {_shorten(shown or _nothing_said(response.metadata))}  [{seconds:.1f} s]")
        nodes = {n.node.node_id: n.node for n in response.source_nodes}
        citations = [] if said_nothing else response.metadata.get("citations", [])
        refused = response.metadata.get("refused") and not said_nothing
        if refused:
            _say("     refused: the sources do not hold the answer")
        for citation in citations:
            node = nodes.get(citation["node_id"])
            meta = node.metadata if node is not None else {}
            _say(
                f"     [{citation['number']}] {meta.get('store', '?')}: {citation['node_id']} "
                f"({meta.get('section_path', '')})"
            )
        if not citations and not refused:
            _say("     (no citation)")
    _say()


def _nothing_said(metadata: dict[str, Any]) -> str:
    """What to show for an answer with no text left (e.g. citation markers alone)."""
    raw = " ".join(str(metadata.get("raw_answer") or "").split())
    return f"(no answer: the decoder wrote {raw!r})" if raw else "(no answer)"


def _rates(evaluation: Any) -> str:
    rows = []
    for system in evaluation.generation:
        rate = system.metrics.get("right_store_citation_rate")
        source = system.metrics.get("right_source_citation_rate")
        if rate is not None:
            rows.append(
                f"  {system.name} ({system.stage}): right store {rate:.2f}, right source "
                f"{'-' if source is None else f'{source:.2f}'}"
            )
    return "\n".join(rows)


def _skip(args: argparse.Namespace) -> list[str]:
    """``--skip`` plus the fusion unless ``--with-fusion`` and the reranker unless
    ``--with-reranker``."""
    from llama_index_ragtune.commands.tune import skip_of

    skip = skip_of(args)
    for part, wanted in (("fusion", args.with_fusion), ("reranker", args.with_reranker)):
        if not wanted and part not in skip:
            skip.append(part)
    return skip


def run(args: argparse.Namespace) -> int:
    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.commands.tune import build_config, run_pipeline
    from llama_index_ragtune.demo import demo_dir, load_demo_queries
    from llama_index_ragtune.pipeline import PipelineConfig, TuningPipeline, load_bundle

    start = time.perf_counter()
    root = demo_dir()
    try:
        config = build_config(args, PipelineConfig.demo())
        pipeline = TuningPipeline(
            root / "docs",
            args.out,
            queries=root / "queries.jsonl",
            metadata=root / "metadata.json",
            config=config,
            skip=_skip(args),
            resume=args.resume,
            echo=_say,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    questions = load_demo_queries()
    _say(
        "ragtune demo: tune a RAG system on two shops' help centres (Brambleway Market "
        f"groceries, Voltaris Electronics): {len(pipeline.context.documents)} pages, "
        f"{len(questions)} labelled questions; bundled models, offline.\n"
    )
    pipeline.run(until="index")
    ctx = pipeline.context
    base = ctx.llm(ctx.base_decoder)
    _say()
    show_answers(
        "Before tuning (untuned hybrid retriever, starting decoder):",
        lambda store: ctx.query_engine(base, {"store": store} if store else None, served=False),
        SEED_QUESTIONS,
    )
    result = run_pipeline(pipeline)
    _say()
    _say(result.summary())
    _say()
    if result.bundle_path is not None:
        bundle = load_bundle(args.out)
        show_answers(
            f"After tuning (bundle {bundle.version}, loaded with load_bundle):",
            lambda store: bundle.as_query_engine(filters={"store": store} if store else None),
            SEED_QUESTIONS,
        )
    if result.evaluation is not None and result.evaluation.generation:
        n = result.evaluation.queries.get("generation_test")
        _say(f"Citations of the right store's pages on the {n} generation test questions:")
        _say(_rates(result.evaluation))
        _say()
    if result.report is not None:
        _say(f"Report: {result.report}")
    if result.bundle_path is not None:
        _say(f"Bundle: {result.bundle_path}")
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    _say(f"Wall time: {int(minutes)} min {seconds:.0f} s")
    return 0
