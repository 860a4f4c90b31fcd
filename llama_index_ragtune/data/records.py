"""The records of a retrieval dataset: a hard negative, one query's example, text identity.

``Negative`` and ``RetrievalExample`` are what a
:class:`~llama_index_ragtune.data.RetrievalDataset` holds and yields;
``normalize_text`` / ``stable_query_id`` decide when two queries are the same. The
builders, the JSON reader and the checks use these without needing the dataset class.

Example::

    from llama_index_ragtune.data.records import Negative, stable_query_id

    Negative("d7", source="bm25", score=11.2, rank=1)
    stable_query_id("What is X?") == stable_query_id("what is x")   # True
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from llama_index_ragtune._invisible import drop_invisible
from llama_index_ragtune._words import words
from llama_index_ragtune.data.errors import DataError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Negative",
    "RetrievalExample",
    "drop_invisible",
    "id_form",
    "match_text",
    "normalize_text",
    "other_form_note",
    "stable_query_id",
]

FORMAT_NAME = "llama-index-ragtune/retrieval-dataset"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- helpers


def _folded(text: str) -> str:
    # casefold() writes "İ" as "i" + combining dot above, which prints as "i": one letter
    return unicodedata.normalize("NFKC", drop_invisible(text)).casefold().replace("i\u0307", "i")


def normalize_text(text: str) -> str:
    """Lower-case, Unicode-normalised text with punctuation and invisible characters
    (:func:`drop_invisible`) dropped and spaces collapsed; combining marks stay in their
    words (``_words.words``: ``"किताब"`` and ``"कीताब"`` are two words, not ``"क त ब"``).

    Used to detect duplicate queries and passages (``"What is X?" == "what is x"``,
    ``"re\u200bturn" == "return"``).

    Example::

        normalize_text("What is X?")   # 'what is x'
    """
    return " ".join(words(_folded(text)))


def id_form(ident: str) -> str:
    """The NFC form of an id: two ids with one form are one id (``'caf\u00e9'`` and
    ``'cafe\u0301'`` print alike), so a loader refuses the second spelling.

    Example::

        id_form("cafe\u0301") == id_form("caf\u00e9")   # True
    """
    return unicodedata.normalize("NFC", ident)


def other_form_note(ident: str, spelled: str) -> str:
    """``" as 'café', another Unicode form ('cafe\\u0301' ~ 'caf\\xe9')"``: how ``ident``
    differs from the earlier ``spelled`` of the same :func:`id_form`; "" when equal.

    Example::

        other_form_note("cafe\u0301", "caf\u00e9")
    """
    if ident == spelled:
        return ""
    return f" as {spelled!r}, another Unicode form ({ascii(ident)} ~ {ascii(spelled)})"


def match_text(text: str) -> str:
    """Lower-case NFC text without invisible characters, spaces collapsed: what an answer or
    evidence quote is looked for in (``match_text(answer) in match_text(source)``); an
    answer written ``'cafe\u0301'`` is found in a source's ``'caf\u00e9'`` (printed alike).

    Example::

        match_text("Within 14\u200b  Days")   # 'within 14 days'
    """
    return " ".join(unicodedata.normalize("NFC", drop_invisible(text)).lower().split())


def twin_key(text: str) -> str:
    """What two questions that are the same (up to case, spacing, punctuation and invisible
    characters) share: :func:`normalize_text`, or for a text with no letter or digit
    (``"🍎?"``) its NFKC, case-folded form without invisible characters and with spaces
    collapsed, so that such texts stay apart.

    Example::

        twin_key("What is X?") == twin_key("what  is x")     # True
        twin_key("🍎?") == twin_key("🍌?")                  # False
    """
    return normalize_text(text) or " ".join(_folded(text).split())


def stable_query_id(text: str, prefix: str = "q-") -> str:
    """A deterministic id for a query text (hash of its normalised form).

    A text with no letter or digit (``"🍎?"``) is hashed NFKC-normalised and case-folded
    with its spaces collapsed, so that such queries keep ids of their own.

    Example::

        stable_query_id("What is X?")   # 'q-' + 16 hex digits, the same for "what is x"
    """
    digest = hashlib.sha1(twin_key(text).encode("utf-8")).hexdigest()
    return f"{prefix}{digest[:16]}"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Negative:
    """A hard negative for one query.

    Args:
        doc_id: corpus id of the negative passage.
        source: where it came from: ``"bm25"``, ``"dense"``, ``"curated"``, ``"judged"``
            (graded 0 in qrels) or any user string.
        score: the source's score for (query, passage), when it has one.
        rank: 1-based rank among the source's non-positive candidates, when ranked.
    """

    doc_id: str
    source: str
    score: float | None = None
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Negative:
        """A negative from ``{"doc_id", "source", "score"?, "rank"?}`` (``DataError`` if malformed).

        Example::

            Negative.from_dict({"doc_id": "d7", "source": "bm25", "score": 11.2, "rank": 1})
        """
        if not isinstance(data, Mapping):
            raise DataError(
                "a negative must be an object {'doc_id', 'source', ...}, "
                f"got {type(data).__name__}"
            )
        missing = [k for k in ("doc_id", "source") if k not in data]
        if missing:
            raise DataError(f"a negative needs 'doc_id' and 'source' keys, got {dict(data)!r}")
        doc_id, source = data["doc_id"], data["source"]
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            raise DataError(f"a negative's doc_id must be a string, got {doc_id!r}")
        if not isinstance(source, str):
            raise DataError(f"a negative's source must be a string, got {source!r}")
        score, rank = data.get("score"), data.get("rank")
        if score is not None and (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            raise DataError(f"a negative's score must be a finite number or null, got {score!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise DataError(f"a negative's rank must be an integer >= 1 or null, got {rank!r}")
        return cls(
            doc_id=str(doc_id),
            source=source,
            score=None if score is None else float(score),
            rank=rank,
        )


class RetrievalExample(NamedTuple):
    """One query of a ``RetrievalDataset``, as yielded by iterating over it.

    Example::

        for qid, query, positive_ids, negatives in dataset:
            ...
    """

    qid: str
    query: str
    positive_ids: list[str]
    negatives: list[Negative]
