"""Round s44 of hostile inputs to the data loaders, synthetic-question parsing and mining.

Paragraphs of abbreviations that made sentence splitting quadratic, answers written in
another Unicode form or spacing than their paragraph, a source of megabytes shared by every
line of a QA file, numbered lists in other scripts, the LLM refusing or echoing its passage,
SciFact rationales without sentences, and mining that leaves queries without negatives.
"""

from __future__ import annotations

import json
import time
import unicodedata
import warnings
from pathlib import Path

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune.data import DataError, RetrievalDataset, qa_jsonl
from llama_index_ragtune.data.negatives import HardNegativeMiner
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.data.sentences import split_sentences
from llama_index_ragtune.data.squad import load_squad_v2
from llama_index_ragtune.data.synthetic import generate_synthetic_queries
from llama_index_ragtune.data.synthetic_filters import QualityFilter, declines, echoes_passage
from llama_index_ragtune.data.synthetic_parsing import parse_questions
from tests.stub_llm import UserLLM

NFC = unicodedata.normalize("NFC", "Le café ouvre à 8h. Il ferme à 20h.")


def _synthetic(passage: str, answer: str, n: int = 8):
    return generate_synthetic_queries(
        [TextNode(text=passage, id_="n1")],
        llm=UserLLM(reply=lambda _prompt: answer),
        num_questions_per_node=n,
        show_progress=False,
    )


# --------------------------------------------------------------------------- sentences


def test_sentence_split_of_a_paragraph_of_abbreviations_is_linear() -> None:
    # "fig. 2" never ends a sentence, so every boundary re-read the text from its start:
    # 40,000 of them took 77 s (quadratic); now well under a second
    text = "See fig. 2 and " * 40_000
    started = time.perf_counter()
    sentences = split_sentences(text)
    assert time.perf_counter() - started < 2.0
    assert sentences == [text.strip()]
    assert split_sentences("Smith et al. reported it in E. coli. It held. Fig. 2 shows it.") == [
        "Smith et al. reported it in E. coli.",
        "It held.",
        "Fig. 2 shows it.",
    ]


# --------------------------------------------------------------------------- SQuAD


def _squad(tmp_path: Path, answer: dict) -> Path:
    qa = {"id": "q1", "question": "Quand?", "is_impossible": False, "answers": [answer]}
    data = {
        "version": "v2.0",
        "data": [{"title": "t", "paragraphs": [{"context": NFC, "qas": [qa]}]}],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text",
    [unicodedata.normalize("NFD", "café ouvre"), "café  ouvre", "café\nouvre"],
    ids=["nfd", "two-spaces", "newline"],
)
def test_squad_answer_in_another_unicode_form_or_spacing_is_read_as_its_span(tmp_path, text):
    # were "the answer 'café ouvre' does not occur in the paragraph" (printed alike)
    examples, _ = load_squad_v2(_squad(tmp_path, {"text": text, "answer_start": 3}))
    assert examples[0].answers == ["café ouvre"]
    assert examples[0].answers[0] in NFC
    assert examples[0].evidence == ["Le café ouvre à 8h."]


def test_squad_answer_start_off_or_out_of_range_still_finds_the_text(tmp_path) -> None:
    for start in (-7, 4, 10_000):
        examples, _ = load_squad_v2(_squad(tmp_path, {"text": "Il ferme", "answer_start": start}))
        assert examples[0].evidence == ["Il ferme à 20h."]


def test_squad_answer_missing_from_its_paragraph_is_still_named(tmp_path) -> None:
    with pytest.raises(DataError, match="'fermé' does not occur in the paragraph") as info:
        load_squad_v2(_squad(tmp_path, {"text": "fermé", "answer_start": 20}))
    assert info.value.location == "$.data[0].paragraphs[0].qas[0].answers[0]"


# --------------------------------------------------------------------------- QA JSONL


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_qa_answer_in_another_unicode_form_than_its_source_is_found(tmp_path) -> None:
    answer = unicodedata.normalize("NFD", "café ouvre")
    row = {
        "question": "Quand ouvre le café ?",
        "sources": [{"id": "d1", "text": NFC}],
        "gold": ["d1"],
        "answer": answer,
    }
    # was "the answer does not appear in any gold source"
    qa = load_grounded_qa(_write_jsonl(tmp_path / "qa.jsonl", [row]))
    assert qa.train[0].answers == [answer]
    bad = dict(row, answer="fermé le lundi")
    with pytest.raises(DataError, match="qa.jsonl:1: the answer does not appear"):
        load_grounded_qa(_write_jsonl(tmp_path / "qa.jsonl", [bad]))


