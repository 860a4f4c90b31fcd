"""What ``CitationQueryEngine`` puts in ``Response.metadata``, built from the final answer.

``Response.metadata`` holds ``citations`` (``[{"number", "node_id",
"ref_doc_id", "claim", "source_snippet"}]``, valid ones, in order of first
appearance), ``cited_node_ids``, ``refused`` (the answer opens with the refusal and cites
nothing, or says nothing but the refusal around its markers: see
:func:`~llama_index_ragtune.grounding.is_refusal`; exactly one of ``refused``, cited
and ``uncited`` holds), ``uncited``
(an answer that is neither cited nor a refusal), ``invalid_citations``, ``raw_answer`` (the
LLM text before cleaning), ``source_node_ids`` (the numbered sources in
order), ``no_sources`` (nothing was retrieved, or not one source fit the context window),
``finished`` (True once the answer is whole, or its stream broke), ``error`` (None,
or the error that broke a streamed answer mid-way: ``"RuntimeError: ..."``),
``empty_answer`` (the LLM's answer says nothing -- ``content=None``, ``""``, only
spaces or invisible characters, or citation markers alone such as ``"[1]"``: no letter or
digit once its markers are removed --, so the refusal is served in its place, streamed
too: ``refused`` is True, ``raw_answer`` the LLM's own text), and:

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
  not found;
- ``left_out_node_ids`` / ``cut_node_ids``: retrieved sources left out of the prompt, or
  shown only in part (cut at a sentence), to fit the LLM's context window; ``prompt``: the
  prompt's tokens, the window and the answer's budget (``num_output``);
- ``finish_reason``: the LLM's (``raw["finish_reason"]``, OpenAI's ``choices``, or
  ``stop_reason``; None when it gives none) and ``truncated``: the answer was cut by the
  token limit. The cut last sentence is ``cut_claim`` (``{"claim", "citations"}``): a
  number it alone cites is not in ``citations``/``cited_node_ids``.

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
    find_citations,
    sentence_spans,
    strip_citations,
    truncate_source,
    valid_unicode,
)
from llama_index_ragtune.grounding.answers import SENTENCE_STOPS
from llama_index_ragtune.query_engine.post_check import check_citations
from llama_index_ragtune.query_engine.prompt_fit import PromptFit


def base_metadata(
    question: str, nodes: Sequence[NodeWithScore], fit: PromptFit | None = None
) -> dict[str, Any]:
    """The metadata of an answer in progress: every key present, nothing decided yet but
    how the sources were ``fit`` into the context window (when they were).

    Example::

        base_metadata("Capital of Italy?", nodes)["finished"]    # False
    """
    metadata = {
        # the question as the prompt holds it: a lone surrogate is U+FFFD there too (kept,
        # it failed every UTF-8 writer of the metadata: a log, a feedback store)
        "question": valid_unicode(question) if isinstance(question, str) else question,
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
        "left_out_node_ids": [],
        "cut_node_ids": [],
        "prompt": None,
        "finish_reason": None,
        "truncated": False,
        "cut_claim": None,
        "finished": False,
        "error": None,
        "empty_answer": False,
    }
    if fit is not None:
        metadata.update(
            left_out_node_ids=list(fit.left_out_node_ids),
            cut_node_ids=list(fit.cut_node_ids),
            prompt=fit.to_dict(),
        )
    return metadata


def fill_metadata(
    metadata: dict[str, Any],
    nodes: Sequence[NodeWithScore],
    answer: GroundedAnswer,
    source_texts: Sequence[str],
    raw: str | None = None,
    decision: Any = None,
    finish: str | None = None,
) -> None:
    """Fill ``metadata`` (in place) from the final ``answer`` over ``nodes``.

    ``source_texts`` are the texts the model was shown (quotes are checked
    against them); ``raw`` the model's own text when a post-check changed it;
    ``decision`` the refusal decision (a ``RefusalDecision`` or its dict);
    ``finish`` the LLM's finish reason (:func:`finish_reason`).

    Example::

        metadata = base_metadata(question, nodes)
        fill_metadata(metadata, nodes, parse_answer("Rome [2].", len(nodes)), texts)
        metadata["cited_node_ids"]     # the id of the second node
    """
    first_claim: dict[int, str] = {}  # each number's first claim, found in one pass
    for text, cited in cited_claims(answer.text):
        for number in cited:
            first_claim.setdefault(number, text)
    truncated = is_cut(finish)
    cut = cut_claim(answer, len(nodes)) if truncated else None
    unsupported = set(cut["citations"]) if cut else set()
    citations = []
    for number in answer.citations:  # valid by construction: 1 <= number <= len(nodes)
        if number in unsupported:
            continue
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
        uncited=not answer.refused and not citations,
        raw_answer=answer.raw if raw is None else raw,
        quotes=[q.to_dict() for q in quotes],
        unverified_quotes=sum(not q.verified for q in quotes),
        refusal_decision=None if decision is None else _as_dict(decision),
        finish_reason=finish,
        truncated=truncated,
        cut_claim=cut,
        finished=True,
    )


# what LLMs report for an answer stopped by the token limit (OpenAI, Anthropic, Gemini)
_CUT_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})
_SENTENCE_END = SENTENCE_STOPS  # a danda, "\u061f" or "\u06d4" ends a sentence too
_CLOSERS = "\"'\u201d\u2019\u00bb)]"


def is_cut(reason: str | None) -> bool:
    """Whether a finish reason says the answer was cut by the token limit.

    Example::

        is_cut("length"), is_cut("stop"), is_cut(None)     # (True, False, False)
    """
    return isinstance(reason, str) and reason.lower() in _CUT_REASONS


def finish_reason(response: Any) -> str | None:
    """Why the LLM stopped (``"stop"``, ``"length"``...), as it reports it, or None.

    Read from ``raw["finish_reason"]`` (``LocalChatLLM``), the last of ``raw.choices``
    (OpenAI, dict or object), ``stop_reason`` (Anthropic) or ``additional_kwargs``.

    Example::

        finish_reason(LocalChatLLM(max_new_tokens=2).chat(messages))   # 'length'
    """
    for where in (getattr(response, "raw", None), getattr(response, "additional_kwargs", None)):
        reason = _reason_in(where)
        if reason is not None:
            return reason
    return None


def _reason_in(where: Any, depth: int = 0) -> str | None:
    if where is None or depth > 2:
        return None

    def get(key: str) -> Any:
        if isinstance(where, dict):
            return where.get(key)
        try:
            return getattr(where, key, None)
        except Exception:  # an object whose attribute raises: no reason there
            return None

    for key in ("finish_reason", "stop_reason"):
        value = get(key)
        value = getattr(value, "value", getattr(value, "name", value))  # an enum member
        if isinstance(value, str) and value:
            return value
    for key in ("choices", "candidates"):
        items = get(key)
        if isinstance(items, (list, tuple)) and items:
            reason = _reason_in(items[-1], depth + 1)
            if reason is not None:
                return reason
    return None


def cut_claim(answer: GroundedAnswer, n_sources: int) -> dict[str, Any] | None:
    """The last sentence of a cut answer when it is unfinished, with the numbers only it
    cites (``{"claim", "citations"}``); None when the cut fell after a whole sentence.
    Serving and evaluation both read a cut answer through it.

    Example::

        cut_claim(parse_answer("Rome is the capital [1]. Paris is [2] the", 2), 2)
        # {'claim': 'Paris is [2] the', 'citations': [2]}
    """
    if answer.refused:
        return None
    spans = sentence_spans(answer.text)
    if not spans:
        return None
    start, end = spans[-1]
    claim = answer.text[start:end]
    if strip_citations(claim).rstrip().rstrip(_CLOSERS).endswith(tuple(_SENTENCE_END)):
        return None  # the limit fell right after a whole sentence
    before, inside = set(), []
    for mark in find_citations(answer.text, n_sources):
        if mark.end - len(mark.text) < start:
            before.update(mark.cited)
        else:
            inside.extend(n for n in mark.cited if n not in inside)
    only_here = [n for n in inside if n not in before and n in answer.citations]
    return {"claim": " ".join(claim.split()), "citations": only_here}


def llm_decision(response: Any) -> Any:
    """The refusal decision an LLM reported in ``raw`` (``LocalChatLLM`` with a policy), or None.

    Example::

        llm_decision(LocalChatLLM(path, refusal_threshold=0.4).chat(messages))["signal"]  # 'decoder'
    """
    raw = getattr(response, "raw", None)
    return raw.get("refusal_decision") if isinstance(raw, dict) else None


def _as_dict(decision: Any) -> dict[str, Any]:
    return decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
