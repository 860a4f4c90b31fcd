"""``ragtune train reranker``: fine-tune the cross-encoder reranker on mined negatives.

The evaluation split is reranked over the hybrid retriever's candidates (dense
with ``--encoder`` + BM25, top ``--rerank-depth``): "before" is the hybrid
order, "after" the fine-tuned reranker's. Prints nDCG@10 / Recall@100 / MRR@10,
the training wall time and peak memory, and writes ``<output>/results.json``;
the reranker is ``<output>/final`` (load it with ``CrossEncoderRerank``).

Example::

    ragtune train reranker --beir ../shared/data/scifact --encoder runs/encoder/final --output runs/reranker
    ragtune train reranker --beir DIR --loss margin_mse --teacher cross-encoder/ms-marco-MiniLM-L6-v2 --output runs/rr
    # offline, from the bundled MiniLM: distil the fine-tuned bi-encoder (what `bench tuning` does)
    ragtune train reranker --beir DIR --encoder runs/encoder/final --loss margin_mse \
        --teacher-encoder runs/encoder/final --output runs/reranker
"""

from __future__ import annotations

import argparse

from llama_index_ragtune.commands.training_data import (
    add_data_arguments,
    add_negative_arguments,
    add_training_arguments,
    load_training_data,
    mine_negatives,
    namespace_dict,
    report,
    shared_corpus_embeddings,
    training_overrides,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_negative_arguments(parser, num_negatives=3)
    add_training_arguments(parser)
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        help="starting cross-encoder, or a bi-encoder to put a new one-logit head on "
        "(default: bundled all-MiniLM-L6-v2)",
    )
    group.add_argument(
        "--encoder",
        help="bi-encoder for the hybrid candidates and dense negatives "
        "(e.g. runs/encoder/final; default: bundled MiniLM)",
    )
    group.add_argument(
        "--rerank-depth", type=int, default=50, help="candidates re-scored per query (default: 50)"
    )
    group.add_argument(
        "--loss",
        default="bce",
        choices=("bce", "lambda", "listnet", "margin_mse"),
        help="BinaryCrossEntropy (default), LambdaLoss / ListNet (listwise), MarginMSE (distillation)",
    )
    teacher = group.add_mutually_exclusive_group()
    teacher.add_argument(
        "--teacher",
        help="cross-encoder (folder or hub id) whose score margins --loss margin_mse distils",
    )
    teacher.add_argument(
        "--teacher-encoder",
        help="bi-encoder (folder or hub id) whose scaled cosine margins --loss margin_mse distils "
        "(e.g. the fine-tuned runs/encoder/final)",
    )
    group.add_argument(
        "--max-negatives-per-query",
        type=int,
        default=3,
        help="negatives per query in the training rows (default: 3)",
    )
    group.add_argument(
        "--max-length",
        type=int,
        help="token limit of (query, passage) pairs (default: 256 for the bundled start)",
    )


def run(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.finetuning.candidates import hybrid_candidates
    from llama_index_ragtune.finetuning.ranking_eval import (
        CandidateRerankingEvaluator,
        DenseRetrievalEvaluator,
    )
    from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
    from llama_index_ragtune.models import resolve_model

    if args.loss == "margin_mse" and not (args.teacher or args.teacher_encoder):
        raise SystemExit(
            "--loss margin_mse needs --teacher (a cross-encoder) or --teacher-encoder (a bi-encoder)"
        )
    data = load_training_data(args)
    encoder = SentenceTransformer(resolve_model(args.encoder, kind="encoder"), device=args.device)
    candidates = evaluator = dense = None
    extra: dict = {}
    if data.val is not None:
        # One corpus pass with the encoder serves its dense metrics, the hybrid index and the miner.
        dense = DenseRetrievalEvaluator(
            data.val.queries,
            data.val.corpus,
            data.qrels or data.val.relevant_docs,
            cache_dir=args.embedding_cache,
        )
        extra["encoder_dense"] = dense.evaluate(encoder)
        candidates = hybrid_candidates(
            data.val.queries,
            data.val.corpus,
            top_k=max(100, args.rerank_depth),
            embed_model=args.encoder,
            corpus_embeddings=dense.corpus_embeddings.numpy(),
        )
        evaluator = CandidateRerankingEvaluator(
            data.val.queries,
            data.val.corpus,
            data.qrels or data.val.relevant_docs,
            candidates,
            depth=args.rerank_depth,
        )
    train, mining = mine_negatives(
        args,
        data.train,
        embed_model=encoder,
        corpus_embeddings=shared_corpus_embeddings(dense, data.train),
    )
    teacher = args.teacher
    if args.teacher_encoder:
        teacher = (
            encoder
            if args.teacher_encoder == args.encoder
            else SentenceTransformer(
                resolve_model(args.teacher_encoder, kind="encoder"), device=args.device
            )
        )
    engine = RerankerFinetuneEngine(
        train,
        model=args.model,
        val_dataset=data.val,
        loss=args.loss,
        teacher=teacher,
        args=RerankerFinetuneEngine.default_training_args(args.output, **training_overrides(args)),
        max_negatives_per_query=args.max_negatives_per_query,
        candidates=candidates,
        rerank_depth=args.rerank_depth,
        encoder=args.encoder,
        max_length=args.max_length,
        evaluator=evaluator,
        device=args.device,
    )
    result = engine.finetune(resume_from_checkpoint=True if args.resume else None)
    report(
        result,
        args.output,
        {"mining": mining, "data": data.info, "arguments": namespace_dict(args), **extra},
    )
    return 0
