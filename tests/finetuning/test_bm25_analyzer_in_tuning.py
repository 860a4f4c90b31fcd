"""The tuning steps measure with the served BM25's analyzer (``bm25_analyzer``).

A tiny Chinese help centre: every question is part of one sentence of its gold
passage. The plain analyzer indexes each clause as one term and finds nothing; the
``"unicode"`` analyzer (character bigrams) finds every gold passage. The encoder's
validation (fusion and promotion), the fusion sweep and the reranker's first-stage
candidates must see the BM25 that is served, and record which one it was.
"""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
from tests.finetuning.conftest import help_centre, hybrid_evaluator

CORPUS = {
    "returns": "已开封的电子产品可在十四天内退货，需扣除百分之十五的开箱费。",
    "fresh": "新鲜水果如有质量问题，须在四十八小时内凭收据联系客服。",
    "fees": "订单满六十元即可享受免运费，否则收取四元配送费。",
    "slots": "每天上午八点至晚上十点均可预约配送时段。",
    "password": "在设置页面点击安全选项，即可修改登录密码。",
    "delete": "注销账户后，订单记录将在三十天后永久删除。",
    "cards": "我们接受维萨卡和万事达卡，付款信息经过加密保存。",
    "gift": "礼品卡余额不可兑换现金，有效期为两年。",
}
QUESTIONS = {
    "returns": "开箱费是多少",
    "fresh": "四十八小时内凭收据",
    "fees": "怎样享受免运费",
    "slots": "预约配送时段",
    "password": "如何修改登录密码",
    "delete": "订单记录永久删除",
    "cards": "付款信息加密吗",
    "gift": "礼品卡余额兑换现金",
}


def chinese_help_centre() -> RetrievalDataset:
    return help_centre(CORPUS, QUESTIONS)


def top_bm25_hit(rankings: dict[str, list[tuple[str, float]]]) -> dict[str, str | None]:
    return {q: (ranked[0][0] if ranked else None) for q, ranked in rankings.items()}


def test_the_unicode_evaluator_finds_the_gold_passages_the_plain_one_misses():
    data = chinese_help_centre()
    gold = {q: docs[0] for q, docs in data.relevant_docs.items()}
    assert top_bm25_hit(hybrid_evaluator(data, bm25_analyzer="unicode").bm25_rankings()) == gold
    plain = hybrid_evaluator(data)
    assert plain.bm25_analyzer == "plain"  # the default is unchanged
    assert all(not ranked for ranked in plain.bm25_rankings().values())


def test_the_default_evaluator_ranks_english_exactly_as_before(make_toy):
    data = make_toy()
    default = hybrid_evaluator(data).bm25_rankings()
    assert default == hybrid_evaluator(data, bm25_analyzer="plain").bm25_rankings()
    assert all(ranked for ranked in default.values())


def test_the_hybrid_metric_that_decides_promotion_uses_the_analyzer(tiny_encoder_path, tmp_path):
    data = chinese_help_centre()
    scores = {}
    for analyzer in ("plain", "unicode"):
        engine = EncoderFinetuneEngine(
            data,
            model=tiny_encoder_path,
            val_dataset=data,
            fusion={"fusion_mode": "rrf", "alpha": 0.5},
            bm25_analyzer=analyzer,
            args=EncoderFinetuneEngine.default_args(tmp_path / analyzer),
            show_progress=False,
        )
        validation = engine._validation_evaluator(data)
        assert validation.bm25_analyzer == analyzer
        scores[analyzer] = validation.evaluate(engine.model)
    # the same random encoder: only the BM25 side differs, and only unicode's finds the gold
    assert scores["unicode"]["ndcg@10"] == scores["plain"]["ndcg@10"]
    assert scores["unicode"]["hybrid_mrr@10"] > scores["plain"]["hybrid_mrr@10"]


