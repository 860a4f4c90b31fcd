"""``ragtune train encoder``: mine hard negatives and fine-tune the bi-encoder.

Prints nDCG@10 / Recall@100 / MRR@10 on the evaluation split before and after,
the training wall time and peak memory, and writes ``<output>/results.json``;
the fine-tuned model is ``<output>/final`` (a sentence-transformers folder).

Example::

    ragtune train encoder --beir ../shared/data/scifact --output runs/encoder
    ragtune train encoder --dataset qa_pairs.json --val-fraction 0.1 --negatives bm25 --output runs/enc
    ragtune train encoder --beir ../shared/data/scifact --output runs/encoder --resume
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
        "--model", help="starting bi-encoder: folder or hub id (default: bundled all-MiniLM-L6-v2)"
    )
    group.add_argument(
        "--loss",
        default="mnrl",
        choices=("mnrl", "cached_mnrl"),
        help="MultipleNegativesRankingLoss, or its cached variant for big batches (default: mnrl)",
    )
    group.add_argument(
        "--max-negatives-per-query",
        type=int,
        default=1,
        help="hard-negative columns per training row; 0 = in-batch negatives only (default: 1)",
    )
    group.add_argument(
        "--matryoshka-dims", help="comma-separated dimensions for MatryoshkaLoss, e.g. 384,256,128"
    )
    group.add_argument("--query-prompt", help="text prepended to queries (e.g. 'query: ')")
    group.add_argument("--passage-prompt", help="text prepended to passages (e.g. 'passage: ')")


def run(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
    from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator
    from llama_index_ragtune.models import resolve_model

    data = load_training_data(args)
    model = SentenceTransformer(resolve_model(args.model, kind="encoder"), device=args.device)
    evaluator, before = None, {}
    if data.val is not None:
        # BEIR keeps its graded judgements; the corpus pass also feeds the dense miner.
        evaluator = DenseRetrievalEvaluator(
            data.val.queries,
            data.val.corpus,
            data.qrels or data.val.relevant_docs,
            query_prompt=args.query_prompt,
            passage_prompt=args.passage_prompt,
            cache_dir=args.embedding_cache,
        )
        before = evaluator.evaluate(model)
    train, mining = mine_negatives(
        args,
        data.train,
        embed_model=model,
        corpus_embeddings=shared_corpus_embeddings(evaluator, data.train),
    )
    dims = [int(d) for d in args.matryoshka_dims.split(",")] if args.matryoshka_dims else None
    engine = EncoderFinetuneEngine(
        train,
        model=model,
        val_dataset=data.val,
        loss=args.loss,
        matryoshka_dims=dims,
        args=EncoderFinetuneEngine.default_training_args(args.output, **training_overrides(args)),
        query_prompt=args.query_prompt,
        passage_prompt=args.passage_prompt,
        evaluator=evaluator,
        max_negatives_per_query=args.max_negatives_per_query,
    )
    result = engine.finetune(
        resume_from_checkpoint=True if args.resume else None, evaluate_before=False
    )
    result.before = before
    report(
        result,
        args.output,
        {"mining": mining, "data": data.info, "arguments": namespace_dict(args)},
    )
    return 0