def test_a_source_of_megabytes_on_every_line_is_read_once(tmp_path, monkeypatch) -> None:
    big = "word " * 200_000 + "target"
    rows = [
        {
            "id": f"q{i}",
            "question": f"what is number {i}?",
            "sources": [{"id": "big", "text": big}],
            "gold": ["big"],
            "answer": "target",
        }
        for i in range(20)
    ]
    path = _write_jsonl(tmp_path / "qa.jsonl", rows)
    calls: list[int] = []
    real = qa_jsonl.match_text

    def counted(text: str) -> str:
        calls.append(len(text))
        return real(text)

    monkeypatch.setattr(qa_jsonl, "match_text", counted)
    qa = load_grounded_qa(path)
    assert len(qa.train) == 20
    # the 1 MB source was lower-cased and split again on each of the 20 lines
    assert sum(n > 100_000 for n in calls) == 1


# --------------------------------------------------------------------------- LLM answers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("１．退货政策是什么？\n２．多少天？", ["退货政策是什么？", "多少天？"]),
        ("（1）退货政策是什么？\n（2）多少天？", ["退货政策是什么？", "多少天？"]),
        ("1、退货政策是什么？\n2、多少天？", ["退货政策是什么？", "多少天？"]),
        ("一、退货政策是什么？\n二、多少天？", ["退货政策是什么？", "多少天？"]),
        ("①退货政策是什么？\n②多少天？", ["退货政策是什么？", "多少天？"]),
        ("第1题：退货政策是什么？\n问题2：多少天？", ["退货政策是什么？", "多少天？"]),
        (
            "問1：返品ポリシーは何ですか？\n・何日ですか？",
            ["返品ポリシーは何ですか？", "何日ですか？"],
        ),
        ("Вопрос 1: Какова политика возврата?", ["Какова политика возврата?"]),
        ("سؤال ١: ما هي سياسة الإرجاع؟", ["ما هي سياسة الإرجاع؟"]),
        ("질문 1: 반품 정책은 무엇입니까?", ["반품 정책은 무엇입니까?"]),
        ("#1 What is X?\n2- What is Y?", ["What is X?", "What is Y?"]),
        ("**What is X?**", ["What is X?"]),
    ],
)
def test_numbering_in_other_scripts_and_markdown_bold_are_not_part_of_the_question(
    answer, expected
) -> None:
    # the numbers ("１．", "（1）", "①", "問1：") were kept as the questions' first words
    assert parse_questions(answer) == expected


@pytest.mark.parametrize(
    "question",
    [
        "第一次退货去哪里？",
        "一般来说退货政策是什么？",
        "問題は何ですか？",
        "10 - 15 mg of what?",
        "1.5 liters of what?",
        "E. coli grows where?",
    ],
)
def test_questions_that_only_look_numbered_are_kept_whole(question) -> None:
    assert parse_questions(question) == [question]


PASSAGE = (
    "The information desk lists the sources of funding. Provided documents show the "
    "information about sources of grants."
)


@pytest.mark.parametrize(
    "answer",
    [
        "Insufficient information in the provided sources",
        "**Insufficient information in the provided sources.**",
        "I cannot answer: insufficient information in the provided sources?",
        "The passage does not provide enough information about sources?",
        "Sorry, no information about the sources of funding?",
    ],
)
def test_an_llm_refusing_gives_no_training_question(answer) -> None:
    # each was kept as a training question when it shared a word with the passage
    result = _synthetic(PASSAGE, answer)
    assert result.pairs == []
    assert [reason for _, _, reason in result.dropped] == ["not_a_question"]
    assert declines(result.dropped[0][0])


def test_a_real_question_about_refusals_or_sources_is_kept() -> None:
    question = "What sources of funding does the information desk list?"
    assert _synthetic(PASSAGE, question).pairs == [(question, "n1")]
    assert not declines("Sorry-free sources of information?")
    assert not declines("Can I return it?")


SHEET = (
    "Blue kettle model K2\nPrice: 20 EUR\nWeight: 2 kg\nColour: blue steel\n"
    "Warranty two years on the heating element. Returns take 7 days."
)


