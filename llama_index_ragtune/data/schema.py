"""Retrieval training data: queries, a corpus, positives per query and hard negatives.

``RetrievalDataset`` is the one training-set type of the encoder side. The
bi-encoder and cross-encoder engines read it; the hard-negative miner fills its
``negatives``; it loads from BEIR folders, from (query, node ids) pairs, from
synthetic questions over LlamaIndex nodes, and from LlamaIndex's
``EmbeddingQAFinetuneDataset`` JSON, which it also writes.

Example::

    from llama_index_ragtune.data import RetrievalDataset

    ds = RetrievalDataset.from_pairs(
        [("how do I return apples?", ["grocery-returns"])],
        corpus={"grocery-returns": "Fresh produce can be returned within 7 days.",
                "electronics-returns": "Apple devices can be returned within 14 days."},
    )
    ds = ds.with_negatives({ds.query_ids[0]: ["electronics-returns"]})
    ds.to_triplets()   # [{"anchor": ..., "positive": ..., "negative": ...}]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune.data.builders import beir_fields, nodes_fields, pairs_fields
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.records import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Negative,
    RetrievalExample,
    normalize_text,
    stable_query_id,
)
from llama_index_ragtune.data.serialization import (
    embedding_qa_dataset_class,
    parse_dataset_dict,
    read_dataset_json,
    write_dataset_json,
)
from llama_index_ragtune.data.splitting import split_query_ids
from llama_index_ragtune.data.training_rows import TrainingRowsMixin
from llama_index_ragtune.data.validation import (
    check_fields,
    coerce_grades,
    coerce_ids,
    coerce_negatives,
    coerce_positives,
)
from llama_index_ragtune.data.validation import fmt_ids as _fmt_ids

if TYPE_CHECKING:
    from llama_index.core.llms import LLM
    from llama_index.core.schema import BaseNode, MetadataMode

# the records live in ``records``; importing them from here keeps working
__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Negative",
    "RetrievalDataset",
    "RetrievalExample",
    "normalize_text",
    "stable_query_id",
]


# --------------------------------------------------------------------------- dataset


@dataclass
class RetrievalDataset(TrainingRowsMixin):
    """Queries, a corpus, several positives per query, and hard negatives.

    Fields match LlamaIndex's ``EmbeddingQAFinetuneDataset`` (``queries``, ``corpus``,
    ``relevant_docs``, ``mode``) plus ``negatives``, free-form ``metadata``
    (provenance such as the miner's settings) and optional graded relevance:
    ``grades`` maps a query to ``{positive doc id: grade}`` (BEIR qrels keep their
    grades; a positive without a grade counts as grade 1, and engines train on the
    strongest positives first). The dataset is checked on construction (see
    ``validate``); its methods return new datasets.

    Example::

        ds = RetrievalDataset(
            queries={"q1": "apple return policy?"},
            corpus={"d1": "Groceries: apples can be returned...", "d2": "Electronics: Apple..."},
            relevant_docs={"q1": ["d1"]},
            negatives={"q1": [Negative("d2", source="curated")]},
        )
        for qid, query, positive_ids, negatives in ds:
            ...
    """

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    negatives: dict[str, list[Negative]] = field(default_factory=dict)
    mode: str = "text"
    metadata: dict[str, Any] = field(default_factory=dict)
    grades: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queries = coerce_ids(self.queries, "queries", "{query_id: text}")
        self.corpus = coerce_ids(self.corpus, "corpus", "{doc_id: text}")
        self.relevant_docs = {
            qid: coerce_positives(qid, ids)
            for qid, ids in coerce_ids(
                self.relevant_docs, "relevant_docs", "{query_id: [doc_id]}"
            ).items()
        }
        self.negatives = {
            qid: coerce_negatives(qid, negs)
            for qid, negs in coerce_ids(
                self.negatives, "negatives", "{query_id: [Negative]}"
            ).items()
        }
        if not isinstance(self.mode, str):
            raise DataError(f"RetrievalDataset.mode must be a string, got {self.mode!r}")
        if not isinstance(self.metadata, Mapping):
            raise DataError(
                f"RetrievalDataset.metadata must be a mapping, got {type(self.metadata).__name__}"
            )
        self.metadata = dict(self.metadata)
        self.grades = coerce_grades(self.grades, self.queries, self.relevant_docs)
        self.validate()

    def grade(self, qid: str, doc_id: str) -> int:
        """The grade of positive ``doc_id`` for query ``qid`` (1 when none is recorded)."""
        return self.grades.get(qid, {}).get(doc_id, 1)

    def graded_qrels(self) -> dict[str, dict[str, int]]:
        """``{qid: {doc_id: grade}}`` for every positive (the qrels evaluators take)."""
        return {q: {d: self.grade(q, d) for d in docs} for q, docs in self.relevant_docs.items()}

    # ------------------------------------------------------------------ checks

    def validate(self) -> RetrievalDataset:
        """Raise ``DataError`` (a ``ValueError``) naming the offending ids when inconsistent.

        Checks: non-empty corpus and query set; every query has non-empty text and at
        least one positive; every positive and negative refers to a corpus id whose
        text is not empty; no negative is a positive of its own query; no
        positives/negatives for unknown queries. Returns ``self`` so it can be chained
        (call it again after changing the dicts in place).

        Example::

            RetrievalDataset(queries={"q1": "hi"}, corpus={"d1": ""}, relevant_docs={"q1": ["d1"]})
            # DataError: RetrievalDataset: positives with empty text (query:doc): 'q1:d1'; ...
        """
        check_fields(self._label(), self.queries, self.corpus, self.relevant_docs, self.negatives)
        return self

    def _label(self) -> str:
        """``RetrievalDataset`` plus where it came from, for error messages."""
        origin = [
            str(self.metadata[k])
            for k in ("source", "name", "split", "path")
            if isinstance(self.metadata, Mapping) and self.metadata.get(k)
        ]
        return "RetrievalDataset" + (f" ({' '.join(origin)})" if origin else "")

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self.queries)

    def __iter__(self) -> Iterator[RetrievalExample]:
        for qid, query in self.queries.items():
            positives = self.relevant_docs.get(qid)
            if not positives:
                raise DataError(
                    f"{self._label()}: query {qid!r} has no positive document (were the dicts "
                    "changed after the dataset was built?); call dataset.validate() to list all "
                    "problems"
                )
            yield RetrievalExample(qid, query, list(positives), list(self.negatives.get(qid, [])))

    def __repr__(self) -> str:
        return (
            f"RetrievalDataset(queries={len(self.queries)}, corpus={len(self.corpus)}, "
            f"pairs={self.num_pairs}, negatives={self.num_negatives})"
        )

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    @property
    def num_pairs(self) -> int:
        """Number of (query, positive) pairs."""
        return sum(len(self.relevant_docs.get(q, ())) for q in self.queries)

    @property
    def num_negatives(self) -> int:
        return sum(len(v) for v in self.negatives.values())

    def negative_sources(self) -> dict[str, int]:
        """Count of negatives per source."""
        counts: dict[str, int] = {}
        for negs in self.negatives.values():
            for n in negs:
                counts[n.source] = counts.get(n.source, 0) + 1
        return counts

    def _replace(self, **changes: Any) -> RetrievalDataset:
        data = {
            "queries": self.queries,
            "corpus": self.corpus,
            "relevant_docs": self.relevant_docs,
            "negatives": self.negatives,
            "mode": self.mode,
            "metadata": dict(self.metadata),
            "grades": self.grades,
        }
        data.update(changes)
        if "grades" not in changes:  # keep the grades of the queries and positives that remain
            relevant = data["relevant_docs"]
            data["grades"] = {
                q: {d: g for d, g in graded.items() if d in set(relevant.get(q, ()))}
                for q, graded in self.grades.items()
                if q in data["queries"]
            }
        return RetrievalDataset(**data)

    # ------------------------------------------------------------------ derived sets

    def subset(self, qids: Iterable[str]) -> RetrievalDataset:
        """The dataset restricted to ``qids`` (the corpus is kept whole)."""
        qids = list(dict.fromkeys(qids))
        unknown = [q for q in qids if q not in self.queries]
        if unknown:
            raise ValueError(f"subset: unknown query ids {_fmt_ids(unknown)}")
        return self._replace(
            queries={q: self.queries[q] for q in qids},
            relevant_docs={q: list(self.relevant_docs[q]) for q in qids},
            negatives={q: list(self.negatives[q]) for q in qids if q in self.negatives},
        )

    def with_negatives(
        self,
        negatives: Mapping[str, Sequence[Negative | str]],
        source: str = "curated",
        replace: bool = False,
    ) -> RetrievalDataset:
        """A copy with ``negatives`` added (or, with ``replace=True``, instead of the old ones).

        Plain doc-id strings become ``Negative(doc_id, source)``. A doc id already
        listed for the query is kept once (first occurrence wins).
        """
        unknown = [q for q in negatives if q not in self.queries]
        if unknown:
            raise ValueError(f"with_negatives: unknown query ids {_fmt_ids(unknown)}")
        merged = {} if replace else {q: list(v) for q, v in self.negatives.items()}
        for qid, negs in negatives.items():
            current = merged.setdefault(qid, [])
            seen = {n.doc_id for n in current}
            for neg in negs:
                neg = Negative(neg, source) if isinstance(neg, str) else neg
                if neg.doc_id not in seen:
                    current.append(neg)
                    seen.add(neg.doc_id)
        return self._replace(negatives={q: v for q, v in merged.items() if v})

    def split(
        self, val_fraction: float = 0.1, seed: int = 0, group_by_positive: bool = False
    ) -> tuple[RetrievalDataset, RetrievalDataset]:
        """Split by query into ``(train, val)``; both keep the whole corpus.

        A query's positives and negatives stay with it, and twins (the same question
        under two ids, up to case, spacing, punctuation and invisible characters) go to
        one side. When a document is a positive of queries on both sides, a warning
        gives the count; ``group_by_positive=True`` keeps such queries on one side.
        """
        train_ids, val_ids = split_query_ids(
            self.queries,
            self.relevant_docs,
            val_fraction=val_fraction,
            seed=seed,
            group_by_positive=group_by_positive,
        )
        return self.subset(train_ids), self.subset(val_ids)

    # ------------------------------------------------------------------ JSON / LlamaIndex

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "queries": self.queries,
            "corpus": self.corpus,
            "relevant_docs": self.relevant_docs,
            "negatives": {q: [n.to_dict() for n in v] for q, v in self.negatives.items()},
            "metadata": self.metadata,
            **({"grades": self.grades} if self.grades else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrievalDataset:
        """Build from our JSON layout or LlamaIndex's ``EmbeddingQAFinetuneDataset`` layout."""
        return cls(**parse_dataset_dict(data))

    def save_json(
        self, path: str | Path, format: Literal["ragtune", "llama_index"] = "ragtune"
    ) -> None:
        """Write the dataset as JSON.

        ``format="ragtune"`` (default) keeps everything. ``format="llama_index"`` writes
        the ``EmbeddingQAFinetuneDataset`` layout (``queries``, ``corpus``,
        ``relevant_docs``, ``mode``) that LlamaIndex tools read; it has no place for
        negatives, so they are dropped with a warning.
        """
        if format == "llama_index" and self.negatives:
            warnings.warn(
                f"save_json(format='llama_index') drops {self.num_negatives} negatives: "
                "the LlamaIndex layout cannot hold them (use format='ragtune')",
                stacklevel=2,
            )
        write_dataset_json(self.to_dict(), path, format=format)

    @classmethod
    def load_json(cls, path: str | Path) -> RetrievalDataset:
        """Read a dataset saved by ``save_json`` or by LlamaIndex (format auto-detected).

        Raises ``FileNotFoundError`` for a missing file and ``DataError`` (naming the
        file and the line, JSON path or ids) for a malformed or inconsistent one.

        Example::

            train = RetrievalDataset.load_json("runs/train_dataset.json")
        """
        kwargs = read_dataset_json(path)
        try:
            return cls(**kwargs)
        except DataError as err:
            raise DataError(str(err), path=Path(path).expanduser()) from None

    def to_llama_index(self) -> Any:
        """This dataset as LlamaIndex's ``EmbeddingQAFinetuneDataset`` (negatives are dropped)."""
        return embedding_qa_dataset_class()(
            queries=dict(self.queries),
            corpus=dict(self.corpus),
            relevant_docs={q: list(v) for q, v in self.relevant_docs.items()},
            mode=self.mode,
        )

    @classmethod
    def from_llama_index(cls, dataset: Any) -> RetrievalDataset:
        """From an ``EmbeddingQAFinetuneDataset`` (or any object/mapping with its fields)."""
        if isinstance(dataset, Mapping):
            return cls.from_dict(dataset)
        missing = [k for k in ("queries", "corpus", "relevant_docs") if not hasattr(dataset, k)]
        if missing:
            raise TypeError(
                f"from_llama_index expects an EmbeddingQAFinetuneDataset; "
                f"{type(dataset).__name__} has no {', '.join(missing)}"
            )
        return cls(
            queries=dict(dataset.queries),
            corpus=dict(dataset.corpus),
            relevant_docs={q: list(v) for q, v in dataset.relevant_docs.items()},
            mode=getattr(dataset, "mode", "text"),
        )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_beir(
        cls,
        path: str | Path,
        split: str = "train",
        min_grade: int = 1,
        max_queries: int | None = None,
        judged_negatives: bool = True,
    ) -> RetrievalDataset:
        """From a BEIR folder: positives are the docs graded ``>= min_grade``.

        Docs judged below ``min_grade`` become negatives with source ``"judged"`` when
        ``judged_negatives`` is true. Queries without any positive are dropped (logged).

        Example::

            train = RetrievalDataset.from_beir("../shared/data/scifact", split="train")
        """
        return cls(
            **beir_fields(
                path,
                split=split,
                min_grade=min_grade,
                max_queries=max_queries,
                judged_negatives=judged_negatives,
            )
        )

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[str, Sequence[str] | str]],
        corpus: Mapping[str, str] | Sequence[BaseNode],
        metadata_mode: MetadataMode | str = "embed",
    ) -> RetrievalDataset:
        """From ``(query text, relevant doc/node ids)`` pairs.

        ``corpus`` is ``{doc_id: text}`` or LlamaIndex nodes (text taken with
        ``metadata_mode``, "embed" by default: what an embedding model sees at index
        time). Query ids are stable hashes of the normalised text; pairs with the same
        normalised query are merged.

        Example::

            ds = RetrievalDataset.from_pairs([("apple return policy?", ["node-1"])], nodes)
        """
        return cls(**pairs_fields(pairs, corpus, metadata_mode=metadata_mode))

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        llm: LLM | None = None,
        num_questions_per_node: int = 2,
        prompt_template: Any = None,
        metadata_mode: MetadataMode | str = "embed",
        **kwargs: Any,
    ) -> RetrievalDataset:
        """Synthetic questions for every node, asked to ``llm`` (``Settings.llm`` when None).

        See ``llama_index_ragtune.data.synthetic.generate_synthetic_queries`` for the
        prompt, the copy filter, dedupe and async options (passed through ``kwargs``).

        Example::

            ds = RetrievalDataset.from_nodes(nodes, llm=my_llm, num_questions_per_node=2)
        """
        return cls(
            **nodes_fields(
                nodes,
                llm=llm,
                num_questions_per_node=num_questions_per_node,
                prompt_template=prompt_template,
                metadata_mode=metadata_mode,
                **kwargs,
            )
        )
