"""Synthetic training queries: ask any LlamaIndex LLM for questions each node answers.

Questions go through four checks before they become training pairs: too short
(fewer than ``min_query_tokens`` words), a copy of the passage (``CopyFilter``: a
long run of words taken verbatim, or most of the query's word pairs found in the
passage; an easy query teaches the encoder nothing), not a usable question
(``QualityFilter``: too long, looping, sharing no topic word with the passage, or
an answer instead of a question, as small LLMs write when they ramble or answer
the prompt), and duplicates (same text up to case, punctuation and invisible
characters, ``twin_key``; by default a question produced for several nodes is dropped,
since it does not point at one passage).

What the LLM answers is read by ``synthetic_parsing.parse_questions`` (reasoning blocks,
JSON, code fences, ``Q:``/``A:`` pairs, chatter and echoed instructions left out). Blank
nodes are not sent; nodes with the same text are sent once and
each question names all of them; a passage longer than the LLM's context window is cut to
fit, with a note; when the LLM fails on every passage, one error names it and its first
error.

Example::

    from llama_index.core import Settings
    from llama_index_ragtune.data.synthetic import generate_synthetic_queries

    result = generate_synthetic_queries(nodes, llm=Settings.llm, num_questions_per_node=2)
    print(result.stats)           # {'nodes': 120, 'generated': 240, 'kept': 221, 'copy': 9, ...}
    result.pairs[0]               # ("What is the return window for fresh produce?", "node-id")
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.data.synthetic_filters import CopyFilter, QualityFilter
from llama_index_ragtune.data.synthetic_parsing import (
    MAX_QUESTION_CHARS,
    answer_text,
    as_prompt,
    echo_text,
    parse_questions,
    prompt_args,
    prompt_messages,
    query_tokens,
    window_fitter,
)

if TYPE_CHECKING:
    from llama_index.core.llms import LLM
    from llama_index.core.prompts import BasePromptTemplate
    from llama_index.core.schema import BaseNode

logger = logging.getLogger(__name__)

DEFAULT_QUERY_PROMPT = """\
Context information is below.
---------------------
{context_str}
---------------------
You write search queries for a retrieval test. Using only the context above, write \
{num_questions} different questions that this passage answers and that a user who has \
not seen the passage might type. Do not copy sentences from the passage; paraphrase. \
Write one question per line, with no numbering and no other text.
"""


class SyntheticQueryError(RuntimeError, ValueError):
    """The LLM gave no synthetic question to train on (it failed on every passage, or none of
    its questions passed the filters); the message says why and what to do. The CLI shows
    it as one line."""


# --------------------------------------------------------------------------- generation


@dataclass
class SyntheticQueries:
    """Result of ``generate_synthetic_queries``.

    ``pairs`` holds the kept ``(query, node_id)`` pairs, ``dropped`` the rejected
    ``(query, node_id, reason)`` triples, ``stats`` the counts per outcome (every generated
    question is kept or dropped for one reason; ``failed_nodes`` counts nodes).
    ``node_stats`` counts nodes not asked or not answered: ``blank`` (not sent),
    ``same_text`` (asked once with an earlier node of the same text), ``cut_to_window``
    (passage cut to fit the LLM's context window) and ``empty_answers`` (no question
    in the answer: empty, only reasoning or chatter).
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    node_stats: dict[str, int] = field(default_factory=dict)


