"""`refresh` and `rollback` on the tiny two-store corpus (tiny models, real SQLite feedback).

Simulated users ask the corpus's labelled questions through ``FeedbackQueryEngine``
on the tuned bundle, open the gold source when it is shown and rate the answer; a
refresh then retrains from that log. The demo-corpus version is the slow tier
(``test_refresh_demo_slow.py``).
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import QUESTIONS  # tests/pipeline/conftest.py

from llama_index_ragtune.cli import main
from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
from llama_index_ragtune.pipeline import (
    BundleError,
    RefreshError,
    bundle_versions,
    current_version,
    load_bundle,
    read_history,
    refresh_bundle,
    rollback_bundle,
)


def simulate_day(bundle_out, db_path, rounds=2):
    """Users of both stores ask the labelled questions; each opens the gold source when it
    is shown, rates the answer up when it cites it, and down when no gold was shown."""
    bundle = load_bundle(bundle_out)
    nodes = list(bundle.retriever.index.docstore.docs.values())
    by_section = {(n.ref_doc_id, n.metadata.get("section_path")): n.node_id for n in nodes}
    store = FeedbackStore(db_path)
    engines = {
        name: FeedbackQueryEngine(
            # every page of a store is shown (max_sources), so which questions get a
            # positive does not hang on how tiny random models happen to rank
            bundle.as_query_engine(filters={"store": name}, max_sources=6),
            store,
            bundle_version=bundle.version,
            metadata={"store": name},
        )
        for name in ("grocery", "electronics")
    }
    events = {"up": 0, "down": 0, "click": 0}
    for _ in range(rounds):
        for question, name, doc, section, _answer in QUESTIONS:
            if name is None:
                continue
            gold = by_section[(doc, section)]
            response = engines[name].query(question)
            fid = response.metadata["feedback_id"]
            if gold in [n.node.node_id for n in response.source_nodes]:
                store.click(fid, gold)
                events["click"] += 1
                if gold in response.metadata["cited_node_ids"]:
                    store.rate(fid, +1)
                    events["up"] += 1
            else:
                store.rate(fid, -1)
                events["down"] += 1
    store.close()
    return events


@pytest.fixture(scope="module")
def day(tuned_run, tmp_path_factory):
    """The tuned run's output folder (bundle v1) and a day of feedback on it, recorded once."""
    root = tmp_path_factory.mktemp("day")
    shutil.copytree(tuned_run["out"], root / "shop")
    events = simulate_day(root / "shop", root / "feedback.sqlite")
    assert events["click"] > 0
    return root


@pytest.fixture
def shop(day, tmp_path):
    """A private copy of the bundle folder (refreshes add versions to it)."""
    return shutil.copytree(day / "shop", tmp_path / "shop")


@pytest.fixture
def feedback_db(day, tmp_path):
    return shutil.copy(day / "feedback.sqlite", tmp_path / "feedback.sqlite")


def test_a_refresh_that_does_not_win_keeps_the_bundle_and_records_why(shop, feedback_db, tmp_path):
    lines: list[str] = []
    result = refresh_bundle(
        shop, feedback_db, tmp_path / "r", margin=1.0, eval_fraction=0.3, echo=lines.append
    )
    assert not result.promoted and result.served_version == "v1" == current_version(shop)
    assert bundle_versions(shop) == ["v1"]
    assert result.decision.reason.startswith("kept bundle v1")
    assert "held-out feedback questions" in result.decision.reason
    assert result.questions["feedback_train"] > 0 and result.questions["feedback_test"] > 0
    assert result.questions["earlier_train"] > 0  # the bundle's own labelled questions
    for name in ("feedback", "earlier"):
        pair = result.metrics[name]
        assert (
            set(pair["champion"]) == set(pair["challenger"]) == {"ndcg@10", "recall@10", "mrr@10"}
        )
    # the bundle serves a reranker, so the refresh retrained it from the bundle's own
    assert result.parts["reranker"] is not None and result.parts["decoder"] is None
    record = json.loads((tmp_path / "r" / "refresh.json").read_text())
    assert record["promoted"] is False and record["served"] == "v1"
    assert (tmp_path / "r" / "evaluation.json").is_file()
    history = read_history(shop)
    assert [e["action"] for e in history] == ["refresh"] and history[0]["promoted"] is False
    assert any(line.startswith("[refresh] decision: kept bundle v1") for line in lines)


