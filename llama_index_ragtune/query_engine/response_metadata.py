"""What ``CitationQueryEngine`` puts in ``Response.metadata``, built from the final answer.

``Response.metadata`` holds ``citations`` (``[{"number", "node_id",
"ref_doc_id", "claim", "source_snippet"}]``, valid ones, in order of first
appearance), ``cited_node_ids``, ``refused`` (the answer opens with the refusal and cites
nothing, or says nothing but the refusal around its markers: see
:func:`~llama_index_ragtune.grounding.is_refusal`; exactly one of ``refused``, cited
and ``uncited`` holds), ``uncited``
(an answer that is neither cited nor a refusal), ``invalid_citations``, ``raw_answer`` (the
LLM text before cleaning), ``source_node_ids`` (the numbered sources in
order), ``no_sources`` (nothing was retrieved), ``finished``, and:

- ``refusal_decision``: why the answer was (or was not) refused -- the signal
  (``decoder``, ``answerability``, ``combined``), its value, the threshold,
  every signal's value and a readable ``explanation`` -- when a refusal policy
  decided (``refusal_policy=`` here, or the LLM's own, e.g.
  ``LocalChatLLM(refusal_threshold=...)``); None otherwise;
- ``post_check``: the answered claims without a valid citation, flagged
  (``uncited="flag"``, default) or cited with the source the model finds most
  likely (``uncited="cite"``, needs an LLM with ``citation_probabilities`` such
  as ``LocalChatLLM``; the cited text is the response, ``post_checked_answer``
  the model's text with the added citations): ``{"mode", "added_citations",
  "uncited_claims"}``;
- ``quotes``: each quoted span of the answer checked against the source it
  cites (``grounding.check_quotes``), and ``unverified_quotes``, their count
  not found.

Example::

    response = engine.query("What is the return window for opened iPhones?")
    response.metadata["cited_node_ids"], response.metadata["refused"]
    response.metadata["refusal_decision"]["explanation"]   # when a refusal policy decided
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import NodeWithScore

from llama_index_ragtune.grounding import (
    GroundedAnswer,
    check_quotes,
    cited_claims,
    strip_citations,
    truncate_source,
)
from llama_index_ragtune.query_engine.post_check import check_citations


def base_metadata(question: str, nodes: Sequence[NodeWithScore]) -> dict[str, Any]:
    """The metadata of an answer in progress: every key present, nothing decided yet.

    Example::

        base_metadata("Capital of Italy?", nodes)["finished"]    # False
    """
    return {
        "question": question,
        "source_node_ids": [n.node.node_id for n in nodes],
        "citations": [],
        "cited_node_ids": [],
        "invalid_citations": [],
        "refused": False,
        "uncited": False,
        "raw_answer": None,
        "no_sources": not nodes,
        "refusal_decision": None,
        "post_check": None,
        "quotes": [],
        "unverified_quotes": 0,
        "finished": False,
    }


def fill_metadata(
    metadata: dict[str, Any],
    nodes: Sequence[NodeWithScore],
    answer: GroundedAnswer,
    source_texts: Sequence[str],
    raw: str | None = None,
    decision: Any = None,
) -> None:
    """Fill ``metadata`` (in place) from the final ``answer`` over ``nodes``.

    ``source_texts`` are the texts the model was shown (quotes are checked
    against them); ``raw`` the model's own text when a post-check changed it;
    ``decision`` the refusal decision (a ``RefusalDecision`` or its dict).

    Example::

        metadata = base_metadata(question, nodes)
        fill_metadata(metadata, nodes, parse_answer("Rome [2].", len(nodes)), texts)
        metadata["cited_node_ids"]     # the id of the second node
    """
    first_claim: dict[int, str] = {}  # each number's first claim, found in one pass
    for text, cited in cited_claims(answer.text):
        for number in cited:
            first_claim.setdefault(number, text)
    citations = []
    for number in answer.citations:  # valid by construction: 1 <= number <= len(nodes)
        node = nodes[number - 1].node
        claim = first_claim.get(number)
        citations.append(
            {
                "number": number,
                "node_id": node.node_id,
                "ref_doc_id": node.ref_doc_id,
                "claim": claim if claim is not None else strip_citations(answer.text),
                "source_snippet": truncate_source(node.get_content(), 200),
            }
        )
    quotes = [] if answer.refused else check_quotes(answer.text, list(source_texts))
    if metadata.get("post_check") is None:
        metadata["post_check"] = check_citations(
            answer.text, len(nodes), "flag", source_texts=source_texts
        ).to_dict()
    metadata.update(
        citations=citations,
        cited_node_ids=list(dict.fromkeys(c["node_id"] for c in citations)),
        invalid_citations=list(answer.invalid_citations),
        refused=answer.refused,
        uncited=answer.uncited,
        raw_answer=answer.raw if raw is None else raw,
        quotes=[q.to_dict() for q in quotes],
        unverified_quotes=sum(not q.verified for q in quotes),
        refusal_decision=None if decision is None else _as_dict(decision),
        finished=True,
    )


def llm_decision(response: Any) -> Any:
    """The refusal decision an LLM reported in ``raw`` (``LocalChatLLM`` with a policy), or None.

    Example::

        llm_decision(LocalChatLLM(path, refusal_threshold=0.4).chat(messages))["signal"]  # 'decoder'
    """
    raw = getattr(response, "raw", None)
    return raw.get("refusal_decision") if isinstance(raw, dict) else None


def _as_dict(decision: Any) -> dict[str, Any]:
    return decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