def generate_synthetic_queries(
    nodes: Sequence[BaseNode],
    llm: LLM | None = None,
    num_questions_per_node: int = 2,
    prompt_template: str | BasePromptTemplate | None = None,
    copy_filter: CopyFilter | None = None,
    quality_filter: QualityFilter | None = None,
    min_query_tokens: int = 3,
    on_duplicate: Literal["drop", "first", "merge"] = "drop",
    use_async: bool = False,
    num_workers: int = 4,
    batch_size: int = 8,
    retries: int = 2,
    on_failure: Literal["skip", "raise"] = "skip",
    show_progress: bool = True,
) -> SyntheticQueries:
    """Generate ``num_questions_per_node`` questions per node with ``llm`` and filter them.

    Args:
        nodes: LlamaIndex nodes; the passage shown to the LLM is the node text
            without metadata.
        llm: any LlamaIndex LLM; ``None`` uses ``Settings.llm``.
        prompt_template: a string or ``PromptTemplate`` with ``{context_str}`` and
            ``{num_questions}`` (LlamaIndex's ``{num_questions_per_chunk}`` works too).
        copy_filter: the copy test; ``CopyFilter()`` by default, pass
            ``CopyFilter(None, None)`` to keep every question.
        quality_filter: the usability test (too long, looping, off the passage);
            ``QualityFilter()`` by default, ``QualityFilter(None, None, min_shared_words=0)``
            keeps every question.
        min_query_tokens: drop questions with fewer words (a script written without
            spaces, such as Chinese, counts character bigrams: ``query_tokens``).
        on_duplicate: a question produced for several nodes is dropped (``"drop"``),
            kept for the first node (``"first"``) or kept with every node as a
            positive (``"merge"``). Repeats within one node are always kept once. Nodes
            with the same text are asked once and each kept question is paired with
            every one of them (``stats["kept"]`` counts questions, ``pairs`` one per node).
        use_async: ask the LLM concurrently (``apredict``), ``num_workers`` at a time.
        batch_size: an LLM that answers many prompts at once (``generate_batch``, as
            ``LocalChatLLM`` does) gets this many passages per call; ``1`` asks one at
            a time. Passages a batch fails on are asked again one at a time.
        retries / on_failure: retries per node after an LLM error (a whole number >= 0),
            then skip the node (counted in ``stats["failed_nodes"]``) or raise. When every
            passage fails, ``RuntimeError`` names the LLM and the first error.

    Raises:
        ValueError: a count that is no whole number in range (``num_workers`` and
            ``batch_size`` >= 1, ``retries`` and ``min_query_tokens`` >= 0), an unknown
            ``on_failure`` / ``on_duplicate``, no node.
        TypeError: ``nodes`` is a string or holds something that is not a node.

    Example::

        from llama_index.core.llms import MockLLM
        result = generate_synthetic_queries(nodes, llm=MockLLM(), show_progress=False)
    """
    from llama_index.core import Settings
    from llama_index.core.schema import MetadataMode

    if (
        isinstance(num_questions_per_node, bool)
        or not isinstance(num_questions_per_node, int)
        or num_questions_per_node < 1
    ):
        raise ValueError(
            f"num_questions_per_node must be a whole number >= 1, got {num_questions_per_node!r}"
        )
    _check_count("batch_size", batch_size, 1)
    _check_count("num_workers", num_workers, 1)  # 0 waited forever for a free worker
    _check_count("retries", retries, 0)  # below 0 asked nothing and failed every node silently
    _check_count("min_query_tokens", min_query_tokens, 0)
    if on_failure not in ("skip", "raise"):
        raise ValueError(f"on_failure must be 'skip' or 'raise', got {on_failure!r}")
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
        raise TypeError(f"nodes must be a list of LlamaIndex nodes, got {type(nodes).__name__}")
    nodes = list(nodes)
    if not nodes:
        raise ValueError("generate_synthetic_queries needs at least one node")
    bad = next((i for i, node in enumerate(nodes) if not hasattr(node, "get_content")), None)
    if bad is not None:
        raise TypeError(
            f"nodes[{bad}] is a {type(nodes[bad]).__name__}, not a LlamaIndex node: wrap texts "
            "as TextNode(text=...) with an id"
        )
    if on_duplicate not in ("drop", "first", "merge"):
        raise ValueError(f"on_duplicate must be 'drop', 'first' or 'merge', got {on_duplicate!r}")
    llm = llm if llm is not None else Settings.llm
    prompt = as_prompt(prompt_template, DEFAULT_QUERY_PROMPT)
    copy_filter = copy_filter if copy_filter is not None else CopyFilter()
    quality_filter = quality_filter if quality_filter is not None else QualityFilter()
    texts = {node.node_id: node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes}
    twins = _same_text_groups(texts)
    fit = window_fitter(llm, prompt, num_questions_per_node)
    shown = {first: fit(texts[first]) for first in twins}
    if not shown:
        raise ValueError(
            f"all {len(texts)} nodes are blank (only whitespace or invisible characters): "
            "there is no passage to ask the LLM about"
        )
    node_stats = {
        "blank": len(texts) - sum(len(group) for group in twins.values()),
        "same_text": sum(len(group) - 1 for group in twins.values()),
        "cut_to_window": sum(shown[first] != texts[first] for first in shown),
        "empty_answers": 0,
    }
    if node_stats["cut_to_window"]:
        logger.warning(
            "%d passage(s) cut to fit the LLM's context window", node_stats["cut_to_window"]
        )

    errors: list[tuple[str, Exception]] = []
    answers = _ask(
        llm,
        prompt,
        shown,
        num_questions_per_node,
        use_async,
        num_workers,
        batch_size,
        retries,
        on_failure,
        show_progress,
        errors,
    )
    if errors and all(answers.get(first) is None for first in shown):
        node_id, err = errors[0]
        raise SyntheticQueryError(
            f"the LLM {_llm_name(llm)} failed on every one of the {len(shown)} passages "
            f"(tries per passage: {retries + 1}); the first error, on node {node_id!r}, was "
            f"{type(err).__name__}: {err}. Check the LLM (its key, address, model name, "
            "rate limit) or pass labelled queries"
        )

    result = SyntheticQueries()
    stats = dict.fromkeys(STATS_KEYS, 0)
    stats["nodes"] = len(texts)
    echoed = echo_text(prompt, num_questions_per_node)
    candidates: list[tuple[str, str]] = []
    for node_id in shown:
        text = texts[node_id]
        answer = answers.get(node_id)
        if answer is None:
            stats["failed_nodes"] += len(twins[node_id])
            continue
        questions = parse_questions(answer, limit=num_questions_per_node, echo=echoed)
        node_stats["empty_answers"] += not questions
        seen_here: set[str] = set()
        for question in questions:
            stats["generated"] += 1
            key = twin_key(question)
            reason = _rejection(question, text, min_query_tokens, copy_filter, quality_filter)
            if reason is None and key in seen_here:
                reason = "duplicate"
            if reason is None:
                seen_here.add(key)
                candidates.append((question, node_id))
                continue
            result.dropped.append((question, node_id, reason))
            stats["copy" if reason in ("copied_ngram", "overlap_ratio") else reason] += 1

    nodes_per_key: dict[str, set[str]] = {}
    for question, node_id in candidates:
        nodes_per_key.setdefault(twin_key(question), set()).add(node_id)
    kept_keys: set[str] = set()
    for question, node_id in candidates:
        key = twin_key(question)
        shared = len(nodes_per_key[key]) > 1
        if (shared and on_duplicate == "drop") or (on_duplicate == "first" and key in kept_keys):
            result.dropped.append((question, node_id, "duplicate"))
            stats["duplicate"] += 1
            continue
        kept_keys.add(key)
        stats["kept"] += 1
        result.pairs.extend((question, twin) for twin in twins[node_id])
    result.stats = stats
    result.node_stats = node_stats
    logger.info("synthetic queries: %s; nodes: %s", stats, node_stats)
    return result