def test_a_promoted_refresh_writes_the_next_version_and_rollback_restores_it(
    shop, feedback_db, tmp_path
):
    result = refresh_bundle(shop, feedback_db, tmp_path / "r", force=True, eval_fraction=0.3)
    assert result.promoted and result.decision.forced
    assert result.served_version == "v2" == current_version(shop)
    bundle = load_bundle(shop)  # verifies every file of the new version
    manifest = bundle.manifest
    assert manifest["parent"] == "v1" and manifest["refresh"]["champion"] == "v1"
    assert manifest["data"]["queries"]["source"] == "feedback"
    # every model is in the new folder: refreshed, or carried over from v1
    for part, marker in (("encoder", "modules.json"), ("decoder", "config.json")):
        assert manifest["models"][part]["path"] == part
        assert (bundle.path / part / marker).is_file()
    assert (bundle.path / "reranker").is_dir() and bundle.postprocessors
    assert (bundle.path / "report" / "report.html").is_file()
    response = bundle.as_query_engine(filters={"store": "grocery"}).query("apple return policy?")
    assert {n.node.metadata["store"] for n in response.source_nodes} == {"grocery"}

    assert rollback_bundle(shop) == "v1"
    assert load_bundle(shop).version == "v1" and bundle_versions(shop) == ["v1", "v2"]
    last = read_history(shop)[-1]
    assert (last["action"], last["from"], last["served"]) == ("rollback", "v2", "v1")
    assert rollback_bundle(shop, to="v2") == "v2"
    with pytest.raises(BundleError, match="no version 'v99'"):
        rollback_bundle(shop, to="v99")
    rollback_bundle(shop, to="v1")
    with pytest.raises(BundleError, match="oldest version"):
        rollback_bundle(shop)


def test_cli_refresh_and_rollback(shop, feedback_db, tmp_path, capsys):
    args = ["--bundle", str(shop), "--feedback", str(feedback_db), "--eval-fraction", "0.3"]
    assert main(["refresh", *args, "--out", str(tmp_path / "r"), "--margin", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Refresh of bundle v1: nothing promoted" in printed and "Served: bundle v1" in printed
    assert main(["rollback", "--bundle", str(shop), "--to", "v42"]) == 1
    assert "no version 'v42'" in capsys.readouterr().err
    assert main(["rollback", "--bundle", str(shop)]) == 1
    assert "oldest version" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["refresh", "--bundle", str(shop), "--feedback", str(tmp_path / "no.db"), "--out", "x"]
        )
    assert exit_info.value.code == 2 and "file not found" in capsys.readouterr().err


def test_feedback_without_positives_is_a_clear_error(shop, tmp_path):
    db = tmp_path / "empty.sqlite"
    with FeedbackStore(db) as store:
        store.record("apple return policy?", answer="Insufficient information.", refused=True)
    with pytest.raises(RefreshError, match="nothing to learn from"):
        refresh_bundle(shop, db, tmp_path / "r")
    assert bundle_versions(shop) == ["v1"] and read_history(shop) == []
    assert not (tmp_path / "r").exists()  # checked before any folder is made


def test_an_empty_feedback_store_leaves_no_out_folder(shop, tmp_path, capsys):
    db = tmp_path / "none.sqlite"
    FeedbackStore(db).close()
    with pytest.raises(RefreshError, match="holds no records"):
        refresh_bundle(shop, db, tmp_path / "r")
    out = tmp_path / "rf"
    args = ["refresh", "--bundle", str(shop), "--feedback", str(db), "--out", str(out)]
    assert main(args) == 1
    assert "holds no records" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r").exists()
    assert bundle_versions(shop) == ["v1"] and read_history(shop) == []


def test_the_refreshed_bundle_must_win_on_one_held_out_set_and_lose_on_none():
    from llama_index_ragtune.pipeline.refresh_eval import decide

    def sets(feedback, earlier):
        pairs = {"feedback": feedback, "earlier": earlier}
        return {
            name: {"champion": {"ndcg@10": old}, "challenger": {"ndcg@10": new}}
            for name, (old, new) in pairs.items()
        }

    won = decide(sets((0.60, 0.70), (0.50, 0.50)), 0.005, False, "v3")
    assert won.promoted and (won.champion, won.challenger) == (0.60, 0.70)
    assert "better on the held-out feedback questions and not worse" in won.reason
    tied_feedback = decide(sets((1.0, 1.0), (0.65, 0.70)), 0.005, False, "v3")
    assert tied_feedback.promoted and "better on the earlier test questions" in tied_feedback.reason
    regressed = decide(sets((0.60, 0.70), (0.50, 0.40)), 0.005, False, "v3")
    assert not regressed.promoted and "worse on the earlier test questions" in regressed.reason
    within_margin = decide(sets((0.60, 0.603), (0.50, 0.498)), 0.005, False, "v3")
    assert not within_margin.promoted and within_margin.reason.startswith("kept bundle v3")
    forced = decide(sets((0.60, 0.50), (0.50, 0.40)), 0.005, True, "v3")
    assert forced.promoted and forced.forced and "(forced)" in forced.reason
