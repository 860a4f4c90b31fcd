"""The checks behind ``RetrievalDataset``: field coercion on construction and ``validate()``.

Every failure is a ``DataError`` (a ``ValueError``) that names the offending ids
(the first five and a count) and says how to fix the data.

Example::

    from llama_index_ragtune.data import RetrievalDataset

    RetrievalDataset(queries={"q1": "hi"}, corpus={"d1": "x"}, relevant_docs={"q1": ["d9"]})
    # DataError: RetrievalDataset: positives reference doc ids missing from the corpus: 'd9'; ...
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import lone_surrogate
from llama_index_ragtune.data.records import Negative, id_form


def fmt_ids(ids: Iterable[Any], limit: int = 5) -> str:
    """The first ``limit`` ids, quoted, plus the total when there are more."""
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    if len(ids) > limit:
        shown += f", ... ({len(ids)} in total)"
    return shown


def coerce_ids(value: Any, field_name: str, shape: str) -> dict[str, Any]:
    """``value`` with its keys as text; a non-mapping or two keys with the same text are errors."""
    if not isinstance(value, Mapping):
        raise DataError(
            f"RetrievalDataset.{field_name} must be a mapping {shape}, got {type(value).__name__}"
        )
    out = {str(k): v for k, v in value.items()}
    if len(out) < len(value):
        seen: dict[str, Any] = {}
        for key in value:
            if str(key) in seen:
                raise DataError(
                    f"RetrievalDataset.{field_name}: ids {seen[str(key)]!r} and {key!r} are the "
                    "same id once turned into text; keep one"
                )
            seen[str(key)] = key
    _refuse_other_forms(out, field_name)
    return out


def _refuse_other_forms(ids: Mapping[str, Any], field_name: str) -> None:
    """Two ids equal in NFC (``'caf\u00e9'``, ``'cafe\u0301'``: printed alike) are one id
    spelled twice, as the loaders read them (``records.id_form``): a tool that normalises
    text (an editor, a database) would turn the saved file into one with a repeated key."""
    first: dict[str, str] = {}
    for key in ids:
        if unicodedata.is_normalized("NFC", key):
            continue
        form = id_form(key)
        other = form if form in ids else first.setdefault(form, key)
        if other != key:
            raise DataError(
                f"RetrievalDataset.{field_name}: ids {other!r} and {key!r} are one id in two "
                f"Unicode forms (printed alike: {ascii(other)} ~ {ascii(key)}); keep one "
                "spelling (unicodedata.normalize('NFC', id)) in every field"
            )


def coerce_positives(qid: str, ids: Any) -> list[str]:
    """A query's positives as a list of unique doc-id strings (a single id is allowed)."""
    if isinstance(ids, (str, int)) and not isinstance(ids, bool):
        return [str(ids)]
    if not isinstance(ids, (list, tuple, set, frozenset)):
        raise DataError(
            f"relevant_docs[{qid!r}] must be a doc id or a list of doc ids, "
            f"got {type(ids).__name__}"
        )
    if isinstance(ids, (set, frozenset)):
        ids = sorted(ids, key=str)
    bad = [d for d in ids if isinstance(d, bool) or not isinstance(d, (str, int))]
    if bad:
        raise DataError(f"relevant_docs[{qid!r}] holds values that are not doc ids: {bad[:5]!r}")
    return list(dict.fromkeys(str(d) for d in ids))


def coerce_negatives(qid: str, negs: Any) -> list[Negative]:
    """A query's negatives as ``Negative`` objects (dicts go through ``Negative.from_dict``)."""
    if not isinstance(negs, (list, tuple)):
        raise DataError(f"negatives[{qid!r}] must be a list of Negative, got {type(negs).__name__}")
    out = []
    for i, neg in enumerate(negs):
        if isinstance(neg, Negative):
            out.append(neg if isinstance(neg.doc_id, str) else replace(neg, doc_id=str(neg.doc_id)))
            continue
        try:
            out.append(Negative.from_dict(neg))
        except DataError as err:
            raise DataError(f"negatives[{qid!r}][{i}]: {err}") from None
    return out


def coerce_grades(
    grades: Any, queries: Mapping[str, str], relevant_docs: Mapping[str, list[str]]
) -> dict[str, dict[str, int]]:
    """``{qid: {doc: int grade}}`` naming positives of known queries, else ``DataError``."""
    if not isinstance(grades, Mapping):
        raise DataError(
            f"RetrievalDataset.grades must be {{query_id: {{doc_id: grade}}}}, "
            f"got {type(grades).__name__}"
        )
    out: dict[str, dict[str, int]] = {}
    for qid, graded in grades.items():
        qid = str(qid)
        if qid not in queries:
            raise DataError(f"RetrievalDataset.grades names an unknown query id {qid!r}")
        if not isinstance(graded, Mapping):
            raise DataError(f"RetrievalDataset.grades[{qid!r}] must be {{doc_id: grade}}")
        positives = set(relevant_docs.get(qid, ()))
        for doc_id, grade in graded.items():
            if str(doc_id) not in positives:
                raise DataError(
                    f"RetrievalDataset.grades[{qid!r}] grades {str(doc_id)!r}, which is not "
                    "one of the query's positives (relevant_docs)"
                )
            if isinstance(grade, bool) or not isinstance(grade, int) or grade < 1:
                raise DataError(
                    f"RetrievalDataset.grades[{qid!r}][{str(doc_id)!r}] must be an integer "
                    f">= 1, got {grade!r}"
                )
        if graded:
            out[qid] = {str(d): int(g) for d, g in graded.items()}
    return out


