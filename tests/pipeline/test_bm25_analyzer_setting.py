"""``PipelineConfig.bm25_analyzer``: one BM25 analyzer for the index, the bundle and the miner.

A tiny Chinese help centre is tuned with ``bm25_analyzer="unicode"``: the bundle's
retriever finds a page by part of a Chinese sentence, and the BM25 hard negatives were
mined with the same analyzer. The default (``"plain"``) changes nothing.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from llama_index_ragtune.data.negatives import HardNegativeMiner
from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.pipeline import PipelineConfig
from tests.pipeline.conftest import tune_help_centre

DOCS = {
    "shop/returns.md": "# 退货政策\n\n## 电子产品\n已开封的电子产品可在十四天内退货，需扣除百分之十五的开箱费。\n\n"
    "## 生鲜食品\n新鲜水果如有质量问题，须在四十八小时内凭收据联系客服。\n",
    "shop/delivery.md": "# 配送服务\n\n## 配送费用\n订单满六十元即可享受免运费，否则收取四元配送费。\n\n"
    "## 配送时间\n每天上午八点至晚上十点均可预约配送时段。\n",
    "app/account.md": "# 账户管理\n\n## 修改密码\n在设置页面点击安全选项，即可修改登录密码。\n\n"
    "## 注销账户\n注销账户后，订单记录将在三十天后永久删除。\n",
    "app/payment.md": "# 支付方式\n\n## 信用卡\n我们接受维萨卡和万事达卡，付款信息经过加密保存。\n\n"
    "## 礼品卡\n礼品卡余额不可兑换现金，有效期为两年。\n",
}
# (question: part of one sentence, gold document, gold section)
QUESTIONS = [
    ("开箱费是多少", "shop/returns.md", "退货政策 > 电子产品"),
    ("四十八小时内凭收据", "shop/returns.md", "退货政策 > 生鲜食品"),
    ("怎样享受免运费", "shop/delivery.md", "配送服务 > 配送费用"),
    ("预约配送时段", "shop/delivery.md", "配送服务 > 配送时间"),
    ("如何修改登录密码", "app/account.md", "账户管理 > 修改密码"),
    ("订单记录永久删除", "app/account.md", "账户管理 > 注销账户"),
    ("付款信息加密吗", "app/payment.md", "支付方式 > 信用卡"),
    ("礼品卡余额兑换现金", "app/payment.md", "支付方式 > 礼品卡"),
]


@pytest.fixture(scope="module")
def unicode_run(tmp_path_factory, tiny_encoder_path, tiny_causal_lm_path):
    """The Chinese help centre tuned with ``bm25_analyzer="unicode"`` (no decoder)."""
    root = tmp_path_factory.mktemp("zh_help")
    return tune_help_centre(
        root,
        DOCS,
        QUESTIONS,
        tiny_encoder_path,
        tiny_causal_lm_path,
        bm25_analyzer="unicode",
        similarity_top_k=3,
    )


def _gold_node(bundle, section: str) -> str:
    nodes = bundle.retriever.index.docstore.docs.values()
    return next(n.node_id for n in nodes if section.split(" > ")[-1] in n.get_content())


def test_the_bundle_serves_the_unicode_analyzer_and_finds_part_of_a_chinese_sentence(
    unicode_run,
):
    result, bundle, _ = unicode_run
    manifest = json.loads((result.bundle_path / "manifest.json").read_text("utf-8"))
    assert manifest["config"]["bm25_analyzer"] == "unicode"
    sparse = bundle.retriever.sparse_retriever
    assert sparse.tokenizer.analyzer == "unicode"  # read back from the persisted BM25 folder
    gold = _gold_node(bundle, "电子产品")
    # "开箱费" is three characters inside "...需扣除百分之十五的开箱费。": the plain analyzer
    # indexes the whole clause as one term and never matches it
    assert [h.node.node_id for h in sparse.retrieve("开箱费")][:1] == [gold]
    # the served hybrid's lexical side is that BM25: it ranks the page first there (where it
    # lands after fusion depends on the tiny test encoder's random dense scores)
    hybrid = bundle.retriever
    hybrid.similarity_top_k = len(DOCS) * 2
    fused = {h.node.node_id: h for h in hybrid.retrieve("开箱费")}
    assert fused[gold].sparse_rank == 1


def test_the_mined_bm25_negatives_are_scored_as_the_served_retriever_scores(unicode_run):
    _, _, out = unicode_run
    mined = RetrievalDataset.load_json(out / "work" / "data" / "retrieval.json")
    assert mined.metadata["mining"]["bm25_analyzer"] == "unicode"
    pipeline_bm25 = {
        q: [n.doc_id for n in negs if n.source == "bm25"] for q, negs in mined.negatives.items()
    }
    assert sum(map(len, pipeline_bm25.values())) > 0
    bare = RetrievalDataset(
        queries=mined.queries, corpus=mined.corpus, relevant_docs=mined.relevant_docs
    )

    def bm25_negatives(analyzer: str) -> dict[str, list[str]]:
        miner = HardNegativeMiner(
            sources=("bm25",),
            num_negatives=2,
            range_max=30,
            bm25_analyzer=analyzer,
            show_progress=False,
        )
        found = miner.mine(bare).negatives
        return {q: [n.doc_id for n in found.get(q, [])] for q in mined.queries}

    unicode = bm25_negatives("unicode")
    assert {q: pipeline_bm25.get(q, []) for q in mined.queries} == unicode
    # the plain analyzer sees no Chinese query term in any page: no BM25 negative at all
    assert sum(map(len, bm25_negatives("plain").values())) == 0


def test_the_tuning_steps_measured_with_the_served_analyzer(unicode_run):
    """The encoder's validation (promotion, fusion), the fusion sweep and the reranker's
    first-stage candidates used the served BM25, not a plain one."""
    _, _, out = unicode_run
    state = json.loads((out / "work" / "state.json").read_text("utf-8"))
    steps = state["steps"]
    assert steps["fusion"]["bm25_analyzer"] == "unicode"
    for part in ("encoder", "reranker"):
        result = json.loads((out / "work" / part / "result.json").read_text("utf-8"))
        assert result["info"]["bm25_analyzer"] == "unicode", part


def test_the_default_analyzer_is_plain_and_keeps_the_recorded_fingerprint():
    config = PipelineConfig()
    assert config.bm25_analyzer == "plain"
    assert config.bm25_kwargs() == {"analyzer": "plain"}
    # a run recorded before the setting existed resumes under the same fingerprint
    before = {k: v for k, v in config.to_dict().items() if k != "bm25_analyzer"}
    text = json.dumps(before, sort_keys=True, default=str)
    assert config.fingerprint() == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert PipelineConfig(bm25_analyzer="unicode").fingerprint() != config.fingerprint()


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ("Unicode", ValueError, "must be one of unicode, plain, got 'Unicode'"),
        ("cjk", ValueError, "'unicode' for Chinese/Japanese/Thai/Korean"),
        (None, TypeError, "bm25_analyzer must be the name of a BM25 analyzer"),
        (["unicode"], TypeError, "got list ['unicode']"),
    ],
)
def test_a_wrong_analyzer_is_refused_by_name(value, error, words):
    with pytest.raises(error, match="PipelineConfig.bm25_analyzer") as caught:
        PipelineConfig(bm25_analyzer=value)
    assert words in str(caught.value)
    with pytest.raises(ValueError, match="bm25_analyzer must be one of"):
        HardNegativeMiner(sources=("bm25",), bm25_analyzer="Unicode")


def test_a_refresh_of_a_unicode_bundle_keeps_its_analyzer(unicode_run):
    from llama_index_ragtune.pipeline.refresh import _refresh_config

    _, bundle, _ = unicode_run
    config = _refresh_config(bundle.manifest, bundle.path, None, None)
    assert config.bm25_analyzer == "unicode"
    assert config.bm25_kwargs() == {"analyzer": "unicode"}


def test_a_refresh_given_a_config_keeps_the_bundles_analyzer(unicode_run, caplog):
    # a config built for a refresh (its budgets, say) has the default "plain": the challenger
    # was indexed with it and compared with a champion serving "unicode", then served
    from llama_index_ragtune.pipeline.config import PipelineConfig
    from llama_index_ragtune.pipeline.refresh import _refresh_config

    _, bundle, _ = unicode_run
    with caplog.at_level("WARNING", logger="llama_index_ragtune.pipeline.refresh"):
        config = _refresh_config(bundle.manifest, bundle.path, PipelineConfig(), None)
    assert config.bm25_analyzer == "unicode"
    assert "'unicode' is kept (the config asked for 'plain')" in caplog.text


def test_the_cli_option_reaches_the_config(tmp_path):
    import argparse

    from llama_index_ragtune.commands.tune import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--docs", str(tmp_path), "--out", str(tmp_path / "out")]
    unicode = build_config(parser.parse_args([*base, "--bm25-analyzer", "unicode"]))
    assert unicode.bm25_analyzer == "unicode"
    assert build_config(parser.parse_args(base)).bm25_analyzer == "plain"
    assert "Chinese" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--bm25-analyzer", "cjk"])
