"""RetrievalDataset: validation, constructors, JSON + LlamaIndex compatibility, split, training rows."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.schema import Negative, RetrievalDataset, stable_query_id

CORPUS = {
    "d1": "Fresh apples can be returned within 7 days.",
    "d2": "Apple iPhones can be returned within 14 days.",
    "d3": "Bread is baked every morning.",
    "d4": "Prescription refills take 24 hours.",
    "d5": "Store opening hours are 8 to 20.",
}


def make(**overrides) -> RetrievalDataset:
    data = dict(
        queries={"q1": "apple return policy?", "q2": "when is bread baked", "q3": "refill time"},
        corpus=dict(CORPUS),
        relevant_docs={"q1": ["d1"], "q2": ["d3"], "q3": ["d4", "d5"]},
        negatives={
            "q1": [Negative("d2", "curated")],
            "q3": [Negative("d1", "bm25", 1.5, 1), Negative("d3", "dense", 0.4, 2)],
        },
    )
    data.update(overrides)
    return RetrievalDataset(**data)


def test_basics_and_iteration():
    ds = make()
    assert len(ds) == 3
    assert ds.num_pairs == 4
    assert ds.num_negatives == 3
    assert ds.negative_sources() == {"curated": 1, "bm25": 1, "dense": 1}
    rows = list(ds)
    qid, query, positives, negatives = rows[2]
    assert (qid, query, positives) == ("q3", "refill time", ["d4", "d5"])
    assert [n.doc_id for n in negatives] == ["d1", "d3"]
    assert rows[1].negatives == []


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"corpus": {}}, "empty corpus"),
        ({"queries": {"q1": "  ", "q2": "when is bread baked", "q3": "x"}}, "'q1'"),
        (
            {"relevant_docs": {"q1": ["d1"], "q2": [], "q3": ["d4"]}},
            "without any positive document: 'q2'",
        ),
        (
            {"relevant_docs": {"q1": ["d1"], "q2": ["nope"], "q3": ["d4"]}},
            "missing from the corpus: 'nope'",
        ),
        ({"negatives": {"q1": [Negative("ghost", "bm25")]}}, "'ghost'"),
        ({"negatives": {"q1": [Negative("d1", "bm25")]}}, "'q1:d1'"),
        ({"negatives": {"qX": [Negative("d1", "bm25")]}}, "'qX'"),
    ],
)
def test_validation_errors_name_the_ids(overrides, needle):
    with pytest.raises(ValueError) as err:
        make(**overrides)
    assert needle in str(err.value)


def test_validation_reports_first_ids_and_count():
    queries = {f"q{i}": f"query {i}" for i in range(12)}
    with pytest.raises(ValueError) as err:
        RetrievalDataset(queries=queries, corpus=CORPUS, relevant_docs={})
    assert "'q0'" in str(err.value) and "(12 in total)" in str(err.value)
    assert "'q11'" not in str(err.value)


def test_from_pairs_with_nodes_and_stable_ids():
    nodes = [
        TextNode(id_="n1", text="Apples return in 7 days.", metadata={"department": "grocery"}),
        TextNode(
            id_="n2", text="iPhones return in 14 days.", metadata={"department": "electronics"}
        ),
    ]
    pairs = [
        ("Apple return policy?", ["n1"]),
        ("apple return policy", "n2"),
        ("iphone returns", ["n2"]),
    ]
    ds = RetrievalDataset.from_pairs(pairs, nodes)
    again = RetrievalDataset.from_pairs(pairs, nodes)
    assert ds.queries == again.queries
    qid = stable_query_id("Apple return policy?")
    assert qid == stable_query_id("apple  RETURN policy")
    assert ds.relevant_docs[qid] == ["n1", "n2"]  # same normalised query: positives merged
    assert len(ds) == 2
    assert "grocery" in ds.corpus["n1"]  # embed-mode text carries the metadata
    plain = RetrievalDataset.from_pairs(pairs, nodes, metadata_mode="none")
    assert plain.corpus["n1"] == "Apples return in 7 days."


def test_from_pairs_errors():
    with pytest.raises(ValueError, match="pair #0"):
        RetrievalDataset.from_pairs(["just a string"], CORPUS)
    with pytest.raises(ValueError, match="'zz'"):
        RetrievalDataset.from_pairs([("q", ["zz"])], CORPUS)
    with pytest.raises(ValueError, match="no queries"):
        RetrievalDataset.from_pairs([], CORPUS)


def test_json_round_trip_keeps_negatives(tmp_path):
    ds = make()
    path = tmp_path / "ds.json"
    ds.save_json(path)
    raw = json.loads(path.read_text())
    assert raw["format_version"] == 1
    back = RetrievalDataset.load_json(path)
    assert back.queries == ds.queries and back.corpus == ds.corpus
    assert back.relevant_docs == ds.relevant_docs and back.negatives == ds.negatives


def test_llama_index_layout_round_trip(tmp_path):
    ds = make()
    path = tmp_path / "li.json"
    with pytest.warns(UserWarning, match="drops 3 negatives"):
        ds.save_json(path, format="llama_index")
    assert set(json.loads(path.read_text())) == {"queries", "corpus", "relevant_docs", "mode"}
    back = RetrievalDataset.load_json(path)
    assert back.relevant_docs == ds.relevant_docs and back.negatives == {}

    li = ds.to_llama_index()
    li_path = tmp_path / "li_native.json"
    li.save_json(str(li_path))
    assert type(li).from_json(str(li_path)).relevant_docs == ds.relevant_docs
    assert RetrievalDataset.load_json(li_path).queries == ds.queries
    assert RetrievalDataset.from_llama_index(li).corpus == ds.corpus


def test_same_class_as_llama_index_finetuning():
    try:
        from llama_index.finetuning import EmbeddingQAFinetuneDataset
    except Exception:  # noqa: BLE001 - not installed or broken install
        pytest.skip("llama-index-finetuning not importable")
    assert isinstance(make().to_llama_index(), EmbeddingQAFinetuneDataset)


def test_loads_generate_qa_embedding_pairs_output(tmp_path):
    """A file made by llama-index-finetuning's own generator loads into ours."""
    if importlib.util.find_spec("llama_index.finetuning") is None:
        pytest.skip("llama-index-finetuning not installed")
    try:
        from llama_index.finetuning import generate_qa_embedding_pairs
    except Exception:  # noqa: BLE001
        pytest.skip("llama-index-finetuning not importable")
    from llama_index.core.llms import MockLLM

    nodes = [TextNode(id_=f"n{i}", text=f"Passage number {i} about topic {i}.") for i in range(3)]
    out = tmp_path / "qa_finetune_dataset.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_qa_embedding_pairs(
            nodes,
            llm=MockLLM(),
            qa_generate_prompt_tmpl="Q1 about {context_str}\nQ2 {num_questions_per_chunk}",
            output_path=str(out),
            verbose=False,
        )
    ds = RetrievalDataset.load_json(out)
    assert len(ds) == 6 and set(ds.corpus) == {"n0", "n1", "n2"}
    assert all(len(p) == 1 and p[0] in ds.corpus for p in ds.relevant_docs.values())


