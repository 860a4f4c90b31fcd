"""The feedback -> refresh loop under hostile or poisoned feedback and hostile arguments.

Held-out questions must never be trained on, in whatever form users ask them again;
preference pairs must not be made of blank or identical answers; wrong arguments
must fail naming the argument before any work is done.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta, timezone

import pytest
from fb_helpers import TEXTS, sources
from llama_index.core.schema import TextNode

from llama_index_ragtune.data.schema import normalize_text
from llama_index_ragtune.feedback import FeedbackStore, feedback_query_id, is_eval_query
from llama_index_ragtune.pipeline.queries import LabelledQuery
from llama_index_ragtune.pipeline.refresh_data import feedback_split, merge_queries

T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
NODES = [
    TextNode(
        id_=node_id,
        text=text,
        metadata={"store": "grocery" if node_id[0] in "gx" else "electronics"},
    )
    for node_id, text in TEXTS.items()
]


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.sqlite") as opened:
        yield opened


def _split_apart(fraction: float) -> str:
    """A question whose grocery record and unfiltered record land on different sides."""
    for i in range(1000):
        text = f"apple return policy number {i}?"
        sides = {
            is_eval_query(feedback_query_id(text, meta, ("store",)), fraction)
            for meta in ({"store": "grocery"}, {})
        }
        if len(sides) == 2:
            return text
    raise AssertionError("no such question")


def _leaks(queries: list[LabelledQuery]) -> list[str]:
    held = {normalize_text(q.question) for q in queries if q.split == "test"}
    return [
        q.question for q in queries if q.split == "train" and normalize_text(q.question) in held
    ]


def test_a_held_out_question_asked_again_without_its_filter_is_not_trained_on(store):
    text = _split_apart(0.5)
    for minutes, (variant, meta) in enumerate(
        [
            (text, {"store": "grocery"}),
            # the same question again: unfiltered, NFD, full width, other spacing and case
            (unicodedata.normalize("NFD", text.upper()), {}),
            ("\uff41" + text[1:].replace(" ", "   "), {"store": None}),
        ]
    ):
        store.record(
            variant,
            retrieved=sources("g1", "e1"),
            cited_node_ids=["g1"],
            rating=1,
            metadata=meta,
            created_at=T0 + timedelta(minutes=minutes),
        )
    store.record(  # another question, so that training has something left
        "delivery time?", retrieved=sources("x"), cited_node_ids=["x"], rating=1, created_at=T0
    )
    said: list[str] = []
    queries = feedback_split(store, NODES, ("store",), 0.5, 0, said.append)
    assert [q.question for q in queries if q.split == "test"]  # held out once
    assert _leaks(queries) == []  # was: trained on under the other filters
    assert any("1 training question(s) left out" in line for line in said)


def test_an_earlier_test_question_asked_in_one_store_is_not_trained_on():
    def q(qid, question, split, source, filters):
        return LabelledQuery(
            id=qid,
            question=question,
            gold_node_ids=["n1"],
            filters=filters,
            split=split,
            source=source,
        )

    feedback = [
        q("f1", "When are oranges in season", "train", "feedback", {"store": "grocery"}),
        q("f2", "tv wall mounting price?", "test", "feedback", {"store": "electronics"}),
    ]
    earlier = [
        q("e1", "when are oranges in season?", "test", "file", {}),  # asked of no store
        q("e2", "TV wall mounting price", "train", "file", {}),
        q("e3", "tv wall mounting price", "train", "file", {"store": "grocery"}),  # contradicts
    ]
    said: list[str] = []
    merged = merge_queries(feedback, earlier, said.append)
    assert {x.id for x in merged if x.split == "train"} == {"e3"}  # was: f1, e2, e3
    assert said == [
        "[refresh] 2 training question(s) left out: the same question is held out "
        "(feedback test side or the earlier test split)"
    ]


def test_refresh_names_a_bare_string_for_keys_and_a_text_eval_fraction(store, tmp_path):
    from llama_index_ragtune.pipeline import refresh_bundle

    store.record("q?", retrieved=sources("g1"), cited_node_ids=["g1"], rating=1)
    missing = tmp_path / "no-bundle"  # checked first: no bundle needed
    with pytest.raises(TypeError, match=r"keys must be a list .*\(\"store\",\)"):
        refresh_bundle(missing, store, tmp_path / "r", keys="store")  # was: s, t, o, r, e
    with pytest.raises(TypeError, match=r"eval_fraction must be a number .* str '0.2'"):
        refresh_bundle(missing, store, tmp_path / "r", eval_fraction="0.2")  # was: raw '<'
    with pytest.raises(ValueError, match="eval_fraction"):
        refresh_bundle(missing, store, tmp_path / "r", eval_fraction=float("nan"))
    assert not (tmp_path / "r").exists()
    with pytest.raises(TypeError, match=r"keys must be a list"):
        feedback_split(store, NODES, keys="store")
    said: list[str] = []
    feedback_split(store, NODES, keys=("stroe",), eval_fraction=0.01, echo=said.append)
    assert said[0].startswith("feedback: key(s) ['stroe'] are metadata of no node")


def test_exports_name_a_corpus_of_the_wrong_kind(store):
    store.record("q?", retrieved=sources("g1"), cited_node_ids=["g1"], rating=1)
    for corpus, where in (
        (["g1 text", "e1 text"], r"corpus\[0\] must be a LlamaIndex node"),  # was AttributeError
        ("g1 text", "corpus must be a"),
        ({"g1": None}, r"corpus\['g1'\] must be the node's text"),
    ):
        with pytest.raises(TypeError, match=where):
            store.to_retrieval_dataset(corpus=corpus)


def test_an_export_emptied_by_the_split_says_so(store):
    for i in range(3):
        store.record(f"q{i}?", retrieved=sources("g1"), cited_node_ids=["g1"], rating=1)
    with pytest.raises(ValueError, match=r"other 3 selected records are on the held-out side"):
        store.to_retrieval_dataset(split="train", eval_fraction=1.0)  # was: "collect ratings"
    with pytest.raises(ValueError, match="raise eval_fraction"):
        store.to_evaluation_set(eval_fraction=0.0)


def test_preference_pairs_leave_out_blank_and_restyled_answers(store):
    q = "apple return policy?"
    for minutes, (answer, rating) in enumerate(
        [
            ("Within 7 days [1].", 1),
            ("Within  7 days [1]. ", -1),  # the upvoted answer, other spacing: contested
            (unicodedata.normalize("NFD", "Café: 14 days [2]."), 1),
            ("Café: 14 days [2].", -1),  # NFC of the one above: contested
            ("", 1),  # blank answers: never chosen or rejected
            ("  \n ", -1),
            (None, -1),  # a stream stopped early
            ("Within 14 days [2].", -1),
        ]
    ):
        store.record(
            q,
            retrieved=sources("g1", "e1"),
            answer=answer,
            rating=rating,
            metadata={"stream_closed_early": True} if answer is None else None,
            created_at=T0 + timedelta(minutes=minutes),
        )
    pairs = store.to_preference_pairs()
    got = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in pairs]
    assert got == []  # was 8 pairs: blank chosen / rejected, 7 days over 7 days
    store.record(q, retrieved=sources("g1", "e1"), answer="Fresh apples: 7 days [1].", rating=1)
    got = [
        (r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in store.to_preference_pairs()
    ]
    assert got == [("Fresh apples: 7 days [1].", "Within 14 days [2].")]


def test_poisoned_feedback_stays_one_question_with_its_counts(store):
    spam = [
        {
            "query": "apple return policy?",
            "retrieved": sources("e1", "g1"),
            "clicked_node_ids": ["e1"],
            "created_at": T0,
        }
    ] * 2000
    honest = [
        {
            "query": "Apple return policy",
            "retrieved": sources("g1", "e1"),
            "cited_node_ids": ["g1"],
            "rating": 1,
            "created_at": T0,
        },
        {"query": "delivery?", "retrieved": sources("x"), "cited_node_ids": ["x"], "rating": 1},
    ]
    store.record_many([*spam, *honest])
    data = store.to_retrieval_dataset()
    assert len(data) == 2 and data.metadata["records"] == 2002
    assert sorted(data.relevant_docs.values()) == [["e1", "g1"], ["x"]]  # one row per node
    # a click on a node the bundle no longer has is dropped and counted
    said: list[str] = []
    current = [n for n in NODES if n.node_id != "e1"]
    queries = feedback_split(store, current, (), 0.01, 0, said.append)
    assert all("e1" not in q.gold_node_ids for q in queries)
    assert any(line.startswith("feedback: 1 positive node(s) are not among") for line in said)


def _pipeline_helpers():
    """``tests/pipeline/conftest.py`` (the tiny two-store help centre), loaded by path."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "pipeline" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tiny_help_centre", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_refresh_on_poisoned_feedback_trains_on_no_held_out_question(
    tmp_path, tiny_encoder_path, tiny_causal_lm_path
):
    from llama_index.core.schema import NodeWithScore

    from llama_index_ragtune.pipeline import bundle_versions, load_bundle, refresh_bundle
    from llama_index_ragtune.pipeline.queries import read_saved_queries

    tiny = _pipeline_helpers()
    corpus = tiny.write_corpus(tmp_path / "corpus")
    config = tiny.fast_config(tiny_encoder_path, tiny_causal_lm_path)
    shop = tiny.run_tiny_pipeline(tmp_path / "shop", corpus, config)["out"]
    bundle = load_bundle(shop)
    nodes = list(bundle.retriever.index.docstore.docs.values())
    by_section = {(n.ref_doc_id, n.metadata.get("section_path")): n for n in nodes}
    ghost = TextNode(id_="ghost-node", text="A page of another bundle.", metadata={})
    db = tmp_path / "feedback.sqlite"
    with FeedbackStore(db) as store:
        for question, name, doc, section, _answer in tiny.QUESTIONS:
            if name is None:
                continue
            gold = by_section[(doc, section)]
            other = next(n for n in nodes if n.metadata.get("store") == name and n is not gold)
            shown = [NodeWithScore(node=gold, score=0.9), NodeWithScore(node=other, score=0.5)]
            for variant, meta in (
                (question, {"store": name}),
                # asked again: no store, another case and Unicode form, from an older bundle
                (unicodedata.normalize("NFD", question.upper() + " ?"), {}),
            ):
                rid = store.record(variant, retrieved=shown, metadata=meta, bundle_version="v0")
                store.click(rid, gold.node_id)
            # contradictory ratings, a refusal and a stream stopped early on the same sources
            store.record(question, retrieved=shown, answer="No.", refused=True, rating=-1)
            store.record(question, retrieved=shown, answer=None, rating=1, metadata={"store": name})
            # a page of another bundle, clicked and upvoted
            store.record(
                question,
                retrieved=[NodeWithScore(node=ghost, score=1.0), *shown],
                cited_node_ids=["ghost-node"],
                clicked_node_ids=["ghost-node"],
                rating=1,
                metadata={"store": name},
            )
        spam = {
            "query": "apple return policy?",
            "retrieved": [
                NodeWithScore(node=by_section[("grocery/produce.md", "Fresh Produce > Apples")])
            ],
            "clicked_node_ids": [
                by_section[("grocery/produce.md", "Fresh Produce > Apples")].node_id
            ],
            "metadata": {"store": "grocery"},
        }
        store.record_many([spam] * 300)

    lines: list[str] = []
    result = refresh_bundle(
        shop, db, tmp_path / "r", margin=1.0, eval_fraction=0.5, echo=lines.append
    )
    assert not result.promoted and bundle_versions(shop) == ["v1"]
    queries = read_saved_queries(tmp_path / "r" / "work" / "data" / "queries.json")
    held = {}
    for q in queries:
        if q.split == "test":
            held.setdefault(normalize_text(q.question), []).append(q.filters)
    leaked = [
        (q.question, q.filters)
        for q in queries
        if q.split == "train"
        and any(
            all(f.get(k) == q.filters.get(k) for k in f.keys() & q.filters.keys())
            for f in held.get(normalize_text(q.question), ())
        )
    ]
    assert leaked == []
    assert all("ghost-node" not in q.gold_node_ids for q in queries)
    assert any("positive node(s) are not among the current nodes" in line for line in lines)
    assert result.questions["feedback_train"] > 0 and result.questions["feedback_test"] > 0
