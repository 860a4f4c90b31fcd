"""Grounded question answering examples: ``QAExample`` plus SQuAD 2.0 and SciFact loaders.

A ``QAExample`` is one question with the ids of the documents that hold (or,
for an unanswerable question, were written against) its answer, the
reference answers, short evidence quotes and, for claim verification, a
label. ``GroundedSFTBuilder`` and ``PreferenceBuilder`` turn them into
training data; ``GenerationEvaluator`` scores answers against them.

Gold for unanswerable questions: a SQuAD 2.0 unanswerable question keeps its
own paragraph as ``gold_doc_ids`` (the paragraph it was written against, a
near miss that lacks the answer) and a SciFact NOT ENOUGH INFO claim keeps
the abstracts its qrels cite. ``answerable=False`` is what counts: the target
is the refusal sentence whatever the context holds.

Example::

    from llama_index_ragtune.data import load_squad_v2, load_scifact_claims

    train, documents = load_squad_v2("../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json",
                                     split="train")
    documents[0].id_                  # '0-0' = article 0, paragraph 0
    claims, abstracts = load_scifact_claims("../shared/data/scifact", split="test")
    claims[1].label, claims[1].evidence[0][:40]
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llama_index.core.schema import Document

logger = logging.getLogger(__name__)

SQUAD_TEST_ARTICLES = 4
"""SQuAD 2.0 split by article: the last 4 articles are the test set, the others train."""

SCIFACT_QUESTION = "Is this claim supported or contradicted by the sources? Claim: {claim}"
"""How a SciFact claim is asked (the same string at training and at answer time)."""

SUPPORT, CONTRADICT = "SUPPORT", "CONTRADICT"


@dataclass
class QAExample:
    """One grounded question.

    Attributes:
        qid: question id (unique within a data set).
        question: the text sent to the model.
        gold_doc_ids: ids of the documents holding the answer (see the module
            docstring for unanswerable questions).
        answers: reference answers (empty when unanswerable).
        answerable: False when the right reply is the refusal sentence.
        evidence: short quotes that support the answer (the SQuAD sentence
            holding the answer span; SciFact rationale sentences).
        label: ``"SUPPORT"`` / ``"CONTRADICT"`` for SciFact claims, else None.
    """

    qid: str
    question: str
    gold_doc_ids: list[str]
    answers: list[str] = field(default_factory=list)
    answerable: bool = True
    evidence: list[str] = field(default_factory=list)
    label: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ sentences

_BOUNDARY = re.compile(r"[.?!]\s+")
# Never split after these words ("Fig. 2", "e.g. mice", "vs. controls").
_ALWAYS_ABBREV = {
    "e.g",
    "i.e",
    "vs",
    "cf",
    "ca",
    "approx",
    "fig",
    "figs",
    "no",
    "nos",
    "dr",
    "mr",
    "ms",
    "st",
    "eq",
    "ref",
    "refs",
    "vol",
    "resp",
    "viz",
}
# Before a lower-case word these end an abbreviation, not a sentence ("et al. reported").
_LOWER_ABBREV = _ALWAYS_ABBREV | {
    "al",
    "etc",
    "et",
    "sp",
    "spp",
    "subsp",
    "var",
    "inc",
    "ltd",
    "co",
    "u.s",
    "min",
    "max",
}


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at ``. ? !`` + space, keeping common abbreviations whole.

    A boundary before an upper-case letter, a digit or a bracket always
    splits; a boundary before a lower-case word (``miR-193a``, ``iHepSCs``
    open sentences in biomedical abstracts) splits unless the word before
    the period is an abbreviation or a single letter (``E. coli``).
    """
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        words = text[start : match.start() + 1].split()
        last = words[-1].rstrip(".?!").lstrip("([").lower() if words else ""
        after = text[match.end() : match.end() + 1]
        period = text[match.start()] == "."
        if after.isupper() or after.isdigit() or after in ("(", "[", '"'):
            if period and last in _ALWAYS_ABBREV:
                continue
        elif after.islower():
            if period and (last in _LOWER_ABBREV or len(last) <= 1):
                continue
        else:
            continue
        sentences.append(text[start : match.start() + 1].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _sentences_around(text: str, start: int, end: int) -> str:
    """The sentence(s) of ``text`` overlapping characters ``start:end`` (an answer span)."""
    picked: list[str] = []
    position = 0
    for sentence in split_sentences(text):
        begin = text.find(sentence, position)
        if begin < 0:
            continue
        finish = begin + len(sentence)
        if begin < max(end, start + 1) and start < finish:
            picked.append(sentence)
        position = finish
    return " ".join(picked) if picked else text.strip()


# ---------------------------------------------------------------------- SQuAD


def _select_articles(n_articles: int, articles, split) -> list[int]:
    if articles is not None and split is not None:
        raise ValueError("load_squad_v2: pass either `articles=` or `split=`, not both.")
    if split is not None:
        if split not in ("train", "test"):
            raise ValueError(f"load_squad_v2: unknown split {split!r}; use 'train' or 'test'.")
        if n_articles <= SQUAD_TEST_ARTICLES:
            raise ValueError(
                f"load_squad_v2: the file has {n_articles} articles; a train/test split needs more than "
                f"{SQUAD_TEST_ARTICLES}. Pass `articles=` instead."
            )
        cut = n_articles - SQUAD_TEST_ARTICLES
        return list(range(cut)) if split == "train" else list(range(cut, n_articles))
    if articles is None:
        return list(range(n_articles))
    if isinstance(articles, slice):
        return list(range(n_articles))[articles]
    chosen = [int(a) for a in articles]
    bad = [a for a in chosen if not 0 <= a < n_articles]
    if bad:
        raise IndexError(
            f"load_squad_v2: article indices {bad} out of range (the file has {n_articles})."
        )
    return chosen


def load_squad_v2(
    path: str | Path,
    articles: slice | list[int] | None = None,
    split: Literal["train", "test"] | None = None,
    max_examples: int | None = None,
) -> tuple[list[QAExample], list[Document]]:
    """Load a SQuAD 2.0 JSON file as QA examples plus one ``Document`` per paragraph.

    Args:
        path: the SQuAD 2.0 JSON (official schema).
        articles: which articles (by index) to load; all when None.
        split: ``"train"`` = every article but the last 4, ``"test"`` = the last 4
            (the split used by the benchmarks). Exclusive with ``articles``.
        max_examples: keep the first N questions (file order).

    Returns:
        ``(examples, documents)``: documents have ids ``"<article>-<paragraph>"``
        (indices in the file, stable across splits) and metadata ``title``,
        ``article``; unanswerable questions get ``answerable=False`` with their
        own paragraph as gold. Evidence is the sentence holding the first answer span.
    """
    from llama_index.core.schema import Document

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD 2.0 file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a SQuAD JSON file (expected {{'data': [articles]}}): {exc}"
        ) from exc

    examples: list[QAExample] = []
    documents: list[Document] = []
    for a in _select_articles(len(data), articles, split):
        article = data[a]
        title = article.get("title", "").replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a}-{p}"
            context = paragraph["context"]
            documents.append(
                Document(
                    id_=doc_id,
                    text=context,
                    metadata={"title": title, "article": a},
                    excluded_embed_metadata_keys=["title", "article"],
                    excluded_llm_metadata_keys=["title", "article"],
                )
            )
            for qa in paragraph["qas"]:
                answers_raw = qa.get("answers") or []
                impossible = bool(qa.get("is_impossible", not answers_raw))
                answers = list(
                    dict.fromkeys(x["text"].strip() for x in answers_raw if x["text"].strip())
                )
                if not impossible and not answers:
                    raise ValueError(
                        f"{path}: question {qa['id']} is answerable but has no answer text."
                    )
                evidence = []
                if not impossible:
                    first = answers_raw[0]
                    begin = int(first["answer_start"])
                    evidence = [_sentences_around(context, begin, begin + len(first["text"]))]
                examples.append(
                    QAExample(
                        qid=str(qa["id"]),
                        question=qa["question"].strip(),
                        gold_doc_ids=[doc_id],
                        answers=[] if impossible else answers,
                        answerable=not impossible,
                        evidence=evidence,
                    )
                )
    if max_examples is not None:
        examples = examples[:max_examples]
    return examples, documents