def test_load_json_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="missing queries, corpus, relevant_docs"):
        RetrievalDataset.load_json(bad)
    newer = tmp_path / "newer.json"
    data = make().to_dict()
    data["format_version"] = 99
    newer.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="newer"):
        RetrievalDataset.load_json(newer)
    with pytest.raises(FileNotFoundError):
        RetrievalDataset.load_json(tmp_path / "missing.json")


def test_split_by_query_without_leakage():
    queries = {f"q{i}": f"question {i}" for i in range(20)}
    corpus = {f"d{i}": f"doc {i}" for i in range(40)}
    relevant = {f"q{i}": [f"d{i}"] for i in range(20)}
    negatives = {f"q{i}": [Negative(f"d{20 + i}", "bm25")] for i in range(20)}
    ds = RetrievalDataset(queries, corpus, relevant, negatives)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = ds.split(val_fraction=0.25, seed=3)
    assert (len(train), len(val)) == (15, 5)
    assert not set(train.queries) & set(val.queries)
    for part in (train, val):
        assert part.corpus == corpus
        for qid in part.queries:
            assert (
                part.relevant_docs[qid] == relevant[qid] and part.negatives[qid] == negatives[qid]
            )
    assert ds.split(0.25, seed=3)[1].queries == val.queries  # deterministic
    assert ds.split(0.25, seed=4)[1].queries != val.queries


