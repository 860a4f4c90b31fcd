"""Round s45: a user evaluator whose output promotion cannot compare is refused before training
(and one that fails after training leaves the trained model in challenger/); a
sentence-transformers reranking evaluator's prefixed primary metric decides promotion;
``ragtune tune/demo --skip`` with a blank step name; node ids with control characters in the
feedback store."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")

from llama_index_ragtune.cli import main  # noqa: E402
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine  # noqa: E402
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine  # noqa: E402
from tests.finetuning.conftest import FAST, toy_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return toy_dataset()


@pytest.fixture(scope="module")
def val():
    return toy_dataset(seed=1).subset([f"q{i}" for i in range(4)])


@pytest.fixture(scope="module")
def bert_folder(tiny_encoder_path) -> str:
    """The tiny BERT as a plain Hugging Face folder (a cross-encoder gets a new head)."""
    return str(Path(tiny_encoder_path).parent / "hf")


class Calls:
    """An evaluator returning ``outputs[i]`` on its i-th call (the last one after that)."""

    def __init__(self, *outputs):
        self.outputs, self.calls = list(outputs), 0

    def __call__(self, model):
        self.calls += 1
        out = self.outputs[min(self.calls, len(self.outputs)) - 1]
        if isinstance(out, Exception):
            raise out
        return out


def _encoder(data, val, model, out, **options) -> EncoderFinetuneEngine:
    return EncoderFinetuneEngine(
        data, model=model, val_dataset=val, budget=None, fusion=None, eval_points=0,
        args=EncoderFinetuneEngine.default_args(out, **FAST), show_progress=False, **options,
    )  # fmt: skip


def _reranker(data, val, model, out, **options) -> RerankerFinetuneEngine:
    candidates = {q: list(val.corpus)[:8] for q in val.query_ids}
    return RerankerFinetuneEngine(
        data, model=model, val_dataset=val, candidates=candidates, rerank_depth=8, budget=None,
        eval_points=0, args=RerankerFinetuneEngine.default_args(out, **FAST),
        show_progress=False, **options,
    )  # fmt: skip


# ------------------------------------------------ 1. user evaluator output: before training


@pytest.mark.parametrize(
    ("output", "options", "error", "named"),
    [
        (None, {}, TypeError, "returned NoneType None"),
        ("0.5", {}, TypeError, "returned str '0.5'"),
        ({"ndcg@10": "0.5"}, {}, TypeError, "'ndcg@10': str '0.5'"),
        ({"ndcg@10": None}, {}, TypeError, "'ndcg@10': NoneType None"),
        ({"ndcg@10": [0.5]}, {}, TypeError, "'ndcg@10': list [0.5]"),
        ({"ndcg@10": True}, {}, TypeError, "'ndcg@10': bool True"),
        (float("nan"), {}, ValueError, "gave score = nan"),
        ({"val_ndcg@10": float("nan")}, {}, ValueError, "gave ndcg@10 = nan"),
        ({}, {}, ValueError, "has no 'ndcg@10' (it returned no metric)"),
        ({"acc": 0.5}, {"decision_metric": "ndcg@10"}, ValueError, "has no 'ndcg@10'"),
    ],
)
def test_an_encoder_evaluator_output_promotion_cannot_compare_is_refused_before_training(
    data, val, tiny_encoder_path, tmp_path, output, options, error, named
):
    # were: a text value crashed decide_promotion after training (nothing saved); NaN, {} or
    # a dict without the decision metric trained, then "kept: no validation ... for both"
    evaluator = Calls(output)
    engine = _encoder(data, val, tiny_encoder_path, tmp_path, evaluator=evaluator, **options)
    with pytest.raises(error, match="EncoderFinetuneEngine: the evaluator") as caught:
        engine.finetune()
    assert named in str(caught.value)
    assert "{'ndcg@10': 0.42}" in str(caught.value) or "no time was spent" in str(caught.value)
    assert evaluator.calls == 1 and engine.trainer is None  # only the starting model scored
    assert not (tmp_path / "final").exists() and not (tmp_path / "decision.json").exists()


def test_a_forced_run_takes_a_nan_start_score_but_not_a_text(
    data, val, tiny_encoder_path, tmp_path
):
    nan = _encoder(
        data, val, tiny_encoder_path, tmp_path / "nan", force_promotion=True,
        evaluator=Calls({"ndcg@10": float("nan")}, {"ndcg@10": 0.5}),
    )  # fmt: skip
    assert nan.finetune().decision.promoted  # forced: nothing to compare, as before
    text = _encoder(
        data, val, tiny_encoder_path, tmp_path / "text", force_promotion=True,
        evaluator=Calls({"ndcg@10": "n/a"}),
    )  # fmt: skip
    with pytest.raises(TypeError, match="'ndcg@10': str 'n/a'"):
        text.finetune()
    assert text.trainer is None


def test_a_working_user_evaluator_decides_as_before(data, val, tiny_encoder_path, tmp_path):
    import numpy as np

    evaluator = Calls({"val_ndcg@10": np.float32(0.25), "val_mrr@10": 0.5}, {"val_ndcg@10": 0.75})
    result = _encoder(data, val, tiny_encoder_path, tmp_path, evaluator=evaluator).finetune()
    assert result.before == {"ndcg@10": 0.25, "mrr@10": 0.5} and result.after == {"ndcg@10": 0.75}
    assert result.decision.metric == "ndcg@10" and result.decision.promoted
    assert (tmp_path / "final" / "modules.json").is_file()


# ------------------------------------------ 1. user evaluator fails after training: kept


@pytest.mark.parametrize("after", [{"ndcg@10": "0.9"}, RuntimeError("GPU fell off")])
def test_an_encoder_evaluator_failing_after_training_leaves_the_model_in_challenger(
    data, val, tiny_encoder_path, tmp_path, after
):
    from sentence_transformers import SentenceTransformer

    evaluator = Calls({"ndcg@10": 0.5}, after)
    engine = _encoder(data, val, tiny_encoder_path, tmp_path, evaluator=evaluator)
    with pytest.raises(RuntimeError, match="validating the trained model failed") as caught:
        engine.finetune()
    assert f"saved in {tmp_path / 'challenger'}" in str(caught.value)
    assert engine.trainer.state.global_step == 2
    trained = SentenceTransformer(str(tmp_path / "challenger"), device="cpu")
    assert all(
        (a == b).all()
        for a, b in zip(
            trained.state_dict().values(), engine.model.state_dict().values(), strict=True
        )
    )  # the trained weights, not the starting ones
    assert not (tmp_path / "final").exists() and not (tmp_path / "decision.json").exists()


def test_a_reranker_evaluator_failing_after_training_leaves_the_model_in_challenger(
    data, val, bert_folder, tmp_path
):
    evaluator = Calls({"ndcg@10": 0.5}, {"ndcg@10": float("inf"), "x": "?"})
    engine = _reranker(data, val, bert_folder, tmp_path, evaluator=evaluator)
    with pytest.raises(RuntimeError, match=r"'x': str '\?'"):
        engine.finetune()
    assert (tmp_path / "challenger" / "config.json").is_file()
    assert not (tmp_path / "final").exists()


def test_a_reranker_evaluator_without_the_metric_is_refused_before_training(
    data, val, bert_folder, tmp_path
):
    evaluator = Calls({"accuracy": 0.5})
    engine = _reranker(data, val, bert_folder, tmp_path, evaluator=evaluator)
    with pytest.raises(ValueError, match=r"has no 'ndcg@10' \(it returned \['accuracy'\]\)"):
        engine.finetune()
    assert evaluator.calls == 1 and engine.trainer is None


# ------------------------------ an ST reranking evaluator's prefixed primary metric decides


def test_a_named_sentence_transformers_reranking_evaluator_decides_promotion(
    data, val, bert_folder, tmp_path
):
    # CrossEncoderRerankingEvaluator(name="dev") renames its primary metric "dev_ndcg@10" once
    # called; its values were read unprefixed, so promotion found no "dev_ndcg@10" for either
    # model and always kept the first stage, whatever training did
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    samples = [
        {
            "query": val.queries[q],
            "positive": [val.corpus[d] for d in val.relevant_docs[q]],
            "documents": list(val.corpus.values())[:8],
        }
        for q in val.query_ids
    ]
    evaluator = CrossEncoderRerankingEvaluator(samples, name="dev", write_csv=False)
    result = _reranker(data, val, bert_folder, tmp_path, evaluator=evaluator).finetune()
    decision = result.decision
    assert decision.metric == "ndcg@10"
    assert math.isfinite(decision.champion) and math.isfinite(decision.challenger)
    assert "no validation" not in decision.reason


# ---------------------------------------------------------- 3. --skip with a blank name


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Returns\n\nApples can be returned within 7 days.\n")
    return folder


@pytest.mark.parametrize("skip", ["", ",", " ", "encoder,", "encoder,,decoder", " , decoder"])
@pytest.mark.parametrize("command", ["tune", "demo"])
def test_a_blank_skip_step_is_a_usage_error(command, skip, docs, tmp_path, capsys):
    # was: `--skip ""` (an unset "$STEPS") skipped nothing, silently, and trained every step
    out = tmp_path / "out"
    argv = [command, "--out", str(out), "--skip", skip]
    if command == "tune":
        argv += ["--docs", str(docs)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"ragtune {command}: error: argument --skip: {skip!r} holds a blank step name" in err
    assert "encoder, fusion, reranker, decoder, evaluate, report" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_skip_names_still_parse(docs, tmp_path):
    from llama_index_ragtune.cli import _build_parser
    from llama_index_ragtune.commands.tune import check_pipeline_options, skip_of

    argv = ["tune", "--docs", str(docs), "--out", str(tmp_path / "o")]
    args = _build_parser(argv).parse_args([*argv, "--skip", "Decoder ,report"])
    check_pipeline_options(args)
    assert skip_of(args) == ["Decoder", "report"]


# ----------------------------------------- 5. node ids with control characters: faithful


@pytest.mark.parametrize("node_id", ["a\x00b", "\x00", "a\nb", "a\x1bb", "a\x7fb", "a\x85b"])
def test_a_node_id_with_control_characters_round_trips(tmp_path, node_id):
    # node ids are opaque keys (the store refuses only what it cannot encode, a lone
    # surrogate): one holding NUL or a line break is stored as given and read back the same
    # through every read path and a JSON export
    sys.path.insert(0, str(Path(__file__).parents[1] / "feedback"))
    from fb_helpers import sources

    from llama_index_ragtune.data.schema import RetrievalDataset
    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        rid = store.record(
            "apple return policy?",
            retrieved=sources(node_id, "e1", texts={node_id: "Apples: 7 days."}),
            cited_node_ids=[node_id],
            answer="7 days [1].",
        )
        store.rate(rid, 1)
        store.click(rid, node_id)
        record = store.get(rid)
        assert record.retrieved[0].node_id == node_id
        assert record.cited_node_ids == (node_id,) and record.clicked_node_ids == (node_id,)
        assert store.node_text(node_id) == "Apples: 7 days."
        train = store.to_retrieval_dataset()
        assert list(train.relevant_docs.values()) == [[node_id]]
        train.save_json(tmp_path / "train.json")
        back = RetrievalDataset.load_json(tmp_path / "train.json")
        assert back.corpus[node_id] == "Apples: 7 days."
        assert list(back.relevant_docs.values()) == [[node_id]]
        assert json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))


# ------------------------------- 4. SciFact: an index past the abstract's end is named


def test_a_scifact_index_past_the_abstract_is_read_as_its_last_sentence_and_named(tmp_path, caplog):
    # kept, not refused: the released test split has two such indices (claims 261 and 1062,
    # one past the end: the sentence splitter joins two of their abstracts' sentences); the
    # log now names the claim, document and index instead of only counting them
    import logging

    from llama_index_ragtune.data.scifact import load_scifact_claims

    root = tmp_path / "sf"
    (root / "qrels").mkdir(parents=True)
    abstract = {"_id": "d1", "title": "T", "text": "Statins lower LDL. They are cheap."}
    (root / "corpus.jsonl").write_text(json.dumps(abstract) + "\n", encoding="utf-8")
    claim = {
        "_id": "c7",
        "text": "Statins are cheap.",
        "metadata": {"d1": [{"label": "SUPPORT", "sentences": [2]}]},
    }
    (root / "queries.jsonl").write_text(json.dumps(claim) + "\n", encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("c7\td1\t1\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="llama_index_ragtune.data.scifact"):
        claims, _ = load_scifact_claims(root)
    assert claims[0].evidence == ["They are cheap."]
    assert "claim 'c7', doc 'd1', index 2" in caplog.text
