"""SQuAD 2.0 as grounded questions: ``load_squad_v2`` reads the official JSON, split by article.

Each paragraph becomes a ``Document`` and each question a ``QAExample`` whose gold
is its paragraph; an unanswerable question keeps that paragraph as gold with
``answerable=False``. Evidence is the sentence holding the answer span.

Example::

    from llama_index_ragtune.data.squad import load_squad_v2

    train, documents = load_squad_v2("../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json",
                                     split="train")
    documents[0].id_                  # '0-0' = article 0, paragraph 0
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.json_files import read_json_document
from llama_index_ragtune.data.paths import check_file
from llama_index_ragtune.data.qa_example import QAExample, _check_limit
from llama_index_ragtune.data.reading import JsonFields
from llama_index_ragtune.data.records import match_text
from llama_index_ragtune.data.sentences import split_sentences

if TYPE_CHECKING:
    from llama_index.core.schema import Document

SQUAD_TEST_ARTICLES = 4
"""SQuAD 2.0 split by article: the last 4 articles are the test set, the others train."""


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
        corrected to the text's first occurrence in the paragraph). A paragraph
        whose text occurs more than once (up to case and spacing) makes every copy
        gold, with a warning.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a broken link (``IsADirectoryError``:
            it is a folder; ``DataError``: a named pipe, a device or a socket, never opened).
        DataError: (a ``ValueError``) the file is not UTF-8 JSON in the SQuAD 2.0
            layout: a missing field or one of the wrong type, an empty paragraph or
            question (also one of only invisible characters), a duplicate question id,
            an answerable question without an answer (or an unanswerable one with
            answers), an answer (any of them) that is not in its paragraph. The message
            names the file and the JSON path.

    Example::

        test, documents = load_squad_v2("dev-v2.0.json", split="test", max_examples=200)
    """
    from llama_index.core.schema import Document

    _check_limit("max_examples", max_examples)
    path = check_file(Path(path).expanduser(), "SQuAD 2.0 JSON file")
    reader = JsonFields(path, _SQUAD_SCHEMA)
    top = read_json_document(
        path,
        expected="the SQuAD 2.0 JSON file (one object: {'version', 'data': [...]})",
        hint="for your own grounded QA as JSONL use `ragtune train decoder --qa`",
    )
    if not isinstance(top, dict):
        raise reader.error(f"the file holds a JSON {type(top).__name__}, not an object", "$")
    data = reader.items(top, "data", "$")
    if not data:
        raise reader.error("no articles", "$.data")

    examples: list[QAExample] = []
    documents: list[Document] = []
    seen: dict[str, str] = {}
    copies: dict[str, list[str]] = {}  # match_text(paragraph) -> its document ids
    for a in _select_articles(len(data), articles, split):
        where, article = data[a]
        title = reader.get(article, "title", (str,), where, default="").replace("_", " ")
        for p, (p_where, paragraph) in enumerate(reader.items(article, "paragraphs", where)):
            doc_id = f"{a}-{p}"
            context = reader.get(paragraph, "context", (str,), p_where)
            if is_blank(context):
                raise reader.error(
                    f"empty paragraph text{_invisible_note(context)}",
                    f"{p_where}.context",
                    "give it a text",
                )
            copies.setdefault(match_text(context), []).append(doc_id)
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
    _share_copies(examples, copies, path)
    if max_examples is not None:
        examples = examples[:max_examples]
    return examples, documents


def _answer_span(
    reader: JsonFields, context: str, where: str, text: str, start: int
) -> tuple[int, int]:
    """Where answer ``text`` is in ``context``: at ``answer_start`` when it points at the text,
    else at its first occurrence; an answer the paragraph lacks is an error naming ``where``.
    """
    if start < 0 or context[start : start + len(text)] != text:
        start = context.find(text)
        if start < 0:
            span = _loose_span(context, text)
            if span is None:
                raise reader.error(
                    f"the answer {text[:60]!r} does not occur in the paragraph",
                    where,
                    "fix the answer text or the paragraph (every SQuAD answer is a span of it)",
                )
            return span
    return start, start + len(text)


def _loose_span(context: str, text: str) -> tuple[int, int] | None:
    """Where ``text`` is in ``context`` written in another Unicode form (NFC / NFD ``café``,
    printed alike) or with other spacing (``"café  ouvre"``, a no-break space): the
    paragraph's own span, or None. Such answers were refused as "does not occur"."""
    for form in ("NFC", "NFD"):
        words = unicodedata.normalize(form, text).split()
        if not words:
            return None
        found = re.search(r"\s+".join(map(re.escape, words)), context)
        if found:
            return found.start(), found.end()
    return None


def _invisible_note(text: str) -> str:
    return f" (only invisible characters: {ascii(text[:20])})" if text.strip() else ""


def _share_copies(examples: list[QAExample], copies: dict[str, list[str]], path: Path) -> None:
    """Make every paragraph with the same text (``match_text``) gold for each question of one
    of them: a copy left out would be a wrong negative, and shown without its twin the
    question's target would be the refusal."""
    twin_ids = {d: ids for ids in copies.values() if len(ids) > 1 for d in ids}
    if not twin_ids:
        return
    for example in examples:
        own = example.gold_doc_ids[0]
        if own in twin_ids:
            example.gold_doc_ids = [own] + [d for d in twin_ids[own] if d != own]
    groups = [ids for ids in copies.values() if len(ids) > 1]
    warnings.warn(
        f"{path}: {len(groups)} paragraph text(s) occur more than once (e.g. "
        f"{', '.join(groups[0][:3])}); every copy is gold for the questions of each",
        stacklevel=3,
    )


def _squad_example(
    reader: JsonFields, qa: dict, where: str, context: str, doc_id: str
) -> QAExample:
    qid = str(reader.get(qa, "id", (str, int), where))
    if not qid.strip():
        raise reader.error("empty question id", f"{where}.id")
    question = reader.get(qa, "question", (str,), where).strip()
    if is_blank(question):
        raise reader.error(
            f"empty question{_invisible_note(question)}",
            f"{where}.question",
            "give it a text or remove it",
        )
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
    answers = list(dict.fromkeys(t.strip() for _, t, _ in texts if not is_blank(t)))
    if not impossible and not answers:
        raise reader.error(
            f"question {qid!r} is answerable but has no answer text",
            f"{where}.answers",
            "add an answer or set 'is_impossible' to true",
        )
    evidence = []
    if not impossible:
        spans = [_answer_span(reader, context, *t) for t in texts if not is_blank(t[1])]
        # an answer found in another Unicode form or spacing is read as the paragraph writes it
        answers = list(dict.fromkeys(context[s:e].strip() for s, e in spans))
        start, end = spans[0]
        evidence = [_sentences_around(context, start, end)]
    return QAExample(
        qid=qid,
        question=question,
        gold_doc_ids=[doc_id],
        answers=[] if impossible else answers,
        answerable=not impossible,
        evidence=evidence,
    )