# -------------------------------------------------------------------- SciFact


def load_scifact_claims(
    beir_dir: str | Path,
    split: str = "test",
    question_template: str = SCIFACT_QUESTION,
    max_examples: int | None = None,
) -> tuple[list[QAExample], list[Document]]:
    """Load SciFact claims with their rationales from a BEIR SciFact folder.

    Each claim judged in ``qrels/<split>.tsv`` becomes one example. Claims whose
    ``queries.jsonl`` metadata lists rationales (``{doc_id: [{"sentences": [i..],
    "label": "SUPPORT"|"CONTRADICT"}]}``) are answerable: gold = the abstracts
    with rationales, evidence = those sentences, label = their label. Claims with
    empty metadata are NOT ENOUGH INFO: ``answerable=False`` (refusal), gold =
    the abstracts their qrels cite.

    Sentence indices refer to the original SciFact abstract sentences; BEIR
    joins them with a space, so ``split_sentences`` recovers them. On the
    1,391 rationale indices of the released file, 1,389 land inside their
    abstract and the indexed sentence overlaps the claim far more than its
    neighbours do; an index past the end of its abstract falls back to the
    abstract's last sentence (logged).

    Returns:
        ``(examples, documents)``: documents = the whole corpus (``load_beir``).
    """
    from llama_index_ragtune.data.beir import load_beir

    dataset = load_beir(beir_dir, split=split)
    examples: list[QAExample] = []
    fallbacks = 0
    for qid, claim in dataset.queries.items():
        rationales = dataset.query_metadata.get(qid) or {}
        question = question_template.format(claim=claim.strip())
        if not rationales:
            gold = [d for d, grade in dataset.qrels[qid].items() if grade > 0]
            examples.append(
                QAExample(qid=qid, question=question, gold_doc_ids=gold, answerable=False)
            )
            continue
        labels: list[str] = []
        evidence: list[str] = []
        for doc_id, entries in rationales.items():
            if doc_id not in dataset.corpus:
                raise ValueError(
                    f"SciFact claim {qid}: rationale document {doc_id} is not in {dataset.path}/corpus.jsonl."
                )
            sentences = split_sentences(_abstract(dataset, doc_id))
            for entry in entries:
                labels.append(str(entry.get("label", "")).upper())
                for index in entry.get("sentences", []):
                    if index >= len(sentences):
                        fallbacks += 1
                        index = len(sentences) - 1
                    if sentences and sentences[index] not in evidence:
                        evidence.append(sentences[index])
        label = max(set(labels), key=labels.count)
        if label not in (SUPPORT, CONTRADICT):
            raise ValueError(
                f"SciFact claim {qid}: unknown rationale label {label!r} (expected SUPPORT/CONTRADICT)."
            )
        examples.append(
            QAExample(
                qid=qid,
                question=question,
                gold_doc_ids=list(rationales),
                answers=[label],
                answerable=True,
                evidence=evidence,
                label=label,
            )
        )
    if fallbacks:
        logger.info(
            "SciFact %s: %d rationale sentence indices past the end of their abstract",
            split,
            fallbacks,
        )
    if max_examples is not None:
        examples = examples[:max_examples]
    return examples, dataset.documents


def _abstract(dataset, doc_id: str) -> str:
    """The abstract without the title line that ``load_beir`` puts in front of it."""
    text = dataset.corpus[doc_id]
    title = dataset.titles.get(doc_id, "")
    if title and text.startswith(title + "\n"):
        return text[len(title) + 1 :]
    return text
