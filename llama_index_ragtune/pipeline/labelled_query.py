"""``LabelledQuery``: one question with its gold nodes, answer, filters and split; saved and read back.

Example::

    from llama_index_ragtune.pipeline import LabelledQuery
    from llama_index_ragtune.pipeline.labelled_query import read_saved_queries, save_queries

    query = LabelledQuery(id="q1", question="apple return policy?", gold_node_ids=["a#1"])
    query.has_gold                                   # True
    path = save_queries([query], "/tmp/queries.json")
    read_saved_queries(path) == [query]              # True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LabelledQuery:
    """One question with its gold node ids, reference answer, filters and split.

    Attributes:
        id: unique id.
        question: the text asked.
        gold_node_ids: nodes that answer it (empty for an unanswerable question).
        answer: reference answer (None when unknown or unanswerable).
        answerable: False when the right reply is the refusal.
        filters: ``{metadata key: value}`` the question is asked under (e.g. one store).
        split: ``"train"``, ``"test"`` or None (assigned by :func:`split_queries`).
        source: where it came from: ``"file"``, ``"feedback"``, ``"synthetic"``.
        negative_node_ids: nodes known not to answer it (e.g. sources users rejected).
        judged_node_ids: the nodes whose relevance is known when only some are (feedback:
            the sources users were shown); ``None`` when every node is judged. Rankings
            are scored on the judged nodes only (a condensed list), so a model is not
            penalised for ranking pages nobody has looked at.
    """

    id: str
    question: str
    gold_node_ids: list[str] = field(default_factory=list)
    answer: str | None = None
    answerable: bool = True
    filters: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    source: str = "file"
    negative_node_ids: list[str] = field(default_factory=list)
    judged_node_ids: list[str] | None = None

    @property
    def has_gold(self) -> bool:
        """Answerable with at least one gold node: retrieval can be trained and measured on it."""
        return self.answerable and bool(self.gold_node_ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelledQuery:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def save_queries(queries: Iterable[LabelledQuery], path: str | Path) -> Path:
    """Write resolved queries as strict JSON (the work folder's copy; a NaN or infinite
    number as ``null``), atomically."""
    from llama_index_ragtune._atomic import atomic_write_json

    return atomic_write_json(Path(path), [q.to_dict() for q in queries], strict=True)


def read_saved_queries(path: str | Path) -> list[LabelledQuery]:
    """Read queries written by :func:`save_queries` (``PipelineStateError`` naming the file
    when it is damaged: not JSON, not a list, an item without ``id`` / ``question``)."""
    from llama_index_ragtune.pipeline.document_nodes import read_saved_list

    items = read_saved_list(Path(path), "queries", ("id", "question"))
    return [LabelledQuery.from_dict(d) for d in items]
