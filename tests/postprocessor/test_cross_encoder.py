"""CrossEncoderRerank over a tiny cross-encoder trained in the test with CrossEncoderTrainer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from llama_index.core import SummaryIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from llama_index_ragtune.postprocessor import CrossEncoderRerank

# Each toy query has one relevant passage (it repeats the query's words) and three
# distractors. The retriever below returns the relevant passage last.
TOY = {
    "solar panel efficiency": [
        "the castle walls were built from granite",
        "bread dough rises when yeast ferments",
        "trout swim upstream every autumn",
        "solar panel efficiency drops when panels overheat",
    ],
    "vaccine antibody response": [
        "the orchestra tuned before the concert",
        "glaciers carve valleys over millennia",
        "chess openings reward early development",
        "the vaccine triggers a strong antibody response",
    ],
    "coral reef bleaching": [
        "railway timetables changed in spring",
        "the poem uses an unusual rhyme scheme",
        "copper wires conduct electricity well",
        "warm water drives coral reef bleaching events",
    ],
    "password hashing salt": [
        "the volcano erupted after centuries",
        "tomatoes ripen faster in the sun",
        "the marathon route crosses five bridges",
        "store each password hashing result with a salt",
    ],
}


def _toy_nodes(query: str) -> list[NodeWithScore]:
    passages = TOY[query]
    return [
        NodeWithScore(node=TextNode(id_=f"{query[:5]}-{i}", text=text), score=1.0 - 0.1 * i)
        for i, text in enumerate(passages)
    ]


def _relevant_id(query: str) -> str:
    return f"{query[:5]}-{len(TOY[query]) - 1}"


def _mrr(reranker: CrossEncoderRerank) -> float:
    total = 0.0
    for query in TOY:
        ranked = [
            n.node.node_id for n in reranker.postprocess_nodes(_toy_nodes(query), query_str=query)
        ]
        total += 1.0 / (ranked.index(_relevant_id(query)) + 1)
    return total / len(TOY)


@pytest.fixture(scope="module")
def trained_dir(untrained_dir: Path) -> Path:
    """The tiny cross-encoder after a short CrossEncoderTrainer run on the toy pairs, saved."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    torch.manual_seed(0)
    rows = {"query": [], "passage": [], "label": []}
    for query, passages in TOY.items():
        for i, passage in enumerate(passages):
            rows["query"].append(query)
            rows["passage"].append(passage)
            rows["label"].append(float(i == len(passages) - 1))
    model = CrossEncoder(str(untrained_dir), device="cpu")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = CrossEncoderTrainingArguments(
        output_dir=str(untrained_dir.parent / "checkpoints"),
        num_train_epochs=20,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        data_seed=0,
    )
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(3.0))
    CrossEncoderTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss
    ).train()
    changed = [
        name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())
    ]
    assert "model.classifier.weight" in " ".join(changed) or any("classifier" in n for n in changed)
    out = untrained_dir.parent / "trained"
    model.save(str(out))
    return out


# ------------------------------------------------------------------------ behaviour


def test_trained_reranker_puts_relevant_first(trained_dir: Path, untrained_dir: Path) -> None:
    reranker = CrossEncoderRerank(model=str(trained_dir), top_n=4, device="cpu")
    for query in TOY:
        nodes = _toy_nodes(query)
        assert nodes[0].node.node_id != _relevant_id(query)  # the retrieval order is wrong
        reranked = reranker.postprocess_nodes(nodes, query_str=query)
        assert reranked[0].node.node_id == _relevant_id(query)
        assert [n.score for n in reranked] == sorted((n.score for n in reranked), reverse=True)
        assert all(0.0 <= n.score <= 1.0 for n in reranked)  # sigmoid of the 1-logit head
    # the training is what made the ranking right
    assert _mrr(reranker) == 1.0
    assert _mrr(CrossEncoderRerank(model=str(untrained_dir), top_n=4, device="cpu")) < 1.0


