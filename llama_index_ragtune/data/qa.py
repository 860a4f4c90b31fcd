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

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llama_index_ragtune.data.beir import find_file, load_beir
from llama_index_ragtune.data.reading import JsonFields, read_json_file

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


_BLOCK_START = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|>|\|)")


def text_blocks(text: str) -> list[str]:
    """``text``'s paragraphs, headings, list items and table rows, hard-wrapped lines joined.

    Example::

        text_blocks("# Returns\\nWithin 30 days\\nof delivery.\\n- Keep the receipt.")
        # ['Returns', 'Within 30 days of delivery.', 'Keep the receipt.']
    """
    blocks: list[list[str]] = []
    joinable = False  # may the next line continue the last block?
    for line in text.splitlines():
        if not line.strip():
            joinable = False
            continue
        starts = bool(_BLOCK_START.match(line))
        if joinable and not starts:
            blocks[-1].append(line.strip())
        else:
            blocks.append([line.strip()])
        # A heading or a table row ends on its line; paragraphs and list items run on.
        joinable = not re.match(r"^\s*(?:#{1,6}\s|\|)", line)
    return [" ".join(b).strip("#-*+>| ") for b in blocks if " ".join(b).strip("#-*+>| ")]


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
    try:
        chosen = [int(a) for a in articles]
    except (TypeError, ValueError):
        raise TypeError(
            f"load_squad_v2: articles must be a slice or a list of article indices, got {articles!r}"
        ) from None
    bad = [a for a in chosen if not 0 <= a < n_articles]
    if bad:
        raise IndexError(
            f"load_squad_v2: article indices {bad} out of range (the file has {n_articles})."
        )
    return chosen


