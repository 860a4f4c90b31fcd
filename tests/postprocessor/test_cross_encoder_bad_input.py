"""CrossEncoderRerank with bad input: wrong model folders fail when built, naming the path;
settings are validated; empty, hostile and huge text is handled."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.postprocessor import CrossEncoderRerank


def nodes(*texts: str) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=1.0 - i / 10)
        for i, t in enumerate(texts)
    ]


def copy_without(source: Path, target: Path, *names: str) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*names))
    return target


def test_missing_parts_are_named_at_construction(untrained_dir, tmp_path):
    no_weights = copy_without(untrained_dir, tmp_path / "no_weights", "model.safetensors")
    with pytest.raises(
        FileNotFoundError, match=r"no_weights' is not a cross-encoder folder.*no weights"
    ):
        CrossEncoderRerank(model=no_weights)
    no_tokenizer = copy_without(
        untrained_dir, tmp_path / "no_tok", "tokenizer.json", "tokenizer_config.json", "vocab.txt"
    )
    with pytest.raises(FileNotFoundError, match=r"no_tok' .*no tokenizer files"):
        CrossEncoderRerank(model=no_tokenizer)
    broken = copy_without(untrained_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken/config\.json is not valid JSON"):
        CrossEncoderRerank(model=broken)


def test_truncated_weights_are_refused_at_construction(untrained_dir, tmp_path):
    cut = copy_without(untrained_dir, tmp_path / "cut")
    weights = cut / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"cut/model\.safetensors is truncated or corrupt \(it holds"
    ):
        CrossEncoderRerank(model=cut)
    weights.write_bytes(b"\x01")
    with pytest.raises(ValueError, match="model.safetensors is truncated or corrupt"):
        CrossEncoderRerank(model=cut)


def test_a_bi_encoder_folder_is_refused(tiny_encoder_path):
    with pytest.raises(
        ValueError, match="holds a sentence-transformers bi-encoder, not a cross-encoder"
    ):
        CrossEncoderRerank(model=tiny_encoder_path)
    hf_folder = Path(tiny_encoder_path).parent / "hf"  # a plain BertModel: no scoring head
    with pytest.raises(ValueError, match="holds a BertModel model, not a cross-encoder"):
        CrossEncoderRerank(model=hf_folder)


def test_an_uncached_hub_id_offline_fails_at_construction(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(
        OSError, match="'someone/unknown-reranker' is not a local folder and is not in"
    ):
        CrossEncoderRerank(model="someone/unknown-reranker")


@pytest.mark.parametrize(
    "model, error",
    [(42, TypeError), ("", ValueError), ("   ", ValueError), ("a\x00b", ValueError)],
)
def test_unusable_model_arguments(model, error):
    with pytest.raises(error, match="model"):
        CrossEncoderRerank(model=model)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"top_n": 0}, "top_n"),
        ({"top_n": -3}, "top_n"),
        ({"top_n": 2.5}, "top_n"),
        ({"top_n": True}, "top_n"),
        ({"top_n": "3"}, "top_n"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1.0}, "batch_size"),
        ({"max_length": 0}, "max_length"),
        ({"score_threshold": math.nan}, "score_threshold"),
        ({"retrieval_weight": 1.5}, "retrieval_weight"),
    ],
)
def test_settings_are_validated(untrained_dir, kwargs, name):
    with pytest.raises(ValueError, match=name):
        CrossEncoderRerank(model=untrained_dir, **kwargs)


def test_top_n_none_keeps_all(untrained_dir):
    reranker = CrossEncoderRerank(model=untrained_dir, top_n=None)
    assert len(reranker.postprocess_nodes(nodes("a", "b", "c"), query_str="q")) == 3


def test_empty_and_blank_queries(untrained_dir):
    reranker = CrossEncoderRerank(model=untrained_dir)
    assert reranker.postprocess_nodes([], query_str="anything") == []
    with pytest.raises(ValueError, match="empty query"):
        reranker.postprocess_nodes(nodes("a b"), query_str="   ")


def test_hostile_and_huge_text_is_scored(untrained_dir):
    reranker = CrossEncoderRerank(model=untrained_dir, top_n=3)
    candidates = nodes("caf\ud800e \x00 reef", "", "coral reef " * 20_000)
    ranked = reranker.postprocess_nodes(candidates, query_str="coral \udfff reef\x00")
    assert sorted(n.node.node_id for n in ranked) == ["n0", "n1", "n2"]
    assert all(math.isfinite(n.score) for n in ranked)
    assert candidates[0].node.text == "caf\ud800e \x00 reef"  # the node itself is untouched


def test_folder_checks_accept_a_plain_classifier_folder(untrained_dir):
    hf_folder = untrained_dir.parent / "hf"  # BertForSequenceClassification, no ST config
    assert json.loads((hf_folder / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"
    ]
    reranker = CrossEncoderRerank(model=hf_folder, top_n=1)
    assert len(reranker.postprocess_nodes(nodes("a", "b"), query_str="q")) == 1