def test_split_warns_on_shared_positives_and_groups_them():
    queries = {f"q{i}": f"question {i}" for i in range(10)}
    relevant = {f"q{i}": ["shared" if i < 6 else f"d{i}"] for i in range(10)}
    corpus = {"shared": "shared doc", **{f"d{i}": f"doc {i}" for i in range(10)}}
    ds = RetrievalDataset(queries, corpus, relevant)
    seen = []
    for seed in range(20):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train, val = ds.split(0.3, seed=seed)
        sides = {
            "train" if q in train.queries else "val" for q in queries if relevant[q] == ["shared"]
        }
        if len(sides) == 2:
            seen.append(seed)
            assert any("1 positive documents are shared" in str(w.message) for w in caught)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            g_train, g_val = ds.split(0.3, seed=seed, group_by_positive=True)
        grouped = {
            "train" if q in g_train.queries else "val" for q in queries if relevant[q] == ["shared"]
        }
        assert len(grouped) == 1
    assert seen, "some seed should put the shared-positive queries on both sides"


def test_split_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        make().split(1.5)
    with pytest.raises(ValueError, match="at least 2"):
        make().subset(["q1"]).split(0.5)


def test_to_triplets_round_robin():
    ds = RetrievalDataset(
        queries={"q1": "a", "q2": "b"},
        corpus={"p1": "P1", "p2": "P2", "p3": "P3", "n1": "N1", "n2": "N2", "x": "X"},
        relevant_docs={"q1": ["p1", "p2", "p3"], "q2": ["x"]},
        negatives={"q1": [Negative("n1", "bm25"), Negative("n2", "dense")]},
    )
    with pytest.warns(UserWarning, match="1 queries have no negatives: 'q2'"):
        rows = ds.to_triplets()
    assert rows == [
        {"anchor": "a", "positive": "P1", "negative": "N1"},
        {"anchor": "a", "positive": "P2", "negative": "N2"},
        {"anchor": "a", "positive": "P3", "negative": "N1"},
    ]
    with pytest.warns(UserWarning):
        multi = ds.to_triplets(max_negatives_per_query=2)
    assert list(multi[0]) == ["anchor", "positive", "negative_1", "negative_2"]
    assert (multi[0]["negative_1"], multi[0]["negative_2"]) == ("N1", "N2")
    with pytest.raises(ValueError, match="'q2'"):
        ds.to_triplets(on_missing="error")


def test_pairs_and_cross_encoder_rows():
    ds = make()
    assert ds.to_pairs()[3] == {"anchor": "refill time", "positive": CORPUS["d5"]}
    rows = ds.to_cross_encoder_rows(num_negatives=1)
    q3 = [r for r in rows if r["query"] == "refill time"]
    assert [r["label"] for r in q3] == [1.0, 1.0, 0.0]
    assert q3[2]["passage"] == CORPUS["d1"]
    assert len(ds.to_cross_encoder_rows()) == 4 + 3