def test_an_llm_echoing_its_passage_line_by_line_gives_no_training_question() -> None:
    # "Price: 20 EUR", "Weight: 2 kg"... were kept as training questions
    result = _synthetic(SHEET, SHEET)
    assert result.pairs == []
    assert {reason for _, _, reason in result.dropped} <= {"not_a_question", "copied_ngram"}
    keep = _synthetic(SHEET, "kettle K2 price\nreturns take 7 days\nHow much does the K2 cost?")
    assert [q for q, _ in keep.pairs] == ["kettle K2 price", "How much does the K2 cost?"]
    assert keep.dropped == [("returns take 7 days", "n1", "not_a_question")]
    assert echoes_passage("price: 20 eur", SHEET)
    assert QualityFilter(drop_statements=False).reason("Price: 20 EUR", SHEET) is None


# --------------------------------------------------------------------------- SciFact


def test_a_scifact_rationale_without_sentences_is_named(tmp_path) -> None:
    from llama_index_ragtune.data.scifact import load_scifact_claims

    root = tmp_path / "sf"
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": "d1", "title": "T", "text": "Statins lower LDL. They are safe."}]
    claim = {"_id": "q1", "text": "Statins lower LDL.", "metadata": {"d1": [{"label": "SUPPORT"}]}}
    _write_jsonl(root / "corpus.jsonl", corpus)
    _write_jsonl(root / "queries.jsonl", [claim])
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    # was loaded as gold without evidence
    with pytest.raises(DataError, match="the rationale lists no sentence") as info:
        load_scifact_claims(root)
    assert info.value.location == "query 'q1', $.metadata['d1'][0].sentences"
    claim["metadata"]["d1"][0]["sentences"] = [1]
    _write_jsonl(root / "queries.jsonl", [claim])
    claims, _ = load_scifact_claims(root)
    assert claims[0].evidence == ["They are safe."]


# --------------------------------------------------------------------------- mining


@pytest.mark.parametrize(
    ("corpus", "relevant", "why"),
    [
        ({"d1": "apples are returned within seven days"}, ["d1"], "positive: 1"),
        (
            {f"d{i}": "apples are returned within seven days" for i in range(4)},
            ["d0"],
            "same_text: 3",
        ),
        (
            {f"d{i}": f"apples are returned within {i} days" for i in range(3)},
            ["d0", "d1", "d2"],
            "positive: 3",
        ),
    ],
    ids=["one-document", "identical-passages", "positives-are-the-corpus"],
)
def test_mining_that_leaves_a_query_without_negatives_says_so(corpus, relevant, why) -> None:
    dataset = RetrievalDataset(
        queries={"q1": "apples return"}, corpus=corpus, relevant_docs={"q1": relevant}
    )
    miner = HardNegativeMiner(sources=["bm25"], show_progress=False)
    with pytest.warns(UserWarning, match=r"1 of 1 queries got no negative \(e.g. 'q1'\)") as info:
        out = miner.mine(dataset)
    assert why in str(info[0].message)
    assert out.negatives.get("q1", []) == []


