"""The pipeline's steps up to the tuned parts: parse, index, data, encoder, fusion, reranker, decoder.

Each step function takes the ``RunContext``, writes its output into the work
folder and returns what the state file records about it (``PipelineRunner``
times it and writes the state). The fusion step lives in
:mod:`~llama_index_ragtune.pipeline.fusion_step`, the evaluation step in
:mod:`~llama_index_ragtune.pipeline.evaluate`, the bundle in
:mod:`~llama_index_ragtune.pipeline.bundle`. Tuning steps promote their part only
on the engine's champion / challenger decision and record it either way.

Example::

    from llama_index_ragtune.pipeline.steps import STEP_FUNCTIONS

    outputs = STEP_FUNCTIONS["parse"](ctx)      # {'documents': 35, 'nodes': 212, ...}
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.models import load_model
from llama_index_ragtune.pipeline.context import RunContext
from llama_index_ragtune.pipeline.fusion_step import fusion

if TYPE_CHECKING:
    from llama_index_ragtune.finetuning.promotion import PromotionDecision

logger = logging.getLogger(__name__)


def _margin(ctx: RunContext) -> dict[str, Any]:
    margin = ctx.config.promotion_margin
    return {} if margin is None else {"promotion_margin": margin}


def _forced(ctx: RunContext, part: str) -> bool:
    return part in ctx.config.force_promotion


def _decision(decision: PromotionDecision | None) -> dict[str, Any] | None:
    return None if decision is None else decision.to_dict()


# ---------------------------------------------------------------------- parse / index / data


def parse(ctx: RunContext) -> dict[str, Any]:
    """Documents -> nodes (``nodes.json``); a queries file is checked against them here,
    before the index step embeds the corpus."""
    from llama_index_ragtune.node_parser.documents import DocumentParseError
    from llama_index_ragtune.pipeline.sources import parse_documents, save_nodes

    try:
        nodes = parse_documents(
            ctx.documents,
            tokenizer=ctx.config.encoder_model,
            show_progress=ctx.config.show_progress,
        )
    except DocumentParseError as exc:
        raise _parse_error(ctx, exc) from exc
    if ctx.queries_source is not None:
        _file_queries(ctx, nodes)  # bad input fails now, not after the index is built
    save_nodes(nodes, ctx.path("nodes.json"))
    return {"documents": len(ctx.documents), "nodes": len(nodes)}


def _parse_error(ctx: RunContext, exc: Any) -> Exception:
    """A ``DocumentParseError`` as a ``DataError`` naming the file at fault (the metadata file
    when the document's metadata is what does not fit)."""
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.pipeline.sources import find_metadata_file

    source = ctx.documents_source
    if not isinstance(source, (str, Path)):
        return exc  # Documents given in code: the parser's error names the document
    root = Path(source).expanduser()
    if exc.cause == "metadata":  # the document's metadata leaves no room for its text
        meta = Path(ctx.metadata).expanduser() if ctx.metadata else find_metadata_file(root)
        if meta is not None:
            return DataError(
                f"the metadata of {exc.document_id!r} is too large to embed with its text: {exc}",
                path=meta,
                hint="shorten its values or remove keys",
            )
    return DataError(str(exc), path=root / exc.document_id)


def _skipped_documents(ctx: RunContext, nodes: list[Any]) -> set[str]:
    """Ids of the documents (and files of the docs folder) that gave no node."""
    from llama_index_ragtune.pipeline.sources import document_files

    ids = {d.id_ for d in ctx.documents}
    if isinstance(ctx.documents_source, (str, Path)):
        ids.update(document_files(ctx.documents_source))
    return ids - {n.ref_doc_id for n in nodes}


def _file_queries(ctx: RunContext, nodes: list[Any]) -> tuple[list[Any], list[Any]]:
    """``(train, test)`` of the queries file, checked against ``nodes`` (``DataError`` if bad)."""
    from llama_index_ragtune.pipeline.queries import load_queries, split_with_test

    path = ctx.queries_source
    _check_queries_unchanged(ctx)
    queries = load_queries(path, nodes, skipped=_skipped_documents(ctx, nodes))
    train, test = split_with_test(queries, ctx.config.test_fraction, ctx.config.seed, path=path)
    check_split(ctx, train, test, path)
    return train, test


def _check_queries_unchanged(ctx: RunContext) -> None:
    """``DataError`` when the queries file is no longer what the run read when it started
    (edited while the index was built): the questions checked at ``parse`` and trained on
    at ``data`` would differ, and the state would record inputs the run did not use."""
    import hashlib

    from llama_index_ragtune.data.errors import DataError

    if ctx.queries_sha256 is None:
        return
    path = Path(ctx.queries_source).expanduser()
    try:
        now = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        now = f"unreadable ({exc.strerror or exc})"
    if now != ctx.queries_sha256:
        raise DataError(
            "the queries file changed (or went) while the run was going; the questions it "
            "started with and the ones read now would be mixed",
            path=path,
            hint="let a run finish before editing its queries file (or edit a copy), then run "
            "again; finished steps are kept with --resume only when the file is as it was",
        )


def check_split(ctx: RunContext, train: list[Any], test: list[Any], path: Any = None) -> None:
    """``DataError`` (naming ``path``, the questions' file) when a step that will run has no
    question to learn from or measure on, found before anything is embedded or trained
    (e.g. every question unanswerable, or every answerable one in the test split)."""
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.pipeline.queries import carve_dev

    def with_gold(questions: list[Any]) -> int:
        return sum(1 for q in questions if q.has_gold)

    rest, _ = carve_dev(train, ctx.config.dev_fraction, ctx.config.seed)
    tuned = [p for p in ("encoder", "reranker") if p not in ctx.skip]
    if (tuned and not with_gold(rest)) or ("fusion" not in ctx.skip and not with_gold(train)):
        needs = [*tuned, *(["fusion"] if "fusion" not in ctx.skip else [])]
        raise DataError(
            f"no answerable training question with gold (of {len(train)} training questions, "
            f"{len(train) - len(rest)} kept for dev): {', '.join(needs)} learn from them",
            path=path,
            hint='add answerable questions with gold to the training split (no "split", or '
            f'"train"), or skip {",".join(needs)}',
        )
    if "decoder" not in ctx.skip and not rest:
        raise DataError(
            f"no training question left for the decoder ({len(train)} training questions, all "
            "kept for dev)",
            path=path,
            hint="add training questions, lower dev_fraction, or skip decoder",
        )
    if "evaluate" not in ctx.skip and not with_gold(test):
        raise DataError(
            f"no answerable test question with gold (of {len(test)} test questions): the "
            "evaluation measures retrieval on them",
            path=path,
            hint='mark some answerable questions "split": "test", or skip evaluate',
        )


def index(ctx: RunContext) -> dict[str, Any]:
    """The untuned hybrid retriever over the starting encoder (``index/baseline``)."""
    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever.from_defaults(
        nodes=ctx.nodes,
        embed_model=ctx.embed_model(ctx.base_encoder),
        similarity_top_k=ctx.config.similarity_top_k,
        show_progress=ctx.config.show_progress,
        bm25_kwargs=ctx.config.bm25_kwargs(),
    )
    retriever.persist(ctx.path("index", "baseline"))
    return {"baseline": str(ctx.path("index", "baseline")), "fusion": retriever.params()}


def data(ctx: RunContext) -> dict[str, Any]:
    """Questions (file, feedback or synthetic), their train/test split, and training pairs."""
    from llama_index_ragtune.pipeline.queries import carve_dev, save_queries, split_with_test
    from llama_index_ragtune.pipeline.training_data import describe_dataset

    config = ctx.config
    info: dict[str, Any] = {}
    source: Any = None
    if ctx.queries_source is not None:
        train, test = _file_queries(ctx, ctx.nodes)
        queries = [*train, *test]
        info["queries_source"] = "file"
    elif ctx.feedback is not None:
        from llama_index_ragtune.pipeline.query_sources import feedback_queries

        queries = feedback_queries(ctx.feedback, ctx.nodes, config.test_fraction, config.seed)
        info["queries_source"] = "feedback"
        where = getattr(ctx.feedback, "path", ctx.feedback)
        source = where if isinstance(where, (str, Path)) else None
    else:
        from llama_index_ragtune.pipeline.query_sources import synthetic_queries

        queries, stats = synthetic_queries(
            ctx.nodes,
            llm=ctx.synthetic_llm,
            questions_per_node=config.synthetic_questions_per_node,
            max_nodes=config.max_synthetic_nodes,
            seed=config.seed,
            show_progress=config.show_progress,
        )
        info.update(queries_source="synthetic", synthetic=stats)
    if info["queries_source"] != "file":
        train, test = split_with_test(queries, config.test_fraction, config.seed, path=source)
        check_split(ctx, train, test, source)
    _, dev = carve_dev(train, config.dev_fraction, config.seed)
    save_queries([*train, *test], ctx.path("data", "queries.json"))
    ctx.__dict__.pop("queries", None)
    info.update(train=len(train), test=len(test), dev_ids=[q.id for q in dev])
    wants_pairs = any(p not in ctx.skip for p in ("encoder", "reranker"))
    if wants_pairs:
        # the dev questions choose the refusal policy, whose encoder-side signal must not
        # have seen them: they are held out of the encoder and reranker pairs too
        held_out = {q.id for q in dev}
        pairs = write_training_pairs(ctx, [q for q in train if q.id not in held_out])
        info["pairs"] = describe_dataset(pairs)
    return info


def write_training_pairs(ctx: RunContext, train: list[Any]) -> Any:
    """Training pairs of ``train`` with the config's hard negatives, saved as ``data/retrieval.json``.

    Example::

        dataset = write_training_pairs(ctx, [q for q in ctx.queries if q.split == "train"])
    """
    from llama_index_ragtune.pipeline.training_data import mine_negatives, retrieval_dataset

    config = ctx.config
    dataset = mine_negatives(
        retrieval_dataset(train, ctx.nodes),
        ctx.nodes,
        encoder=ctx.base_encoder,
        per_source=config.negatives_per_source,
        curated_keys=config.curated_keys,
        seed=config.seed,
        show_progress=config.show_progress,
        **config.bm25_options(),
    )
    dataset.save_json(ctx.path("data", "retrieval.json"))
    ctx.__dict__.pop("retrieval_dataset", None)  # the cached property reads the new file
    return dataset


# ---------------------------------------------------------------------- encoder side


def encoder(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the bi-encoder on the training pairs; serve it only when promoted."""
    from llama_index_ragtune.finetuning import EncoderFinetuneEngine

    config = ctx.config
    folder = ctx.path("encoder")
    engine = EncoderFinetuneEngine(
        ctx.retrieval_dataset,
        model=ctx.base_encoder,
        args=EncoderFinetuneEngine.default_args(folder, **config.encoder_args),
        budget=config.encoder_budget,
        eval_points=config.eval_points,
        **config.bm25_options(),
        max_val_queries=config.max_val_queries,
        force_promotion=_forced(ctx, "encoder"),
        device=config.device,
        show_progress=config.show_progress,
        **_margin(ctx),
    )
    result = engine.finetune(resume_from_checkpoint=True if ctx.resume else None)
    result.save_json(folder / "result.json")
    promoted = bool(result.promoted)
    return {
        "promoted": promoted,
        "served": str(engine.final_model_path) if promoted else None,
        "decision": _decision(result.decision),
        "result": result.summary(),
        "plan": result.info.get("plan"),
        "engine_fusion": result.info.get("fusion"),
    }


def reranker(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the cross-encoder over the served first stage; serve it only when promoted.

    From the bundled encoder (a new one-logit head) it distils the served
    bi-encoder (``MarginMSELoss``); from a given cross-encoder it trains on labels.
    """
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.finetuning import RerankerFinetuneEngine

    config = ctx.config
    folder = ctx.path("reranker")
    teacher = None
    if config.reranker_model is None:
        teacher = load_model(SentenceTransformer, ctx.served_encoder, device=config.device)
    engine = RerankerFinetuneEngine(
        ctx.retrieval_dataset,
        model=config.reranker_model or ctx.base_encoder,
        args=RerankerFinetuneEngine.default_args(folder, **config.reranker_args),
        teacher=teacher,
        budget=config.reranker_budget,
        rerank_depth=config.rerank_candidates,
        encoder=ctx.embed_model(ctx.served_encoder),
        fusion={k: v for k, v in ctx.fusion.items() if k != "similarity_top_k"},
        **config.bm25_options(),
        eval_points=config.eval_points,
        max_val_queries=config.max_val_queries,
        force_promotion=_forced(ctx, "reranker"),
        device=config.device,
        show_progress=config.show_progress,
        **_margin(ctx),
    )
    result = engine.finetune(resume_from_checkpoint=True if ctx.resume else None)
    result.save_json(folder / "result.json")
    promoted = bool(result.promoted) and engine.final_model_path.is_dir()
    weight = result.info.get("retrieval_weight")
    return {
        "promoted": promoted,
        "served": {"path": str(engine.final_model_path), "retrieval_weight": weight}
        if promoted
        else None,
        "decision": _decision(result.decision),
        "result": result.summary(),
        "plan": result.info.get("plan"),
    }


# ---------------------------------------------------------------------- decoder


EVALUATION_MARGIN = 1.15
"""A time-limited run reserves this many times the starting decoder's measured evaluation
for the tuned decoder's."""
AFTER_EVALUATION_SECONDS = 20.0
"""Reserved for the retrieval evaluation, the bundle and the report of a time-limited run."""
MIN_TRAINING_SECONDS = 60.0
"""Less time than this left before a time-limited run's training deadline: the starting
decoder is kept (loading, validating and a few steps would not fit)."""
TIME_LIMITED_DECODER_ARGS: dict[str, Any] = {"warmup_steps": 0}
"""Defaults of a time-limited run's decoder SFT (``config.decoder_args`` overrides them): no
warm-up. The timer stops such a run after a few steps, and warm-up's first step has a
learning rate of 0 (validation loss after 3 and 6 steps on the demo help centres: 1.90 and
1.65 with the engine's 5 % warm-up, 1.67 and 1.48 without; after 2 steps on SQuAD 2.0,
1.15 and 0.65)."""


def decoder_args(config: Any, time_limited: bool) -> dict[str, Any]:
    """The decoder's SFT settings: ``config.decoder_args`` over the time-limited defaults.

    Example::

        from llama_index_ragtune.pipeline import PipelineConfig
        from llama_index_ragtune.pipeline.steps import decoder_args

        decoder_args(PipelineConfig.demo(), time_limited=True)
        # {'warmup_steps': 0, 'learning_rate': 0.0005, 'num_train_epochs': 2}
    """
    return {**(TIME_LIMITED_DECODER_ARGS if time_limited else {}), **config.decoder_args}


def _evaluation_reserve(ctx: RunContext) -> tuple[float, dict[str, Any]]:
    """Seconds a time-limited run keeps after the decoder's training, and what they are for.

    The starting decoder is evaluated now (the retrieval stack is final), so the tuned one
    is reserved what that measurably took."""
    if "evaluate" in ctx.skip:
        return AFTER_EVALUATION_SECONDS, {}
    from llama_index_ragtune.pipeline.evaluate import evaluate_starting_decoder

    before = evaluate_starting_decoder(ctx)
    if before is None:
        return AFTER_EVALUATION_SECONDS, {}
    seconds = float(before["seconds"])
    info = {"starting_decoder_evaluation_seconds": round(seconds, 1)}
    return EVALUATION_MARGIN * seconds + AFTER_EVALUATION_SECONDS, info


def decoder_contexts(ctx: RunContext) -> list[Any]:
    """The decoder's grounded SFT contexts: the training questions minus the dev ones (kept
    for the refusal policy), over the served stack's retrieved nodes; each holds the gold
    nodes, or drops them (refusal target) with ``config.p_no_gold``."""
    from llama_index_ragtune.pipeline.training_data import training_contexts

    config = ctx.config
    dev = {q.id for q in ctx.split("dev")}
    questions = [q for q in ctx.split("train") if q.id not in dev]
    depth = 3 * config.max_sources

    def retrieve(query: Any) -> list[str]:
        hits = ctx.ranked_nodes(query.question, query.filters)
        return [h.node.node_id for h in hits[:depth]]

    return training_contexts(
        questions,
        retrieve,
        ctx.llm_texts,
        top_k=config.max_sources,
        max_source_chars=config.max_source_chars,
        p_no_gold=config.p_no_gold,
        seed=config.seed,
        show_progress=config.show_progress,
    )


def decoder(ctx: RunContext) -> dict[str, Any]:
    """Grounded SFT (+ DPO) of the decoder over contexts from the served retriever.

    Training questions minus the dev ones (kept for the refusal policy); each
    context holds the gold nodes among the served stack's own retrieved nodes, or
    drops them (refusal target) with ``p_no_gold``. With a time limit
    (``config.time_limit_minutes``) the starting decoder is evaluated first and the
    training ends early enough for the tuned one's evaluation to fit.
    """
    from llama_index_ragtune.finetuning import DecoderFinetuneEngine
    from llama_index_ragtune.pipeline.training_data import sft_dataset

    config = ctx.config
    reserve, limit = (0.0, {}) if ctx.deadline is None else _evaluation_reserve(ctx)
    folder = ctx.path("decoder")
    contexts = decoder_contexts(ctx)
    preference = None
    if config.dpo:
        from llama_index_ragtune.data.preference import PreferenceBuilder

        preference = PreferenceBuilder(seed=config.seed).build(
            contexts, show_progress=config.show_progress
        )
    engine = DecoderFinetuneEngine(
        sft_dataset(contexts),
        model=ctx.base_decoder,
        args=DecoderFinetuneEngine.default_args(
            folder, **decoder_args(config, time_limited=ctx.deadline is not None)
        ),
        output_dir=folder,
        preference_dataset=preference,
        budget=config.decoder_budget,
        # No checkpoint selection during SFT: short CPU runs keep the last one, and the
        # validation loss still decides promotion. Under a time limit the engine plans its
        # steps to fit, so the learning-rate schedule ends with the training time.
        eval_points=0,
        max_val_queries=min(config.max_val_queries, 50),
        force_promotion=_forced(ctx, "decoder"),
        device=config.device,
        show_progress=config.show_progress,
        **_margin(ctx),
    )
    counts = {
        "contexts": len(contexts),
        "answer_targets": sum(c.answerable for c in contexts),
        "preference_pairs": 0 if preference is None else len(preference),
    }
    if ctx.deadline is not None:
        engine.train_deadline = ctx.deadline - reserve
        left = engine.train_deadline - time.time()
        limit.update(reserved_seconds=round(reserve, 1), seconds_left=round(left, 1))
        if left < MIN_TRAINING_SECONDS:
            note = (
                f"the time limit ({config.time_limit_minutes:g} min) leaves {max(left, 0):.0f} s "
                f"for training once {reserve:.0f} s are reserved for the evaluation: kept the "
                "starting decoder"
            )
            ctx.echo(f"  {note}")
            return {"promoted": False, "served": None, "note": note, "time_limit": limit, **counts}
        ctx.echo(
            f"  time limit: {left:.0f} s for the decoder's training, validation and saving "
            f"({reserve:.0f} s kept for the evaluation and the bundle)"
        )
    result = engine.finetune(resume_from_checkpoint=True if ctx.resume else None)
    result.save_json(folder / "result.json")
    plan = result.info.get("plan") or {}
    if plan.get("planned_steps"):
        epoch = math.ceil(plan["rows"] / plan["batch_size"])
        ctx.echo(
            f"  trained {result.global_step} SFT steps of {plan['batch_size']}: planned to fit "
            f"the time at {plan['seconds_per_step']:.1f} s a step (an epoch is {epoch})"
        )
    promoted = bool(result.promoted) and (engine.merged_dir / "config.json").is_file()
    return {
        "promoted": promoted,
        "served": str(engine.merged_dir) if promoted else None,
        "decision": _decision(result.decision),
        "result": result.summary(),
        "plan": result.info.get("plan"),
        **counts,
        **({"time_limit": limit} if ctx.deadline is not None else {}),
    }


STEP_FUNCTIONS = {
    "parse": parse,
    "index": index,
    "data": data,
    "encoder": encoder,
    "fusion": fusion,
    "reranker": reranker,
    "decoder": decoder,
}