def test_subset_and_with_negatives():
    ds = make()
    sub = ds.subset(["q3"])
    assert list(sub.queries) == ["q3"] and sub.negatives["q3"] == ds.negatives["q3"]
    with pytest.raises(ValueError, match="'nope'"):
        ds.subset(["nope"])
    more = ds.with_negatives(
        {"q2": ["d5", "d5", Negative("d1", "dense", 0.3, 4)], "q1": ["d2", "d4"]}
    )
    assert more.negatives["q2"] == [Negative("d5", "curated"), Negative("d1", "dense", 0.3, 4)]
    assert [n.doc_id for n in more.negatives["q1"]] == ["d2", "d4"]
    assert ds.negatives["q1"] == [Negative("d2", "curated")]  # original untouched
    replaced = ds.with_negatives({"q1": ["d4"]}, source="user", replace=True)
    assert replaced.negatives == {"q1": [Negative("d4", "user")]}
    with pytest.raises(ValueError, match="'q1:d1'"):
        ds.with_negatives({"q1": ["d1"]})  # d1 is q1's positive


def test_from_beir(tmp_path):
    root = tmp_path / "mini"
    (root / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "a", "title": "T", "text": "alpha"},
        {"_id": "b", "title": "", "text": "beta"},
        {"_id": "c", "title": "", "text": "gamma"},
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    (root / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": q, "text": f"query {q}"}) for q in "123")
    )
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\n1\ta\t1\r\n1\tc\t0\r\n2\tb\t2\r\n3\tc\t0\r\n"
    )
    ds = RetrievalDataset.from_beir(root, split="train")
    assert ds.relevant_docs == {"1": ["a"], "2": ["b"]}  # query 3 has no positive: dropped
    assert ds.negatives == {"1": [Negative("c", "judged", 0.0)]}
    assert ds.corpus["a"] == "T\nalpha"
    assert RetrievalDataset.from_beir(root, split="train", judged_negatives=False).negatives == {}


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"queries": ["q1"]}, "RetrievalDataset.queries must be a mapping {query_id: text}"),
        ({"relevant_docs": {"q1": None, "q2": ["d3"], "q3": ["d4"]}}, "relevant_docs['q1'] must"),
        ({"relevant_docs": {"q1": [["d1"]], "q2": ["d3"], "q3": ["d4"]}}, "not doc ids"),
        ({"negatives": {"q1": "d2"}}, "negatives['q1'] must be a list of Negative"),
        ({"negatives": {"q1": [{"doc_id": "d2"}]}}, "negatives['q1'][0]: a negative needs"),
        (
            {"negatives": {"q1": [{"doc_id": "d2", "source": "x", "score": float("nan")}]}},
            "score must be a finite number",
        ),
        ({"negatives": {"q1": [{"doc_id": "d2", "source": "x", "rank": 0}]}}, "rank must be"),
        ({"negatives": {"q1": [Negative("d2", "x", float("inf"))]}}, "NaN or infinite score"),
        ({"corpus": {**CORPUS, "d1": " "}}, "positives or negatives with empty text"),
        ({"corpus": {**CORPUS, "d2": ""}}, "'q1:d2'"),
        ({"corpus": {**CORPUS, 1: "a", "1": "b"}}, "ids 1 and '1' are the same id"),
        ({"mode": None}, "mode must be a string"),
        ({"metadata": ["x"]}, "metadata must be a mapping"),
    ],
)
def test_malformed_fields_raise_data_errors(overrides, needle):
    with pytest.raises(DataError) as err:
        make(**overrides)
    assert needle in str(err.value)


def test_error_names_the_origin_and_positives_are_deduplicated():
    with pytest.raises(DataError, match=r"RetrievalDataset \(beir scifact train\): queries"):
        make(
            relevant_docs={"q1": ["d1"]},
            metadata={"source": "beir", "name": "scifact", "split": "train"},
        )
    ds = make(relevant_docs={"q1": ["d1", "d1"], "q2": "d3", "q3": ("d4", "d5")})
    assert ds.relevant_docs == {"q1": ["d1"], "q2": ["d3"], "q3": ["d4", "d5"]}


