"""``PipelineConfig.bm25_stopwords`` / ``ragtune tune --bm25-stopwords``: one stopword list
for every BM25 of the run, served by the bundle.

A tiny shop help centre whose pages all repeat ``SKU`` and ``pcs`` is tuned with
``bm25_stopwords="sku,pcs"``: the bundle's BM25 folder records the words, so the served
retriever finds nothing for a query made only of them while a default BM25 over the same
nodes finds every page; the manifest, the miner and every tuning step record the same words.
Bad values are refused naming the setting, a resumed run whose stopwords changed redoes the
index, a refresh keeps the bundle's, and a bundle whose manifest says other words than its
index is refused when it loads. The default changes nothing, fingerprint included.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil

import pytest

from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.pipeline import PipelineConfig, TuningPipeline, load_bundle
from llama_index_ragtune.pipeline.bundle_folders import BundleError
from llama_index_ragtune.pipeline.config import first_changed_step
from llama_index_ragtune.retrievers import BM25Retriever
from tests.pipeline.conftest import tune_help_centre

DOCS = {
    "shop/returns.md": "# Returns\n\n## Electronics\nSKU 1 pcs: opened headphones go back "
    "within fourteen days.\n\n## Groceries\nSKU 2 pcs: spoiled groceries are refunded "
    "without a return.\n",
    "shop/delivery.md": "# Delivery\n\n## Costs\nSKU 3 pcs: delivery is free above sixty "
    "euros, otherwise four euros.\n\n## Times\nSKU 4 pcs: couriers deliver daily between "
    "eight and ten.\n",
    "app/account.md": "# Account\n\n## Password\nSKU 5 pcs: change your password under "
    "security settings.\n\n## Closing\nSKU 6 pcs: orders are deleted thirty days after "
    "closing an account.\n",
    "app/payment.md": "# Payment\n\n## Cards\nSKU 7 pcs: card details are stored "
    "encrypted.\n\n## Vouchers\nSKU 8 pcs: vouchers cannot be exchanged for cash.\n",
}
QUESTIONS = [
    ("Can I return opened headphones?", "shop/returns.md", "Returns > Electronics"),
    ("Refund for spoiled groceries", "shop/returns.md", "Returns > Groceries"),
    ("How much does delivery cost?", "shop/delivery.md", "Delivery > Costs"),
    ("When do couriers deliver?", "shop/delivery.md", "Delivery > Times"),
    ("How do I change my password?", "app/account.md", "Account > Password"),
    ("What happens to orders after closing my account?", "app/account.md", "Account > Closing"),
    ("Are card details encrypted?", "app/payment.md", "Payment > Cards"),
    ("Exchange a voucher for cash", "app/payment.md", "Payment > Vouchers"),
]
WORDS = ["sku", "pcs"]


@pytest.fixture(scope="module")
def stopword_run(tmp_path_factory, tiny_encoder_path, tiny_causal_lm_path):
    """The help centre tuned with ``bm25_stopwords="SKU,pcs"`` (no decoder)."""
    root = tmp_path_factory.mktemp("sku_help")
    return tune_help_centre(
        root,
        DOCS,
        QUESTIONS,
        tiny_encoder_path,
        tiny_causal_lm_path,
        bm25_stopwords="SKU,pcs",
        similarity_top_k=3,
    )


def test_the_served_bm25_drops_the_custom_stopwords(stopword_run):
    result, bundle, _ = stopword_run
    manifest = json.loads((result.bundle_path / "manifest.json").read_text("utf-8"))
    assert manifest["config"]["bm25_stopwords"] == WORDS  # lower-cased, as a list
    sparse = bundle.retriever.sparse_retriever
    # read back from the persisted BM25 folder of the bundle
    assert sparse.tokenizer.stopwords_spec == WORDS
    assert sparse.retrieve("SKU pcs") == []
    # the default BM25 over the same nodes keeps them: every page matches
    default = BM25Retriever(list(sparse.nodes), similarity_top_k=10)
    assert len(default.retrieve("SKU pcs")) == len(sparse.nodes)
    # the served stack still answers real questions by their words
    top = sparse.retrieve("spoiled groceries refunded")
    assert "spoiled groceries" in top[0].node.get_content()


def test_the_miner_and_the_tuning_steps_used_the_same_stopwords(stopword_run):
    _, _, out = stopword_run
    mined = RetrievalDataset.load_json(out / "work" / "data" / "retrieval.json")
    assert mined.metadata["mining"]["bm25_stopwords"] == WORDS
    steps = json.loads((out / "work" / "state.json").read_text("utf-8"))["steps"]
    assert steps["fusion"]["bm25_stopwords"] == WORDS
    for part in ("encoder", "reranker"):
        result = json.loads((out / "work" / part / "result.json").read_text("utf-8"))
        assert result["info"]["bm25_stopwords"] == WORDS, part


def test_the_default_changes_nothing():
    config = PipelineConfig()
    assert config.bm25_stopwords == "language"
    assert "bm25_stopwords" not in config.to_dict()
    assert config.bm25_kwargs() == {"analyzer": "plain"}
    assert config.bm25_options() == {"bm25_analyzer": "plain", "bm25_language": "english"}
    # "language" given explicitly is the default: same settings, same fingerprint
    assert PipelineConfig(bm25_stopwords="language").fingerprint() == config.fingerprint()
    custom = PipelineConfig(bm25_stopwords=("The", "a"))
    assert custom.bm25_stopwords == ["the", "a"]
    assert custom.fingerprint() != config.fingerprint()
    assert custom.bm25_kwargs() == {"analyzer": "plain", "stopwords": ["the", "a"]}
    assert custom.bm25_options()["bm25_stopwords"] == ["the", "a"]
    assert PipelineConfig(bm25_stopwords="none").bm25_text().tokenizer_kwargs()["stopwords"] is None
    assert PipelineConfig(bm25_stopwords="de").bm25_kwargs() == {
        "analyzer": "plain",
        "stopwords": "de",
    }


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ("sku", ValueError, "unknown BM25 stopword list 'sku'"),
        (" , ", ValueError, "no stopword in"),
        (["two words"], ValueError, "can never match"),
        ([], ValueError, "no stopword in"),
        (5, TypeError, "got int 5"),
        ({"sku": 1}, TypeError, "got dict"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(value, error, words):
    with pytest.raises(error, match="PipelineConfig.bm25_stopwords") as caught:
        PipelineConfig(bm25_stopwords=value)
    assert words in str(caught.value)


def test_the_cli_option_reaches_the_config(tmp_path):
    from llama_index_ragtune.commands.tune import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--docs", str(tmp_path), "--out", str(tmp_path / "out")]
    assert build_config(parser.parse_args(base)).bm25_stopwords == "language"
    given = build_config(parser.parse_args([*base, "--bm25-stopwords", "SKU,pcs"]))
    assert given.bm25_stopwords == WORDS
    assert (
        build_config(parser.parse_args([*base, "--bm25-stopwords", "none"])).bm25_stopwords is None
    )
    assert build_config(parser.parse_args([*base, "--bm25-stopwords", "sku,"])).bm25_stopwords == [
        "sku"
    ]
    assert "--bm25-stopwords" in parser.format_help()
    for wrong in ("sku", "a b,c d", ","):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--bm25-stopwords", wrong])


def test_a_changed_setting_redoes_the_index_step():
    default = json.loads(json.dumps(PipelineConfig().to_dict()))
    for value in (None, ["sku"], "de"):
        now = json.loads(json.dumps(PipelineConfig(bm25_stopwords=value).to_dict()))
        assert first_changed_step(default, now) == ("index", ["bm25_stopwords"]), value
    # None is recorded as null, the default not at all: they still differ (and the same
    # holds for bm25_language=None, which read as unchanged)
    no_stem = json.loads(json.dumps(PipelineConfig(bm25_language=None).to_dict()))
    assert first_changed_step(default, no_stem) == ("index", ["bm25_language"])
    assert first_changed_step(default, default) == (None, [])


def test_a_resumed_run_with_other_stopwords_rebuilds_the_index(
    tmp_path, tiny_corpus, make_config, caplog
):
    skip = ("encoder", "fusion", "reranker", "decoder", "evaluate", "report")

    def pipeline(config, lines, resume=False):
        return TuningPipeline(
            tiny_corpus["docs"],
            tmp_path,
            queries=tiny_corpus["queries"],
            config=config,
            skip=skip,
            resume=resume,
            echo=lines.append,
        )

    first: list[str] = []
    pipeline(make_config(), first).run(until="index")
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.pipeline.state"):
        result = pipeline(make_config(bm25_stopwords=None), lines, resume=True).run()
    assert "the settings changed (bm25_stopwords)" in caplog.text
    assert "redoing index" in caplog.text
    assert any("parse: done in an earlier run" in x for x in lines)  # what it does not shape
    assert not any("index: done in an earlier run" in x for x in lines)
    bundle = load_bundle(result.bundle_path, verify=False)
    assert bundle.retriever.sparse_retriever.tokenizer.stopwords_spec is None
    assert bundle.manifest["config"]["bm25_stopwords"] is None


def test_a_refresh_keeps_the_bundle_stopwords(stopword_run, caplog):
    from llama_index_ragtune.pipeline.refresh import _refresh_config

    _, bundle, _ = stopword_run
    assert _refresh_config(bundle.manifest, bundle.path, None, None).bm25_stopwords == WORDS
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.pipeline.refresh"):
        config = _refresh_config(bundle.manifest, bundle.path, PipelineConfig(), None)
    assert config.bm25_stopwords == WORDS
    assert config.bm25_kwargs() == {"analyzer": "plain", "stopwords": WORDS}
    assert "BM25 stopwords ['sku', 'pcs'] is kept (the config asked for 'language')" in caplog.text
    # a bundle from before the setting: the language's list, no warning
    old = json.loads(json.dumps(bundle.manifest))
    del old["config"]["bm25_stopwords"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.pipeline.refresh"):
        assert (
            _refresh_config(old, bundle.path, PipelineConfig(), None).bm25_stopwords == "language"
        )
    assert "BM25 stopwords" not in caplog.text
    # a manifest edited to a value no config takes: named, as a bundle error
    bad = json.loads(json.dumps(bundle.manifest))
    bad["config"]["bm25_stopwords"] = 5
    with pytest.raises(BundleError, match="bm25_stopwords"):
        _refresh_config(bad, bundle.path, PipelineConfig(), None)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("bm25_stopwords", "language", "'config.bm25_stopwords' says 'en'"),
        ("bm25_stopwords", ["sku"], "'config.bm25_stopwords' says ['sku']"),
        ("bm25_language", "german", "'config.bm25_language' says 'german'"),
        ("bm25_stopwords", "klingon", "'config.bm25_stopwords' is not valid"),
        # a long list is named by its first words and its length, not printed whole
        ("bm25_stopwords", [f"w{i}" for i in range(5000)], "'w7', '... (5000 words)']"),
    ],
)
def test_a_manifest_that_disagrees_with_its_index_is_refused(
    stopword_run, tmp_path, field, value, words
):
    result, _, _ = stopword_run
    copy = tmp_path / "v1"
    shutil.copytree(result.bundle_path, copy, symlinks=True)
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text("utf-8"))
    if value == "language":
        del manifest["config"][field]  # the default: the language's list
    else:
        manifest["config"][field] = value
    manifest_path.write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(BundleError, match="manifest.json") as caught:
        load_bundle(copy, verify=False, llm=_mock_llm())
    assert words in str(caught.value)
    assert "index" in str(caught.value) or "not valid" in str(caught.value)


def _mock_llm():
    from llama_index.core.llms import MockLLM

    return MockLLM()