def test_the_encoder_engine_records_the_analyzer_it_validated_with(tiny_encoder_path, tmp_path):
    data = chinese_help_centre()
    engine = EncoderFinetuneEngine(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        budget=None,
        eval_points=0,
        bm25_analyzer="unicode",
        args=EncoderFinetuneEngine.default_args(
            tmp_path, max_steps=1, per_device_train_batch_size=4, save_strategy="no"
        ),
        show_progress=False,
    )
    result = engine.finetune()
    assert result.info["bm25_analyzer"] == "unicode"
    assert engine.evaluator.bm25_analyzer == "unicode"
    decision = json.loads(engine.decision_path.read_text("utf-8"))
    assert decision["bm25_analyzer"] == "unicode"


def test_the_reranker_candidates_come_from_the_analyzed_bm25(tiny_encoder_path, tmp_path):
    data = chinese_help_centre()
    mrr = {}
    for analyzer in ("plain", "unicode"):
        engine = RerankerFinetuneEngine(
            data,
            model=tiny_encoder_path,
            val_dataset=data,
            encoder=tiny_encoder_path,
            rerank_depth=4,
            bm25_analyzer=analyzer,
            args=RerankerFinetuneEngine.default_args(tmp_path / analyzer),
            show_progress=False,
        )
        base, _, _ = engine._evaluators(data)
        mrr[analyzer] = base.baseline()["mrr@10"]
    # the same random encoder: BM25 with character bigrams lifts the gold passages (on this
    # data from an MRR of 0.60 to 0.89); the plain BM25 finds nothing and adds nothing
    assert mrr["unicode"] > mrr["plain"]


def test_the_reranker_engine_records_the_analyzer_of_its_candidates(tiny_encoder_path, tmp_path):
    data = chinese_help_centre()
    common = dict(
        model=tiny_encoder_path,
        val_dataset=data,
        encoder=tiny_encoder_path,
        rerank_depth=4,
        budget=None,
        eval_points=0,
        bm25_analyzer="unicode",
        show_progress=False,
    )
    args = dict(max_steps=1, per_device_train_batch_size=4, save_strategy="no")
    built = RerankerFinetuneEngine(
        data, args=RerankerFinetuneEngine.default_args(tmp_path / "built", **args), **common
    )
    assert built.finetune().info["bm25_analyzer"] == "unicode"
    given = RerankerFinetuneEngine(
        data,
        candidates={q: list(CORPUS) for q in data.queries},
        args=RerankerFinetuneEngine.default_args(tmp_path / "given", **args),
        **common,
    )
    # candidates given by the caller: no BM25 of the engine's ranked them
    assert given.finetune().info["bm25_analyzer"] is None


@pytest.mark.parametrize("value", ["Unicode", "cjk", None])
def test_a_wrong_analyzer_is_refused_by_name(value, tiny_encoder_path, tmp_path):
    data = chinese_help_centre()
    with pytest.raises(ValueError, match="HybridRetrievalEvaluator: bm25_analyzer must be one of"):
        hybrid_evaluator(data, bm25_analyzer=value)
    for engine in (EncoderFinetuneEngine, RerankerFinetuneEngine):
        with pytest.raises(ValueError, match=f"{engine.__name__}: bm25_analyzer") as caught:
            engine(
                data,
                model=tiny_encoder_path,
                bm25_analyzer=value,
                args=engine.default_args(tmp_path),
            )
        assert "'unicode' for Chinese/Japanese/Thai/Korean" in str(caught.value)


@pytest.mark.parametrize("command", ["train_encoder", "train_reranker"])
def test_the_train_commands_mine_with_the_analyzer_they_are_given(command, tmp_path):
    import argparse
    import importlib

    from llama_index_ragtune.commands.training_data import mine_negatives

    parser = argparse.ArgumentParser()
    importlib.import_module(f"llama_index_ragtune.commands.{command}").add_arguments(parser)
    base = ["--dataset", str(tmp_path / "train.json"), "--out", str(tmp_path / "out")]
    assert parser.parse_args(base).bm25_analyzer == "plain"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--bm25-analyzer", "cjk"])
    args = parser.parse_args([*base, "--bm25-analyzer", "unicode", "--negatives", "bm25"])
    mined, _ = mine_negatives(args, chinese_help_centre(), embed_model=None)
    assert mined.metadata["mining"]["bm25_analyzer"] == "unicode"
    assert mined.num_negatives > 0  # the plain analyzer finds no Chinese query term at all