#: The counts of ``SyntheticQueries.stats``, in this order.
STATS_KEYS = (
    "nodes",
    "generated",
    "kept",
    "too_short",
    "copy",
    "too_long",
    "degenerate",
    "off_passage",
    "not_a_question",
    "duplicate",
    "failed_nodes",
)


def _check_count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def _rejection(
    question: str,
    passage: str,
    min_query_tokens: int,
    copy_filter: CopyFilter,
    quality_filter: QualityFilter,
) -> str | None:
    """Why ``question`` is no training question for ``passage`` (a reason of ``dropped``)."""
    if len(query_tokens(question)) < min_query_tokens:
        return "too_short"
    if len(question) > MAX_QUESTION_CHARS:
        return "too_long"
    return copy_filter.reason(question, passage) or quality_filter.reason(question, passage)


def _same_text_groups(texts: dict[str, str]) -> dict[str, list[str]]:
    """``{first node id: ids of every node with its text}`` (``twin_key``), blank nodes left
    out: a question one of them answers is answered by each, so the LLM is asked once."""
    groups: dict[str, list[str]] = {}
    for node_id, text in texts.items():
        if not is_blank(text):
            groups.setdefault(twin_key(text), []).append(node_id)
    return {ids[0]: ids for ids in groups.values()}