def check_fields(
    name: str,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    relevant_docs: Mapping[str, list[str]],
    negatives: Mapping[str, list[Negative]],
) -> None:
    """Raise ``DataError`` naming the ids when a dataset's fields are inconsistent.

    ``name`` labels the dataset in the message; see ``RetrievalDataset.validate``.

    Example::

        check_fields("RetrievalDataset", {"q1": "hi"}, {"d1": "x"}, {"q1": ["d9"]}, {})
        # DataError: RetrievalDataset: positives reference doc ids missing from the corpus: 'd9'; ...
    """
    if not corpus:
        raise DataError(f"{name} has an empty corpus: give at least one document")
    if not queries:
        raise DataError(f"{name} has no queries: give at least one query")
    bad_text = [q for q, t in queries.items() if not isinstance(t, str) or not t.strip()]
    if bad_text:
        raise DataError(
            f"{name} has queries with empty text: {fmt_ids(bad_text)}; "
            "drop them or give them a text"
        )
    bad_docs = [d for d, t in corpus.items() if not isinstance(t, str)]
    if bad_docs:
        raise DataError(
            f"{name}: corpus texts must be strings; not for doc ids {fmt_ids(bad_docs)}"
        )
    for kind, texts in (("query", queries), ("doc", corpus)):
        broken = [i for i, t in texts.items() if lone_surrogate(t) or lone_surrogate(i)]
        if broken:
            raise DataError(
                f"{name}: {kind} ids {fmt_ids(broken)} hold an invalid character (a lone "
                "surrogate, e.g. from a bad \\u escape or a mis-decoded file) in their id or "
                "text; fix or remove it"
            )
    orphan = [q for q in relevant_docs if q not in queries]
    if orphan:
        raise DataError(
            f"{name}: relevant_docs names query ids that are not in queries: {fmt_ids(orphan)}; "
            "add these queries or remove their entries"
        )
    no_positive = [q for q in queries if not relevant_docs.get(q)]
    if no_positive:
        raise DataError(
            f"{name}: queries without any positive document: {fmt_ids(no_positive)}; "
            "give each query at least one relevant doc id, or drop it (dataset.subset(...))"
        )
    unknown = sorted({d for ids in relevant_docs.values() for d in ids if d not in corpus})
    if unknown:
        raise DataError(
            f"{name}: positives reference doc ids missing from the corpus: {fmt_ids(unknown)}; "
            "add these documents to the corpus or remove them from relevant_docs"
        )
    orphan = [q for q in negatives if q not in queries]
    if orphan:
        raise DataError(
            f"{name}: negatives name query ids that are not in queries: {fmt_ids(orphan)}; "
            "remove their entries"
        )
    unknown = sorted(
        {n.doc_id for negs in negatives.values() for n in negs if n.doc_id not in corpus}
    )
    if unknown:
        raise DataError(
            f"{name}: negatives reference doc ids missing from the corpus: {fmt_ids(unknown)}; "
            "add these documents or remove the negatives"
        )
    clash, empty, bad_score = [], [], []
    for q, positives in relevant_docs.items():
        empty.extend(f"{q}:{d}" for d in positives if not corpus[d].strip())
    for q, negs in negatives.items():
        positives = set(relevant_docs[q])
        clash.extend(f"{q}:{n.doc_id}" for n in negs if n.doc_id in positives)
        empty.extend(f"{q}:{n.doc_id}" for n in negs if not corpus[n.doc_id].strip())
        bad_score.extend(
            f"{q}:{n.doc_id}" for n in negs if n.score is not None and not math.isfinite(n.score)
        )
    if clash:
        raise DataError(
            f"{name}: documents are both a positive and a negative of the same query "
            f"(query:doc): {fmt_ids(clash)}; remove them from the negatives"
        )
    if empty:
        raise DataError(
            f"{name}: positives or negatives with empty text (query:doc): {fmt_ids(empty)}; "
            "give these documents a text or remove them from relevant_docs / negatives"
        )
    if bad_score:
        raise DataError(
            f"{name}: negatives with a NaN or infinite score (query:doc): "
            f"{fmt_ids(bad_score)}; give them a finite score or None"
        )