def test_mining_with_negatives_for_every_query_is_silent() -> None:
    corpus = {"d1": "apples are returned within seven days", "d2": "apples are sold by weight"}
    dataset = RetrievalDataset(
        queries={"q1": "apples returned"}, corpus=corpus, relevant_docs={"q1": ["d1"]}
    )
    miner = HardNegativeMiner(sources=["bm25"], show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = miner.mine(dataset)
    assert [n.doc_id for n in out.negatives["q1"]] == ["d2"]


def test_a_long_passage_is_read_once_for_all_its_questions(monkeypatch) -> None:
    from llama_index_ragtune.data import synthetic_filters

    passage = "The teapot T9 costs thirty euros and weighs one kilogram. " * 5_000
    calls: list[int] = []
    real = synthetic_filters.query_tokens

    def counted(text: str) -> list[str]:
        calls.append(len(text))
        return real(text)

    monkeypatch.setattr(synthetic_filters, "query_tokens", counted)
    answer = "\n".join(f"What does teapot T{i} cost in euros?" for i in range(10))
    result = _synthetic(passage, answer, n=10)
    assert len(result.pairs) == 10
    # both filters tokenized the whole passage again for each question: 20 times
    assert sum(n == len(passage) for n in calls) == 1


def test_a_qa_line_with_thousands_of_sources_loads_in_linear_time(tmp_path) -> None:
    # each source was compared with every earlier one: 8,000 sources took 5.3 s, 32,000 ~85 s
    n = 30_000
    row = {
        "question": "Which passage says 7?",
        "sources": [{"id": f"d{i}", "text": f"passage number {i}"} for i in range(n)],
        "gold": [f"d{i}" for i in range(n)],
        "answer": "number 7",
    }
    path = _write_jsonl(tmp_path / "qa.jsonl", [row])
    started = time.perf_counter()
    qa = load_grounded_qa(path)
    assert time.perf_counter() - started < 10.0
    assert len(qa.train[0].gold_doc_ids) == n and len(qa.documents) == n
    row["sources"].append({"id": "d7", "text": "passage number 7"})
    with pytest.raises(DataError, match="qa.jsonl:1: source id 'd7' appears twice on the line"):
        load_grounded_qa(_write_jsonl(tmp_path / "qa.jsonl", [row]))


def test_a_qa_answer_offset_field_says_no_offset_is_read(tmp_path) -> None:
    row = {
        "question": "When does it open?",
        "sources": [{"id": "d1", "text": "It opens at 8am."}],
        "gold": ["d1"],
        "answer": "8am",
        "answer_start": -3,
    }
    with pytest.raises(DataError, match="remove 'answer_start': no character offset is read"):
        load_grounded_qa(_write_jsonl(tmp_path / "qa.jsonl", [row]))
    del row["answer_start"]
    assert load_grounded_qa(_write_jsonl(tmp_path / "qa.jsonl", [row])).train[0].answers == ["8am"]


def test_one_question_over_many_copies_of_a_passage_builds_in_linear_time() -> None:
    # a footer on every page: one question, one pair per copy; each pair scanned the
    # query's list of positives (40,000 copies: 9.1 s, quadratic)
    n = 60_000
    corpus = {f"page-{i}": f"footer of page {i}" for i in range(n)}
    pairs = [("What does the footer say?", [f"page-{i}", "page-0"]) for i in range(n)]
    started = time.perf_counter()
    dataset = RetrievalDataset.from_pairs(pairs, corpus)
    assert time.perf_counter() - started < 5.0
    (positives,) = dataset.relevant_docs.values()
    assert positives == [f"page-{i}" for i in range(n)]


def test_a_long_source_shown_to_many_questions_is_read_once(monkeypatch) -> None:
    from llama_index_ragtune.data import GroundedSFTBuilder, QAExample, grounded

    class NoRetriever:
        def retrieve(self, question: str) -> list:
            return []

    source = "filler words of the manual " * 40_000 + "the lid opens with the red lever"
    calls: list[int] = []
    real = grounded.match_text

    def counted(text: str) -> str:
        calls.append(len(text))
        return real(text)

    monkeypatch.setattr(grounded, "match_text", counted)
    examples = [
        QAExample(f"q{i}", f"How does lid {i} open?", ["manual"], ["red lever"], True)
        for i in range(30)
    ]
    builder = GroundedSFTBuilder(NoRetriever(), {"manual": source, "other": "x"}, p_no_gold=0.0)
    retrieved = {e.qid: ["manual", "other"] for e in examples}
    contexts = builder.build_contexts(examples, retrieved, show_progress=False)
    assert all(c.answerable for c in contexts)
    # the 1 MB source was lower-cased and split again for each of the 30 questions
    assert sum(n == len(source) for n in calls) == 1


# --------------------------------------------------------------------------- BEIR


def test_a_beir_file_next_to_its_gzip_copy_is_named(tmp_path) -> None:
    import gzip

    from llama_index_ragtune.data.beir import load_beir

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    _write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "text": "old text"}])
    newer = json.dumps({"_id": "d1", "text": "new text"}) + "\n"
    (root / "corpus.jsonl.gz").write_bytes(gzip.compress(newer.encode()))
    _write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "what text?"}])
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    # the plain file was read silently, the newer download ignored
    with pytest.warns(UserWarning, match="both corpus.jsonl and corpus.jsonl.gz are there"):
        dataset = load_beir(root, "test")
    assert dataset.corpus["d1"] == "old text"
    (root / "corpus.jsonl").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_beir(root, "test").corpus["d1"] == "new text"