def _check_limit(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


_SQUAD_SCHEMA = (
    "expected the SQuAD 2.0 layout {'data': [{'title', 'paragraphs': [{'context', "
    "'qas': [{'id', 'question', 'is_impossible', 'answers': [{'text', 'answer_start'}]}]}]}]}"
)


def load_squad_v2(
    path: str | Path,
    articles: slice | list[int] | None = None,
    split: Literal["train", "test"] | None = None,
    max_examples: int | None = None,
) -> tuple[list[QAExample], list[Document]]:
    """Load a SQuAD 2.0 JSON file as QA examples plus one ``Document`` per paragraph.

    Args:
        path: the SQuAD 2.0 JSON (official schema; UTF-8, optionally gzip-compressed).
        articles: which articles (by index) to load; all when None.
        split: ``"train"`` = every article but the last 4, ``"test"`` = the last 4
            (the split used by the benchmarks). Exclusive with ``articles``.
        max_examples: keep the first N questions (file order).

    Returns:
        ``(examples, documents)``: documents have ids ``"<article>-<paragraph>"``
        (indices in the file, stable across splits) and metadata ``title``,
        ``article``; unanswerable questions get ``answerable=False`` with their
        own paragraph as gold. Evidence is the sentence holding the first answer
        span (an ``answer_start`` that does not point at the answer text is
        corrected to the text's first occurrence in the paragraph).

    Raises:
        FileNotFoundError: ``path`` does not exist (``IsADirectoryError``: it is a folder).
        DataError: (a ``ValueError``) the file is not UTF-8 JSON in the SQuAD 2.0
            layout: a missing field or one of the wrong type, an empty paragraph or
            question, a duplicate question id, an answerable question without an
            answer (or an unanswerable one with answers), an answer that is not in
            its paragraph. The message names the file and the JSON path.

    Example::

        test, documents = load_squad_v2("dev-v2.0.json", split="test", max_examples=200)
    """
    from llama_index.core.schema import Document

    _check_limit("max_examples", max_examples)
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the SQuAD 2.0 JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD 2.0 file not found: {path}")
    reader = JsonFields(path, _SQUAD_SCHEMA)
    top = read_json_file(path)
    if not isinstance(top, dict):
        raise reader.error(f"the file holds a JSON {type(top).__name__}, not an object", "$")
    data = reader.items(top, "data", "$")
    if not data:
        raise reader.error("no articles", "$.data")

    examples: list[QAExample] = []
    documents: list[Document] = []
    seen: dict[str, str] = {}
    for a in _select_articles(len(data), articles, split):
        where, article = data[a]
        title = reader.get(article, "title", (str,), where, default="").replace("_", " ")
        for p, (p_where, paragraph) in enumerate(reader.items(article, "paragraphs", where)):
            doc_id = f"{a}-{p}"
            context = reader.get(paragraph, "context", (str,), p_where)
            if not context.strip():
                raise reader.error("empty paragraph text", f"{p_where}.context", "give it a text")
            documents.append(
                Document(
                    id_=doc_id,
                    text=context,
                    metadata={"title": title, "article": a},
                    excluded_embed_metadata_keys=["title", "article"],
                    excluded_llm_metadata_keys=["title", "article"],
                )
            )
            for q_where, qa in reader.items(paragraph, "qas", p_where):
                example = _squad_example(reader, qa, q_where, context, doc_id)
                if example.qid in seen:
                    raise reader.error(
                        f"duplicate question id {example.qid!r} (first at {seen[example.qid]})",
                        f"{q_where}.id",
                        "question ids must be unique",
                    )
                seen[example.qid] = q_where
                examples.append(example)
    if max_examples is not None:
        examples = examples[:max_examples]
    return examples, documents


def _squad_example(
    reader: JsonFields, qa: dict, where: str, context: str, doc_id: str
) -> QAExample:
    qid = str(reader.get(qa, "id", (str, int), where))
    if not qid.strip():
        raise reader.error("empty question id", f"{where}.id")
    question = reader.get(qa, "question", (str,), where).strip()
    if not question:
        raise reader.error("empty question", f"{where}.question", "give it a text or remove it")
    answers_raw = reader.items(qa, "answers", where, default=[])
    impossible = reader.get(qa, "is_impossible", (bool,), where, default=not answers_raw)
    texts: list[tuple[str, str, int]] = []
    for a_where, answer in answers_raw:
        text = reader.get(answer, "text", (str,), a_where)
        start = reader.get(answer, "answer_start", (int,), a_where, default=-1)
        texts.append((a_where, text, start))
    if impossible and answers_raw:
        raise reader.error(
            "'is_impossible' is true but 'answers' is not empty",
            f"{where}.answers",
            "move them to 'plausible_answers' or set 'is_impossible' to false",
        )
    answers = list(dict.fromkeys(t.strip() for _, t, _ in texts if t.strip()))
    if not impossible and not answers:
        raise reader.error(
            f"question {qid!r} is answerable but has no answer text",
            f"{where}.answers",
            "add an answer or set 'is_impossible' to true",
        )
    evidence = []
    if not impossible:
        a_where, text, start = next(t for t in texts if t[1].strip())
        if context[start : start + len(text)] != text or start < 0:
            start = context.find(text)
            if start < 0:
                raise reader.error(
                    f"the answer {text[:60]!r} does not occur in the paragraph",
                    a_where,
                    "fix the answer text or the paragraph",
                )
        evidence = [_sentences_around(context, start, start + len(text))]
    return QAExample(
        qid=qid,
        question=question,
        gold_doc_ids=[doc_id],
        answers=[] if impossible else answers,
        answerable=not impossible,
        evidence=evidence,
    )


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

    Raises:
        FileNotFoundError, DataError: see ``load_beir``; also a rationale that is
            not ``{"sentences": [non-negative ints], "label": "SUPPORT" | "CONTRADICT"}``,
            one naming a document missing from the corpus, and a claim whose
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
            sentences = split_sentences(_abstract(dataset, doc_id))
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
                for j, index in enumerate(
                    reader.get(entry, "sentences", (list,), e_where, default=[])
                ):
                    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                        raise reader.error(
                            f"sentence index {index!r} is not a non-negative integer",
                            f"{e_where}.sentences[{j}]",
                        )
                    if index >= len(sentences):
                        fallbacks += 1
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
