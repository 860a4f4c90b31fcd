"""SciFact claims as grounded questions: ``load_scifact_claims`` reads a BEIR SciFact folder.

A claim with rationales is answerable (gold = the abstracts with rationales, evidence =
those sentences, label ``SUPPORT`` / ``CONTRADICT``); a NOT ENOUGH INFO claim is not
(``answerable=False``, gold = the abstracts its qrels cite).

Example::

    from llama_index_ragtune.data.scifact import load_scifact_claims

    claims, abstracts = load_scifact_claims("../shared/data/scifact", split="test")
    claims[1].label, claims[1].evidence[0][:40]
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from llama_index_ragtune.data.beir import find_file, load_beir
from llama_index_ragtune.data.qa_example import QAExample, _check_limit
from llama_index_ragtune.data.reading import JsonFields
from llama_index_ragtune.data.sentences import split_sentences

if TYPE_CHECKING:
    from llama_index.core.schema import Document

logger = logging.getLogger(__name__)

SCIFACT_QUESTION = "Is this claim supported or contradicted by the sources? Claim: {claim}"
"""How a SciFact claim is asked (the same string at training and at answer time)."""

SUPPORT, CONTRADICT = "SUPPORT", "CONTRADICT"

_REF_NUMBER = re.compile(r"\b[Rr]efs?\.\s+(?=\d)")
"""Where SciFact's sentence splitter broke and ``split_sentences`` does not: after "ref." or
"refs." before a number ("HDAC2 (ref. 2) and PARP1 (ref. 3)." is three of its sentences)."""


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
    joins them with a space, and ``scifact_sentences`` recovers them. On the
    1,391 rationale indices of the released file, 1,390 land inside their
    abstract and the indexed sentence overlaps the claim far more than its
    neighbours do; an index past the end of its abstract (claim 261's index 12
    in the 11 sentences of doc 10697096) falls back to the abstract's last
    sentence (logged).

    Raises:
        FileNotFoundError, DataError: see ``load_beir``; also a rationale that is
            not ``{"sentences": [non-negative ints], "label": "SUPPORT" | "CONTRADICT"}``,
            one naming a document missing from the corpus, a document with an empty list
            of rationales, a rationale without sentence indices, and a claim whose
            rationales mix SUPPORT and CONTRADICT (the message names queries.jsonl,
            the claim id and the JSON path).
        ValueError: ``question_template`` lacks ``{claim}`` or has other fields.

    Returns:
        ``(examples, documents)``: documents = the whole corpus (``load_beir``).

    Example::

        claims, abstracts = load_scifact_claims("../shared/data/scifact", split="test")
    """
    _check_limit("max_examples", max_examples)
    try:
        question_template.format(claim="")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"question_template {question_template!r} must contain {{claim}} and no other "
            f"fields ({type(exc).__name__}: {exc})"
        ) from None
    if "{claim}" not in question_template:
        raise ValueError(f"question_template {question_template!r} must contain {{claim}}")
    dataset = load_beir(beir_dir, split=split)
    queries_file = find_file(Path(beir_dir).expanduser(), "queries.jsonl")
    examples: list[QAExample] = []
    fallbacks: list[str] = []
    for qid, claim in dataset.queries.items():
        rationales = dataset.query_metadata.get(qid) or {}
        question = question_template.format(claim=claim.strip())
        if not rationales:
            gold = [d for d, grade in dataset.qrels[qid].items() if grade > 0]
            examples.append(
                QAExample(qid=qid, question=question, gold_doc_ids=gold, answerable=False)
            )
            continue
        reader = JsonFields(
            queries_file,
            "rationales look like {doc_id: [{'sentences': [0, 2], 'label': 'SUPPORT'}]}",
        )
        labels: dict[str, str] = {}
        evidence: list[str] = []
        for doc_id, entries in rationales.items():
            where = f"query {qid!r}, $.metadata[{doc_id!r}]"
            if doc_id not in dataset.corpus:
                raise reader.error(
                    f"rationale document {doc_id!r} is not in corpus.jsonl",
                    where,
                    "add the document or remove the rationale",
                )
            if not isinstance(entries, list):
                raise reader.error(f"must be a list, got {type(entries).__name__}", where)
            if not entries:
                raise reader.error(
                    f"rationale document {doc_id!r} lists no rationale",
                    where,
                    "add its {'sentences': [...], 'label': ...} entries, or remove the document "
                    "from the claim's metadata (it would be gold without evidence)",
                )
            sentences = scifact_sentences(_abstract(dataset, doc_id))
            for i, entry in enumerate(entries):
                e_where = f"{where}[{i}]"
                if not isinstance(entry, dict):
                    raise reader.error(f"must be an object, got {type(entry).__name__}", e_where)
                label = str(reader.get(entry, "label", (str,), e_where)).upper()
                if label not in (SUPPORT, CONTRADICT):
                    raise reader.error(
                        f"unknown rationale label {label!r}",
                        f"{e_where}.label",
                        "use SUPPORT or CONTRADICT",
                    )
                labels.setdefault(label, f"{e_where}.label")
                indices = reader.get(entry, "sentences", (list,), e_where, default=[])
                if not indices:
                    raise reader.error(
                        "the rationale lists no sentence",
                        f"{e_where}.sentences",
                        "give the indices of the abstract's sentences that support or "
                        "contradict the claim (0 = the first), e.g. 'sentences': [0, 2], or "
                        "remove the rationale (it made the document gold without evidence)",
                    )
                for j, index in enumerate(indices):
                    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                        raise reader.error(
                            f"sentence index {index!r} is not a non-negative integer",
                            f"{e_where}.sentences[{j}]",
                        )
                    if index >= len(sentences):
                        fallbacks.append(f"claim {qid!r}, doc {doc_id!r}, index {index}")
                        index = len(sentences) - 1
                    if sentences and sentences[index] not in evidence:
                        evidence.append(sentences[index])
        if len(labels) > 1:
            raise reader.error(
                f"claim {qid!r} has both SUPPORT ({labels[SUPPORT]}) and CONTRADICT "
                f"({labels[CONTRADICT]}) rationales",
                f"query {qid!r}, $.metadata",
                "a claim takes one label: fix the labels or split the claim in two",
            )
        label = next(iter(labels))
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
            "SciFact %s: %d rationale sentence indices past the end of their abstract, read "
            "as its last sentence (%s)",
            split,
            len(fallbacks),
            "; ".join(fallbacks[:5]) + ("; ..." if len(fallbacks) > 5 else ""),
        )
    if max_examples is not None:
        examples = examples[:max_examples]
    return examples, dataset.documents


def scifact_sentences(abstract: str) -> list[str]:
    """``abstract``'s sentences as SciFact's rationale indices count them.

    ``split_sentences``, each sentence also cut after "ref." / "refs." before a number,
    where SciFact's own splitter broke: kept whole, "(ref. 2) and PARP1 (ref. 3)" read 8
    evidence sentences (5 claims, 4 abstracts) one to three sentences early, and one index
    past the end of its abstract.

    Example::

        scifact_sentences("Such as HDAC2 (ref. 2) and PARP1 (ref. 3). We show it.")
        # ['Such as HDAC2 (ref.', '2) and PARP1 (ref.', '3).', 'We show it.']
    """
    pieces: list[str] = []
    for sentence in split_sentences(abstract):
        start = 0
        for match in _REF_NUMBER.finditer(sentence):
            pieces.append(sentence[start : match.end()].strip())
            start = match.end()
        pieces.append(sentence[start:])
    return pieces


def _abstract(dataset, doc_id: str) -> str:
    """The abstract without the title line that ``load_beir`` puts in front of it."""
    text = dataset.corpus[doc_id]
    title = dataset.titles.get(doc_id, "")
    if title and text.startswith(title + "\n"):
        return text[len(title) + 1 :]
    return text