def test_top_n_threshold_and_retrieval_score(trained_dir: Path) -> None:
    query = "coral reef bleaching"
    full = CrossEncoderRerank(model=str(trained_dir), top_n=None).postprocess_nodes(
        _toy_nodes(query), query_str=query
    )
    assert len(full) == 4
    top2 = CrossEncoderRerank(model=str(trained_dir), top_n=2).postprocess_nodes(
        _toy_nodes(query), query_str=query
    )
    assert [n.node.node_id for n in top2] == [n.node.node_id for n in full[:2]]

    cut = (full[0].score + full[1].score) / 2
    kept = CrossEncoderRerank(model=str(trained_dir), score_threshold=cut).postprocess_nodes(
        _toy_nodes(query), query_str=query
    )
    assert [n.node.node_id for n in kept] == [_relevant_id(query)]

    nodes = _toy_nodes(query)
    reranker = CrossEncoderRerank(model=str(trained_dir), top_n=4, keep_retrieval_score=True)
    out = reranker.postprocess_nodes(nodes, query_str=query)
    by_id = {n.node.node_id: n for n in nodes}
    for node in out:
        original = by_id[node.node.node_id]
        assert node.node.metadata["retrieval_score"] == pytest.approx(
            1.0 - 0.1 * int(node.node.node_id[-1])
        )
        assert original.score == node.node.metadata["retrieval_score"]  # input list not rescored
        assert "retrieval_score" not in node.node.get_content(metadata_mode=MetadataMode.LLM)


def test_model_is_loaded_once_and_async_works(trained_dir: Path) -> None:
    import asyncio

    reranker = CrossEncoderRerank(model=str(trained_dir), top_n=1)
    first = reranker.cross_encoder
    reranker.postprocess_nodes(
        _toy_nodes("vaccine antibody response"), query_str="vaccine antibody response"
    )
    assert reranker.cross_encoder is first
    query = "password hashing salt"
    out = asyncio.run(
        reranker.apostprocess_nodes(_toy_nodes(query), query_bundle=QueryBundle(query))
    )
    assert [n.node.node_id for n in out] == [_relevant_id(query)]


def test_accepts_an_in_memory_cross_encoder(trained_dir: Path) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(str(trained_dir), device="cpu")
    reranker = CrossEncoderRerank(model=model, top_n=1)
    assert reranker.cross_encoder is model
    query = "solar panel efficiency"
    assert reranker.postprocess_nodes(_toy_nodes(query), query_str=query)[
        0
    ].node.node_id == _relevant_id(query)


class _Collector(BaseEventHandler):
    events: list = []

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


