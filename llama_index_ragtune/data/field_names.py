"""Unknown field names in a user's JSONL: say which accepted name was probably meant.

Files written for another tool name their fields otherwise (``query``, ``context``,
``passages``, SQuAD's ``answers``, ``relevant_docs``). :func:`unknown_fields_message`
names each unknown field with the accepted field it most likely stands for (a known
other name, else the closest spelling) and lists the accepted names, so one run tells
the user how to rename their columns.

Example::

    from llama_index_ragtune.data.field_names import unknown_fields_message

    unknown_fields_message(["query", "sourcse"], ["id", "question", "sources", "answer"])
    # "unknown field(s) ['query', 'sourcse'] ('query': did you mean 'question'?; 'sourcse':
    #  did you mean 'sources'?); the accepted fields are: id, question, sources, answer"
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

OTHER_NAMES: Mapping[str, tuple[str, ...]] = {
    "question": ("query", "q", "prompt", "question_text", "query_text", "input", "instruction"),
    "sources": (
        "context",
        "contexts",
        "passage",
        "passages",
        "documents",
        "docs",
        "ctxs",
        "retrieved",
        "retrieved_contexts",
        "source",
        "chunks",
    ),
    "gold": (
        "gold_ids",
        "gold_doc_ids",
        "gold_sources",
        "relevant_docs",
        "relevant_doc_ids",
        "positives",
        "positive_ids",
        "labels",
        "supporting_facts",
    ),
    "answer": (
        "answers",
        "reference",
        "reference_answer",
        "ground_truth",
        "ground_truths",
        "gold_answer",
        "response",
        "output",
        "target",
    ),
    "evidence": ("quote", "rationale", "supporting_text", "citation"),
    "id": (
        "qid",
        "_id",
        "question_id",
        "query_id",
        "uid",
        "doc_id",
        "document_id",
        "source_id",
        "passage_id",
        "chunk_id",
        "pid",
    ),
    "text": ("content", "page_content", "passage", "body", "chunk", "document", "contents"),
}
"""Names other tools give a field (lower case), by the name this package reads."""


def suggested_field(name: str, accepted: Sequence[str]) -> str | None:
    """The accepted field that ``name`` most likely means, or ``None``.

    Example::

        suggested_field("Query", ["question", "gold"])     # 'question'
        suggested_field("qestion", ["question", "gold"])   # 'question'
    """
    key = name.strip().lower()
    if key in accepted:  # another case or spacing of an accepted name: "Question"
        return key
    for field, others in OTHER_NAMES.items():
        if key in others and field in accepted:
            return field
    close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_fields_message(unknown: Iterable[str], accepted: Sequence[str]) -> str:
    """``unknown field(s) ['x'] ('x': did you mean 'y'?); the accepted fields are: ...``.

    Example::

        unknown_fields_message(["answers"], ["question", "answer"])
        # "unknown field(s) ['answers'] ('answers': did you mean 'answer'?); the accepted
        #  fields are: question, answer"
    """
    names = sorted(unknown)
    meant = {name: suggested_field(name, accepted) for name in names}
    guesses = [f"{name!r}: did you mean {meant[name]!r}?" for name in names if meant[name]]
    return (
        f"unknown field(s) {names}"
        + (f" ({'; '.join(guesses)})" if guesses else "")
        + f"; the accepted fields are: {', '.join(accepted)}"
    )
