"""QAExample loaders: SQuAD 2.0 (split by article) and SciFact claims with rationale sentences."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.qa import (
    SCIFACT_QUESTION,
    QAExample,
    load_scifact_claims,
    load_squad_v2,
    split_sentences,
)


def test_split_sentences_keeps_abbreviations_and_lowercase_starts():
    text = (
        "Cells were grown as in Fig. 2 of the paper. miR-193a binds MVP in E. coli extracts. "
        "Smith et al. reported this, e.g. in mice. Rates rose 2.5-fold! Is it causal? Yes."
    )
    assert split_sentences(text) == [
        "Cells were grown as in Fig. 2 of the paper.",
        "miR-193a binds MVP in E. coli extracts.",
        "Smith et al. reported this, e.g. in mice.",
        "Rates rose 2.5-fold!",
        "Is it causal?",
        "Yes.",
    ]
    # BEIR joins the original sentences with single spaces; splitting restores them.
    original = [
        "BACKGROUND We test drugs.",
        "iHepSCs grow in vitro.",
        "RESULTS Uptake rose (P < 0.05).",
    ]
    assert split_sentences(" ".join(original)) == original


def _squad(tmp_path, n_articles=6):
    data = []
    for a in range(n_articles):
        context = (
            f"Article {a} is about Topic{a}. Its capital is City{a}. It was founded in 10{a}0."
        )
        data.append(
            {
                "title": f"Topic_{a}",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"q{a}a",
                                "question": f"What is the capital of Topic{a}?",
                                "is_impossible": False,
                                "answers": [
                                    {"text": f"City{a}", "answer_start": context.index(f"City{a}")},
                                    {"text": f"City{a}", "answer_start": context.index(f"City{a}")},
                                ],
                            },
                            {
                                "id": f"q{a}u",
                                "question": f"Who rules Topic{a}?",
                                "is_impossible": True,
                                "answers": [],
                                "plausible_answers": [{"text": f"City{a}", "answer_start": 0}],
                            },
                        ],
                    },
                    {"context": f"A second paragraph on Topic{a}.", "qas": []},
                ],
            }
        )
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_load_squad_v2_examples_documents_and_split(tmp_path):
    path = _squad(tmp_path)
    examples, documents = load_squad_v2(path)
    assert len(examples) == 12 and len(documents) == 12
    assert documents[0].id_ == "0-0" and documents[1].id_ == "0-1"
    assert documents[0].metadata == {"title": "Topic 0", "article": 0}
    answerable, unanswerable = examples[0], examples[1]
    assert isinstance(answerable, QAExample)
    assert answerable.answers == ["City0"]  # duplicates removed
    assert answerable.answerable and answerable.gold_doc_ids == ["0-0"]
    assert answerable.evidence == ["Its capital is City0."]
    assert answerable.label is None
    # Unanswerable: its own paragraph stays the gold source, nothing to answer.
    assert (
        not unanswerable.answerable and unanswerable.answers == [] and unanswerable.evidence == []
    )
    assert unanswerable.gold_doc_ids == ["0-0"]

    train, train_docs = load_squad_v2(path, split="train")
    test, test_docs = load_squad_v2(path, split="test")
    assert {d.metadata["article"] for d in train_docs} == {0, 1}
    assert {d.metadata["article"] for d in test_docs} == {2, 3, 4, 5}
    assert {e.qid for e in train}.isdisjoint({e.qid for e in test})
    picked, _ = load_squad_v2(path, articles=[3])
    assert [e.qid for e in picked] == ["q3a", "q3u"]
    assert len(load_squad_v2(path, articles=slice(0, 2), max_examples=3)[0]) == 3


def test_load_squad_v2_bad_input(tmp_path):
    path = _squad(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_squad_v2(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="either"):
        load_squad_v2(path, articles=[0], split="test")
    with pytest.raises(ValueError, match="unknown split"):
        load_squad_v2(path, split="dev")
    with pytest.raises(IndexError, match=r"\[9\]"):
        load_squad_v2(path, articles=[9])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        load_squad_v2(tmp_path / "bad.json")


def _scifact(tmp_path):
    root = tmp_path / "scifact"
    (root / "qrels").mkdir(parents=True)
    abstract = [
        "BACKGROUND Vitamin D was measured.",
        "miR-21 levels fell by half.",
        "RESULTS Risk dropped.",
    ]
    corpus = [
        {"_id": "d1", "title": "Vitamin D trial", "text": " ".join(abstract)},
        {"_id": "d2", "title": "Other", "text": "Nothing relevant. At all."},
    ]
    queries = [
        {
            "_id": "1",
            "text": "Vitamin D lowers risk.",
            "metadata": {"d1": [{"sentences": [2], "label": "SUPPORT"}]},
        },
        {
            "_id": "2",
            "text": "Vitamin D raises miR-21.",
            "metadata": {
                "d1": [
                    {"sentences": [1], "label": "CONTRADICT"},
                    {"sentences": [0], "label": "CONTRADICT"},
                ]
            },
        },
        {"_id": "3", "text": "Vitamin D cures colds.", "metadata": {}},
        {"_id": "4", "text": "Only in train.", "metadata": {}},
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\n1\td1\t1\r\n2\td1\t1\r\n3\td2\t1\r\n"
    )
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\r\n4\td2\t1\r\n")
    return root, abstract


def test_load_scifact_claims_labels_evidence_and_refusals(tmp_path):
    root, abstract = _scifact(tmp_path)
    examples, documents = load_scifact_claims(root, split="test")
    assert [e.qid for e in examples] == ["1", "2", "3"]
    assert len(documents) == 2
    support, contradict, nei = examples
    assert support.question == SCIFACT_QUESTION.format(claim="Vitamin D lowers risk.")
    assert support.label == "SUPPORT" and support.answerable and support.gold_doc_ids == ["d1"]
    assert support.evidence == [abstract[2]]
    assert contradict.label == "CONTRADICT" and contradict.evidence == [abstract[1], abstract[0]]
    assert (
        nei.label is None
        and not nei.answerable
        and nei.gold_doc_ids == ["d2"]
        and nei.evidence == []
    )
    train, _ = load_scifact_claims(root, split="train", question_template="{claim}")
    assert [(e.qid, e.question, e.answerable) for e in train] == [("4", "Only in train.", False)]


@pytest.mark.data
def test_real_squad_split_sizes(squad_path):
    train, train_docs = load_squad_v2(squad_path, split="train")
    test, test_docs = load_squad_v2(squad_path, split="test")
    assert len(train_docs) + len(test_docs) == 646
    assert len(train) + len(test) == 6078
    assert sum(not e.answerable for e in train + test) == 3168
    # Every evidence quote holds its answer span.
    assert all(e.answers[0] in e.evidence[0] for e in train + test if e.answerable)


@pytest.mark.data
def test_real_scifact_claims(scifact_dir):
    examples, _ = load_scifact_claims(scifact_dir, split="train")
    assert len(examples) == 809
    labels = [e.label for e in examples]
    assert (
        labels.count("SUPPORT") == 332
        and labels.count("CONTRADICT") == 173
        and labels.count(None) == 304
    )
    # Claim 2: "1 in 5 million in UK have abnormal PrP positivity."
    claim = next(e for e in examples if e.qid == "2")
    assert claim.label == "CONTRADICT"
    assert claim.evidence[0].startswith("RESULTS Of the 32,441 appendix samples 16 were positive")


# --------------------------------------------------------------------------- hostile input


def _squad_doc(tmp_path, mutate):
    path = _squad(tmp_path)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(data={"x": 1}), "at $.data: must be a list, got dict"),
        (lambda d: d.pop("data"), "at $: missing field 'data'"),
        (lambda d: d.update(data=[]), "at $.data: no articles"),
        (lambda d: d["data"].__setitem__(1, "article"), "at $.data[1]: must be an object, got str"),
        (
            lambda d: d["data"][0]["paragraphs"][0].pop("context"),
            "at $.data[0].paragraphs[0]: missing field 'context'",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0].update(context="  "),
            "at $.data[0].paragraphs[0].context: empty paragraph text",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(
                answer_start="12"
            ),
            "at $.data[0].paragraphs[0].qas[0].answers[0].answer_start: "
            "must be an integer, got str",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(is_impossible="no"),
            "qas[0].is_impossible: must be true/false, got str",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(question=" "),
            "qas[0].question: empty question",
        ),
        (
            lambda d: d["data"][2]["paragraphs"][0]["qas"][0].update(id="q0a"),
            "at $.data[2].paragraphs[0].qas[0].id: duplicate question id 'q0a' "
            "(first at $.data[0].paragraphs[0].qas[0])",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][1].update(
                answers=[{"text": "City0", "answer_start": 0}]
            ),
            "qas[1].answers: 'is_impossible' is true but 'answers' is not empty",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(
                answers=[{"text": "Atlantis", "answer_start": 3}]
            ),
            "qas[0].answers[0]: the answer 'Atlantis' does not occur in the paragraph",
        ),
    ],
)
def test_load_squad_v2_names_the_json_path(tmp_path, mutate, needle):
    path = _squad_doc(tmp_path, mutate)
    with pytest.raises(DataError) as err:
        load_squad_v2(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value)


def test_load_squad_v2_wrong_answer_start_is_corrected(tmp_path):
    def shift(d):
        d["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "City0", "answer_start": 0}]

    examples, _ = load_squad_v2(_squad_doc(tmp_path, shift), articles=[0])
    assert examples[0].evidence == ["Its capital is City0."]


def test_load_squad_v2_bad_files(tmp_path):
    path = _squad(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"squad\.json:1:\d+: malformed JSON"):
        load_squad_v2(path)
    path.write_bytes(raw.replace(b"Topic_1", b"Topic_\xe91"))
    with pytest.raises(DataError, match=r"squad\.json:1:\d+: not valid UTF-8 \(byte 0xe9\)"):
        load_squad_v2(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty"):
        load_squad_v2(path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_squad_v2(tmp_path)
    with pytest.raises(ValueError, match="max_examples must be >= 0"):
        load_squad_v2(path, max_examples=-1)
    with pytest.raises(TypeError, match="articles must be a slice or a list of article indices"):
        load_squad_v2(_squad(tmp_path), articles=["first"])


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({"d1": [{"sentences": [-1], "label": "SUPPORT"}]}, "sentences[0]: sentence index -1"),
        ({"d1": [{"sentences": ["2"], "label": "SUPPORT"}]}, "sentence index '2' is not"),
        ({"d1": [{"sentences": [0], "label": "SUPPRT"}]}, "unknown rationale label 'SUPPRT'"),
        ({"d1": [{"sentences": [0]}]}, "$.metadata['d1'][0]: missing field 'label'"),
        ({"d1": {"sentences": [0]}}, "$.metadata['d1']: must be a list, got dict"),
        ({"d1": ["SUPPORT"]}, "$.metadata['d1'][0]: must be an object, got str"),
        ({"ghost": [{"sentences": [0], "label": "SUPPORT"}]}, "document 'ghost' is not in"),
        (
            {
                "d1": [{"sentences": [0], "label": "SUPPORT"}],
                "d2": [{"sentences": [0], "label": "CONTRADICT"}],
            },
            "claim '1' has both SUPPORT",
        ),
    ],
)
def test_load_scifact_claims_bad_rationales(tmp_path, metadata, needle):
    root, _ = _scifact(tmp_path)
    lines = (root / "queries.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["metadata"] = metadata
    lines[0] = json.dumps(first)
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_scifact_claims(root, split="test")
    assert str(err.value).startswith(str(root / "queries.jsonl") + " at query '1'")
    assert needle in str(err.value)


def test_load_scifact_claims_bad_template_and_folder(tmp_path):
    root, _ = _scifact(tmp_path)
    with pytest.raises(ValueError, match=r"must contain \{claim\}"):
        load_scifact_claims(root, question_template="Is this true?")
    with pytest.raises(ValueError, match="no other fields"):
        load_scifact_claims(root, question_template="{claim} {source}")
    with pytest.raises(DataError, match="unknown split 'dev'.*available splits: test, train"):
        load_scifact_claims(root, split="dev")
    with pytest.raises(FileNotFoundError, match="BEIR folder not found"):
        load_scifact_claims(tmp_path / "nope")