def test_changes_after_construction_fail_clearly_at_training_time():
    ds = make()
    ds.relevant_docs["q2"] = []
    with pytest.raises(DataError, match="query 'q2' has no positive document"):
        ds.to_pairs()
    with pytest.raises(DataError, match="queries without any positive document: 'q2'"):
        ds.validate()


def _write(tmp_path, data, name="ds.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.update(queries=["q1"]), "at $.queries: must be an object, got list"),
        (lambda d: d["queries"].update(q1=5), "at $.queries['q1']: must be a string, got int"),
        (lambda d: d["relevant_docs"].update(q1={"d": 1}), "at $.relevant_docs['q1']: must be"),
        (lambda d: d["relevant_docs"].update(q1=[True]), "at $.relevant_docs['q1'][0]: must be"),
        (lambda d: d["negatives"].update(q1=[{"doc_id": "d2"}]), "at $.negatives['q1'][0]:"),
        (lambda d: d.update(format_version="1"), "at $.format_version: must be an integer"),
        (lambda d: d.update(format_version=10**30), "newer than this library reads"),
        (lambda d: d.update(format="other"), "at $.format: unknown dataset format 'other'"),
        (lambda d: d.update(mode=3), "at $.mode: must be a string"),
        (lambda d: d["relevant_docs"].update(q1=["nope"]), "missing from the corpus: 'nope'"),
    ],
)
def test_load_json_names_file_and_json_path(tmp_path, change, needle):
    data = make().to_dict()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(DataError) as err:
        RetrievalDataset.load_json(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value)


def test_load_json_bad_bytes(tmp_path):
    text = json.dumps(make().to_dict(), indent=2)
    path = _write(tmp_path, text[: len(text) // 2])
    with pytest.raises(DataError, match=r"ds\.json:\d+:\d+: malformed JSON"):
        RetrievalDataset.load_json(path)
    path.write_bytes(text.encode("utf-8").replace(b"apple", b"appl\xe9", 1))
    with pytest.raises(DataError, match=r"ds\.json:\d+:\d+: not valid UTF-8"):
        RetrievalDataset.load_json(path)
    path.write_text('{"queries": {}, "queries": {}, "corpus": {}, "relevant_docs": {}}')
    with pytest.raises(DataError, match="the key 'queries' appears twice"):
        RetrievalDataset.load_json(path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        RetrievalDataset.load_json(tmp_path)


def test_save_json_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "ds.json"
    make().save_json(path)
    before = path.read_text()
    broken = make(metadata={"not json": object()})
    with pytest.raises(TypeError):
        broken.save_json(path)
    assert path.read_text() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.json"]  # no temporary left


@pytest.mark.parametrize(
    ("queries", "corpus", "kind"),
    [
        ({"q": "h\ud800i"}, {"d": "doc"}, "query ids 'q'"),
        ({"q": "hi"}, {"d": "do\udc80c"}, "doc ids 'd'"),
    ],
)
def test_a_lone_surrogate_is_named_when_the_dataset_is_built(tmp_path, queries, corpus, kind):
    with pytest.raises(DataError, match=f"{kind} hold an invalid character"):
        RetrievalDataset(queries=queries, corpus=corpus, relevant_docs={"q": ["d"]})


def test_queries_without_letters_or_digits_keep_ids_of_their_own():
    from llama_index_ragtune.feedback.export import feedback_query_id

    apple, phone = stable_query_id("🍎?"), stable_query_id("📱!")
    assert apple != phone  # both normalise to "": they shared one id, merging their labels
    assert apple == stable_query_id(" 🍎? ")  # spacing still does not matter
    assert stable_query_id("?") != stable_query_id("!")
    assert feedback_query_id("🍎?", {}) != feedback_query_id("📱!", {})
    ds = RetrievalDataset.from_pairs([("🍎?", ["d1"]), ("📱!", ["d2"])], CORPUS)
    assert len(ds) == 2 and sorted(ds.relevant_docs.values()) == [["d1"], ["d2"]]
