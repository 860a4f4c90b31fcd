"""The shipped demo corpus: pages and metadata agree, every page parses, every gold reference resolves."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from llama_index_ragtune.demo import SPLITS, demo_dir, load_demo_queries

STORES = ("grocery", "electronics")
SEEDS = [
    ("apple return policy?", "grocery"),
    ("Apple return policy?", "electronics"),
    ("apple return policy?", None),
    ("Apple return policy?", None),
]
QUERY_KEYS = {"id", "question", "store", "gold", "answer", "answerable", "split"}


def _pages() -> dict[str, Path]:
    docs = demo_dir() / "docs"
    return {p.relative_to(docs).as_posix(): p for p in docs.rglob("*") if p.is_file()}


def _normalise(question: str) -> str:
    return " ".join(question.casefold().split())


# ------------------------------------------------------------------- pages and metadata


def test_every_page_has_metadata_and_every_entry_a_page():
    metadata = json.loads((demo_dir() / "metadata.json").read_text(encoding="utf-8"))
    pages = _pages()
    assert sorted(set(pages) - set(metadata)) == []
    assert sorted(set(metadata) - set(pages)) == []


def test_metadata_entries_name_store_department_and_optional_brand():
    metadata = json.loads((demo_dir() / "metadata.json").read_text(encoding="utf-8"))
    for rel, entry in metadata.items():
        assert set(entry) <= {"store", "department", "brand"}, rel
        assert entry["store"] == rel.split("/")[0], rel
        assert isinstance(entry["department"], str) and entry["department"].strip(), rel
        if "brand" in entry:
            assert isinstance(entry["brand"], str) and entry["brand"].strip(), rel
    brands = {entry.get("brand") for entry in metadata.values()}
    assert {"Apple", "Samsung", "Raspberry Pi"} <= brands


def test_each_store_has_markdown_and_html_pages_of_help_centre_size():
    pages = _pages()
    for store in STORES:
        own = {rel: path for rel, path in pages.items() if rel.startswith(store + "/")}
        assert 12 <= len(own) <= 20, store
        assert {path.suffix for path in own.values()} == {".md", ".html"}, store
        for rel, path in own.items():
            assert 1024 <= path.stat().st_size <= 4096, rel
    total = sum(p.stat().st_size for p in demo_dir().rglob("*") if p.is_file())
    assert total < 300 * 1024


def test_documents_carry_their_path_as_id_and_the_metadata(demo_documents):
    metadata = json.loads((demo_dir() / "metadata.json").read_text(encoding="utf-8"))
    pages = _pages()
    assert [doc.id_ for doc in demo_documents] == sorted(pages)
    for doc in demo_documents:
        path = Path(doc.metadata["file_path"])
        assert path == pages[doc.id_].resolve()
        assert doc.text == path.read_text(encoding="utf-8")
        assert {k: v for k, v in doc.metadata.items() if k != "file_path"} == metadata[doc.id_]
        assert "file_path" in doc.excluded_embed_metadata_keys
        assert "file_path" in doc.excluded_llm_metadata_keys


def test_every_page_parses_into_section_nodes_without_boilerplate(demo_documents, demo_nodes):
    by_doc = Counter(node.ref_doc_id for node in demo_nodes)
    assert set(by_doc) == {doc.id_ for doc in demo_documents}
    stores = {doc.id_: doc.metadata["store"] for doc in demo_documents}
    for node in demo_nodes:
        assert node.metadata["section_path"], node.ref_doc_id
        assert node.metadata["store"] == stores[node.ref_doc_id]
        assert not node.metadata["oversized"], node.ref_doc_id
        # every HTML footer carries a copyright line: the parser must have dropped it
        assert "\u00a9" not in node.text, node.ref_doc_id


# ------------------------------------------------------------------------------ queries


def test_queries_follow_the_schema(demo_queries):
    ids = [q["id"] for q in demo_queries]
    assert len(ids) == len(set(ids))
    for q in demo_queries:
        assert set(q) == QUERY_KEYS, q["id"]
        assert re.fullmatch(r"q\d{3}", q["id"]), q["id"]
        assert q["question"].strip(), q["id"]
        assert q["store"] in (*STORES, None), q["id"]
        assert q["split"] in SPLITS, q["id"]
        assert isinstance(q["answerable"], bool), q["id"]
        if q["answerable"]:
            assert q["gold"] and isinstance(q["answer"], str) and q["answer"].strip(), q["id"]
        else:
            assert q["gold"] == [] and q["answer"] is None, q["id"]
        for ref in q["gold"]:
            assert set(ref) == {"doc_id", "section"}, q["id"]


def test_every_gold_reference_resolves_to_a_node_of_the_asked_store(
    demo_queries, demo_nodes, gold_match
):
    for q in demo_queries:
        for ref in q["gold"]:
            assert any(gold_match(node, ref) for node in demo_nodes), (q["id"], ref)
            if q["store"] is not None:
                assert ref["doc_id"].startswith(q["store"] + "/"), (q["id"], ref)


def test_splits_share_no_question_and_have_the_planned_shape(demo_queries):
    texts = {
        split: {_normalise(q["question"]) for q in demo_queries if q["split"] == split}
        for split in SPLITS
    }
    assert texts["train"].isdisjoint(texts["test"])
    counts = Counter(q["split"] for q in demo_queries)
    assert 200 <= counts["train"] <= 240 and 70 <= counts["test"] <= 90
    for subset in (demo_queries, [q for q in demo_queries if q["split"] == "test"]):
        unanswerable = sum(not q["answerable"] for q in subset) / len(subset)
        assert 0.10 <= unanswerable <= 0.20
    assert sum(q["store"] is None for q in demo_queries if q["split"] == "test") >= 8


def test_seed_questions_are_in_test_with_both_stores_gold_when_unfiltered(demo_queries):
    test = {(q["question"], q["store"]): q for q in demo_queries if q["split"] == "test"}
    for key in SEEDS:
        assert key in test, key
        stores = {ref["doc_id"].split("/")[0] for ref in test[key]["gold"]}
        assert stores == ({key[1]} if key[1] else set(STORES)), key
    grocery_docs = {ref["doc_id"] for ref in test[SEEDS[0]]["gold"]}
    assert "grocery/perishables.html" in grocery_docs
    assert {ref["doc_id"] for ref in test[SEEDS[1]]["gold"]} == {"electronics/brands/apple.html"}


def test_load_demo_queries_filters_by_split(demo_queries):
    train, test = load_demo_queries("train"), load_demo_queries("test")
    assert len(train) + len(test) == len(demo_queries)
    assert {q["split"] for q in train} == {"train"} and {q["split"] for q in test} == {"test"}
    with pytest.raises(ValueError, match="'dev'"):
        load_demo_queries("dev")