def test_query_engine_integration_and_events(trained_dir: Path) -> None:
    from llama_index_ragtune.postprocessor import cross_encoder as module

    query = "vaccine antibody response"
    nodes = [n.node for n in _toy_nodes(query)]
    debug = LlamaDebugHandler()
    reranker = CrossEncoderRerank(model=str(trained_dir), top_n=2)
    collector = _Collector()
    module.dispatcher.add_event_handler(collector)
    try:
        engine = SummaryIndex(nodes).as_query_engine(
            llm=MockLLM(max_tokens=8),
            node_postprocessors=[reranker],
            callback_manager=CallbackManager([debug]),
        )
        response = engine.query(query)
    finally:
        module.dispatcher.event_handlers.remove(collector)
    assert [n.node.node_id for n in response.source_nodes][0] == _relevant_id(query)
    assert len(response.source_nodes) == 2
    starts = [e for e in collector.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in collector.events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == 1 and len(ends) == 1
    assert (
        starts[0].top_n == 2
        and len(starts[0].nodes) == 4
        and starts[0].model_name == str(trained_dir)
    )
    assert [n.node.node_id for n in ends[0].nodes] == [
        n.node.node_id for n in response.source_nodes
    ]
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1


# --------------------------------------------------------------------------- errors


def test_empty_nodes_and_missing_query(trained_dir: Path) -> None:
    reranker = CrossEncoderRerank(model=str(trained_dir))
    assert reranker.postprocess_nodes([], query_str="anything") == []
    assert reranker._model is None  # nothing to score: the model is not even loaded
    with pytest.raises(ValueError, match="needs the query"):
        reranker.postprocess_nodes(_toy_nodes("coral reef bleaching"))


def test_no_model_explains_how_to_get_one() -> None:
    with pytest.raises(
        ValueError,
        match="no pretrained cross-encoder ships offline.*RerankerFinetuneEngine.*ms-marco-MiniLM",
    ):
        CrossEncoderRerank()


def test_bad_model_paths(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"'\./missing/reranker' does not exist.*CrossEncoder\.save"
    ):
        CrossEncoderRerank(model="./missing/reranker")
    file_path = tmp_path / "weights.bin"
    file_path.write_bytes(b"0")
    with pytest.raises(FileNotFoundError, match="is a file"):
        CrossEncoderRerank(model=file_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    # checked when built, not at the first query
    with pytest.raises(
        OSError, match="'.*empty' is not a cross-encoder folder.*config.json is missing"
    ):
        CrossEncoderRerank(model=empty)


def test_random_order_is_fixed_by_the_reranker(trained_dir: Path) -> None:
    reranker = CrossEncoderRerank(model=str(trained_dir), top_n=1, batch_size=2)
    rng = random.Random(3)
    for query in TOY:
        nodes = _toy_nodes(query)
        rng.shuffle(nodes)
        assert reranker.postprocess_nodes(nodes, query_str=query)[0].node.node_id == _relevant_id(
            query
        )


def test_serialisation_keeps_settings_never_the_model(trained_dir: Path, caplog) -> None:
    import logging
    import pickle

    reranker = CrossEncoderRerank(model=str(trained_dir), top_n=2, score_threshold=0.1)
    query = "coral reef bleaching"
    expected = reranker.postprocess_nodes(_toy_nodes(query), query_str=query)  # model loaded
    data = reranker.to_dict()
    assert data["model"] == str(trained_dir.resolve()) and data["top_n"] == 2
    assert CrossEncoderRerank.from_dict(data).to_dict() == data
    with caplog.at_level(logging.WARNING):
        blob = pickle.dumps(reranker)
    assert len(blob) < 10_000  # the settings, not the weights
    assert "unpickleable" not in caplog.text
    clone = pickle.loads(blob)
    assert clone._model is None and clone.score_threshold == 0.1
    got = clone.postprocess_nodes(_toy_nodes(query), query_str=query)  # reloaded on first use
    assert [(n.node.node_id, n.score) for n in got] == [(n.node.node_id, n.score) for n in expected]


def test_retrieval_weight_blends_reranker_and_retriever_scores(trained_dir: Path) -> None:
    from llama_index_ragtune.postprocessor.cross_encoder import blend_scores

    query = "coral reef bleaching"
    alone = CrossEncoderRerank(model=str(trained_dir), top_n=None)
    raw = alone.score(query, [n.node.get_content() for n in _toy_nodes(query)])
    retrieval = [n.score for n in _toy_nodes(query)]

    # All the weight on the retriever keeps the retriever's order (the relevant node is last).
    kept = CrossEncoderRerank(model=str(trained_dir), top_n=None, retrieval_weight=1.0)
    ids = [n.node.node_id for n in kept.postprocess_nodes(_toy_nodes(query), query_str=query)]
    assert ids == [n.node.node_id for n in _toy_nodes(query)]

    # A blend: node scores are the z-score mix, and the order follows them.
    half = CrossEncoderRerank(model=str(trained_dir), top_n=None, retrieval_weight=0.5)
    out = half.postprocess_nodes(_toy_nodes(query), query_str=query)
    expected = dict(
        zip(
            [n.node.node_id for n in _toy_nodes(query)],
            blend_scores(raw, retrieval, 0.5),
            strict=True,
        )
    )
    assert [n.score for n in out] == pytest.approx([expected[n.node.node_id] for n in out])
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    assert out[0].score == pytest.approx(max(expected.values()))

    unscored = [NodeWithScore(node=n.node, score=None) for n in _toy_nodes(query)]
    with pytest.raises(ValueError, match="retrieval_weight > 0 blends in the retriever's scores"):
        half.postprocess_nodes(unscored, query_str=query)
    with pytest.raises(ValueError):
        CrossEncoderRerank(model=str(trained_dir), retrieval_weight=1.5)


def test_blend_scores_is_a_weighted_sum_of_z_scores() -> None:
    from llama_index_ragtune.postprocessor.cross_encoder import blend_scores

    assert blend_scores([2.0, 0.0], [0.0, 1.0], retrieval_weight=0.25) == pytest.approx([0.5, -0.5])
    assert blend_scores([3.0, 1.0, 2.0], [0.0, 0.0, 0.0], 0.5) == pytest.approx(
        [0.5 * 1.2247449 + 0.5, 0.5 * -1.2247449 + 0.5, 0.5]
    )
    with pytest.raises(ValueError, match="2 reranker scores but 1 retrieval"):
        blend_scores([1.0, 2.0], [1.0], 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        blend_scores([1.0], [1.0], -0.1)