def _llm_name(llm: Any) -> str:
    try:
        model = getattr(llm.metadata, "model_name", None)
    except Exception:  # noqa: BLE001 - a name for an error message only
        model = None
    return f"{type(llm).__name__}" + (f" ({model!r})" if model else "")


def _ask_batched(
    llm: Any,
    prompt: BasePromptTemplate,
    texts: dict[str, str],
    n: int,
    batch_size: int,
    show_progress: bool,
) -> dict[str, str | None]:
    """Answers from ``llm.generate_batch`` (the messages ``llm.predict`` would send); empty
    when the batch call fails, so that every passage is asked again one at a time."""
    conversations = [prompt_messages(llm, prompt, text, n) for text in texts.values()]
    try:
        responses = list(
            llm.generate_batch(conversations, batch_size=batch_size, show_progress=show_progress)
        )
        if len(responses) != len(conversations):
            raise ValueError(f"{len(responses)} answers for {len(conversations)} prompts")
        contents = [getattr(getattr(r, "message", None), "content", None) for r in responses]
    except Exception as err:  # noqa: BLE001 - any failure falls back to one prompt at a time
        logger.warning("batched generation failed (%s); asking one passage at a time", err)
        return {}
    return {
        node_id: None if content is None else answer_text(content)
        for node_id, content in zip(texts, contents, strict=True)
    }


def _ask(
    llm: LLM,
    prompt: BasePromptTemplate,
    texts: dict[str, str],
    n: int,
    use_async: bool,
    num_workers: int,
    batch_size: int,
    retries: int,
    on_failure: str,
    show_progress: bool,
    errors: list[tuple[str, Exception]],
) -> dict[str, str | None]:
    """The LLM's answer text per node id (``None`` for nodes that failed; each failure's
    last error is appended to ``errors``)."""
    batched: dict[str, str | None] = {}
    if not use_async and batch_size > 1 and callable(getattr(llm, "generate_batch", None)):
        batched = _ask_batched(llm, prompt, texts, n, batch_size, show_progress)
        texts = {k: t for k, t in texts.items() if batched.get(k) is None}
        if not texts:
            return batched

    def failed(node_id: str, err: Exception) -> None:
        errors.append((node_id, err))
        if on_failure == "raise":
            raise RuntimeError(
                f"LLM failed on node {node_id!r} after {retries + 1} tries: {err}"
            ) from err
        logger.warning(
            "LLM failed on node %r after %d tries, skipped: %s", node_id, retries + 1, err
        )

    if not use_async:
        from tqdm.auto import tqdm

        answers: dict[str, str | None] = {}
        for node_id, text in tqdm(
            texts.items(), desc="Synthetic queries", disable=not show_progress
        ):
            answers[node_id] = None
            for attempt in range(retries + 1):
                try:
                    answers[node_id] = answer_text(
                        llm.predict(prompt, **prompt_args(prompt, text, n))
                    )
                    break
                except Exception as err:  # noqa: BLE001 - any LLM client error is retried
                    if attempt == retries:
                        failed(node_id, err)
        return {**batched, **answers}

    from llama_index.core.async_utils import asyncio_run, run_jobs

    async def one(node_id: str, text: str) -> tuple[str, str | None]:
        for attempt in range(retries + 1):
            try:
                answer = await llm.apredict(prompt, **prompt_args(prompt, text, n))
                return node_id, answer_text(answer)
            except Exception as err:  # noqa: BLE001
                if attempt == retries:
                    failed(node_id, err)
        return node_id, None

    jobs = [one(node_id, text) for node_id, text in texts.items()]
    results = asyncio_run(
        run_jobs(jobs, show_progress=show_progress, workers=num_workers, desc="Synthetic queries")
    )
    return dict(results)
