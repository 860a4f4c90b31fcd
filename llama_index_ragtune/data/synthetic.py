"""Synthetic training queries: ask any LlamaIndex LLM for questions each node answers.

Questions go through four checks before they become training pairs: too short
(fewer than ``min_query_tokens`` words), a copy of the passage (``CopyFilter``: a
long run of words taken verbatim, or most of the query's word pairs found in the
passage; an easy query teaches the encoder nothing), not a usable question
(``QualityFilter``: too long, looping, sharing no topic word with the passage, or
an answer instead of a question, as small LLMs write when they ramble or answer
the prompt), and duplicates (same normalised text; by default a question produced
for several nodes is dropped, since it does not point at one passage).

Example::

    from llama_index.core import Settings
    from llama_index_ragtune.data.synthetic import generate_synthetic_queries

    result = generate_synthetic_queries(nodes, llm=Settings.llm, num_questions_per_node=2)
    print(result.stats)           # {'nodes': 120, 'generated': 240, 'kept': 221, 'copy': 9, ...}
    result.pairs[0]               # ("What is the return window for fresh produce?", "node-id")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune.data.records import normalize_text

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

_PREFIX = re.compile(
    r"^\s*(?:[-*\u2022]+\s*)?(?:\*\*)?"
    r"(?:\(?\d+[\).:\]](?!\d)|(?:q|question|query|sentence|example|item)\s*#?\s*\d*\s*[:.)])"
    r"(?:\*\*)?\s*|^\s*[-*\u2022]+\s*",
    re.IGNORECASE,
)
"""A line's numbering, bullet or label ("1.", "- ", "Q2:", "**Question 3:**", "Sentence 1:")."""


# --------------------------------------------------------------------------- filters


@dataclass
class CopyFilter:
    """Flags queries that copy their passage.

    Args:
        max_copied_ngram: drop a query sharing a run of this many consecutive words
            with the passage (``None`` disables).
        max_overlap_ratio: drop a query when at least this fraction of its word
            n-grams (``overlap_ngram`` words each) occurs in the passage (``None``
            disables). Applied to queries of at least ``overlap_ngram + 3`` words.
        overlap_ngram: n-gram size of the ratio test (2 = word pairs; unigram overlap
            is high for good questions too).
    """

    max_copied_ngram: int | None = 10
    max_overlap_ratio: float | None = 0.8
    overlap_ngram: int = 2

    def reason(self, query: str, passage: str) -> str | None:
        """``"copied_ngram"`` or ``"overlap_ratio"`` when the query copies the passage, else None."""
        q = normalize_text(query).split()
        p = normalize_text(passage).split()
        n = self.max_copied_ngram
        if n is not None and len(q) >= n and _ngrams(q, n) & _ngrams(p, n):
            return "copied_ngram"
        k = self.overlap_ngram
        if self.max_overlap_ratio is not None and len(q) >= k + 3:
            q_grams = [tuple(q[i : i + k]) for i in range(len(q) - k + 1)]
            p_grams = _ngrams(p, k)
            ratio = sum(g in p_grams for g in q_grams) / len(q_grams)
            if ratio >= self.max_overlap_ratio:
                return "overlap_ratio"
        return None

    def __call__(self, query: str, passage: str) -> bool:
        return self.reason(query, passage) is not None


# Words that say nothing about a passage's topic (question words, auxiliaries, pronouns,
# prepositions); what remains of a question must meet the passage at least once.
_FUNCTION_WORDS = frozenset(
    """a about above after again against all am an and any are as at be been before being
    below between both but by can could did do does doing down during each else ever
    every few for from further get gets got had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not now of off on once
    only or other our out over own same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours question
    questions answer answers passage context text""".split()  # noqa: SIM905 - reads as a list
)


def _content_stems(text: str) -> set[str]:
    """Topic words of ``text`` (function words left out), cut to 5 characters so that
    "returns" meets "returned"."""
    return {w[:5] for w in normalize_text(text).split() if w not in _FUNCTION_WORDS}


# an answer labelled as such, or a Markdown heading copied from the passage
_NOT_A_QUERY = re.compile(r"\s*(?:(?:answer|a)\s*:|#{1,6}\s)", re.IGNORECASE)


@dataclass
class QualityFilter:
    """Flags generated lines that are not usable search questions.

    Small LLMs loop, ramble or answer the prompt instead of the passage; such lines
    would teach the encoder to match noise.

    Args:
        max_query_tokens: drop a question longer than this many words (``"too_long"``;
            ``None`` disables): a search question is a sentence, not a paragraph.
        max_ngram_repeats: drop a question in which a run of ``repeat_ngram`` words
            occurs more than this many times (``"degenerate"``: the model looped;
            ``None`` disables).
        min_shared_words: drop a question sharing fewer topic words (function words
            left out, compared on their first 5 letters) with its passage
            (``"off_passage"``: it is about the prompt or nothing; ``0`` disables).
        drop_statements: drop an answer or a statement instead of a query
            (``"not_a_question"``: a line labelled ``Answer:``, a Markdown heading, or a
            sentence of six words or more ending in a full stop; a keyword query such as
            "apple return policy" is kept).

    Example::

        QualityFilter().reason("I'm ready to help. What's your question?", "Apples: 7 days.")
        # 'off_passage'
    """

    max_query_tokens: int | None = 40
    max_ngram_repeats: int | None = 1
    repeat_ngram: int = 3
    min_shared_words: int = 1
    drop_statements: bool = True

    def reason(self, query: str, passage: str) -> str | None:
        """``"too_long"``, ``"degenerate"``, ``"off_passage"`` or ``"not_a_question"``, else None."""
        words = normalize_text(query).split()
        if self.max_query_tokens is not None and len(words) > self.max_query_tokens:
            return "too_long"
        n = self.repeat_ngram
        if self.max_ngram_repeats is not None and len(words) >= n:
            counts: dict[tuple[str, ...], int] = {}
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                counts[gram] = counts.get(gram, 0) + 1
            if max(counts.values()) > self.max_ngram_repeats:
                return "degenerate"
        if self.min_shared_words > 0:
            shared = _content_stems(query) & _content_stems(passage)
            if len(shared) < self.min_shared_words:
                return "off_passage"
        if self.drop_statements and (
            _NOT_A_QUERY.match(query)
            or (len(words) >= 6 and query.rstrip().endswith(".") and "?" not in query)
        ):
            return "not_a_question"
        return None


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def parse_questions(text: str, limit: int | None = None) -> list[str]:
    """Split an LLM answer into questions: one per line, numbering/bullets/quotes removed,
    preamble lines ending with ':' skipped."""
    out: list[str] = []
    for line in str(text).splitlines():
        line = _PREFIX.sub("", line).strip().strip("\"'\u201c\u201d").strip()
        if not line or line.endswith(":"):
            continue
        out.append(line)
    return out[:limit] if limit is not None else out


# --------------------------------------------------------------------------- generation


@dataclass
class SyntheticQueries:
    """Result of ``generate_synthetic_queries``.

    ``pairs`` holds the kept ``(query, node_id)`` pairs, ``dropped`` the rejected
    ``(query, node_id, reason)`` triples, ``stats`` the counts per outcome.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


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
        min_query_tokens: drop questions with fewer words.
        on_duplicate: a question produced for several nodes is dropped (``"drop"``),
            kept for the first node (``"first"``) or kept with every node as a
            positive (``"merge"``). Repeats within one node are always kept once.
        use_async: ask the LLM concurrently (``apredict``), ``num_workers`` at a time.
        batch_size: an LLM that answers many prompts at once (``generate_batch``, as
            ``LocalChatLLM`` does) gets this many passages per call; ``1`` asks one at
            a time. Passages a batch fails on are asked again one at a time.
        retries / on_failure: retries per node after an LLM error, then skip the node
            (counted in ``stats["failed_nodes"]``) or raise.

    Example::

        from llama_index.core.llms import MockLLM
        result = generate_synthetic_queries(nodes, llm=MockLLM(), show_progress=False)
    """
    from llama_index.core import Settings
    from llama_index.core.schema import MetadataMode

    if num_questions_per_node < 1:
        raise ValueError(f"num_questions_per_node must be >= 1, got {num_questions_per_node}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not nodes:
        raise ValueError("generate_synthetic_queries needs at least one node")
    if on_duplicate not in ("drop", "first", "merge"):
        raise ValueError(f"on_duplicate must be 'drop', 'first' or 'merge', got {on_duplicate!r}")
    llm = llm if llm is not None else Settings.llm
    prompt = _as_prompt(prompt_template)
    copy_filter = copy_filter if copy_filter is not None else CopyFilter()
    quality_filter = quality_filter if quality_filter is not None else QualityFilter()
    texts = {node.node_id: node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes}

    answers = _ask(
        llm,
        prompt,
        texts,
        num_questions_per_node,
        use_async,
        num_workers,
        batch_size,
        retries,
        on_failure,
        show_progress,
    )

    result = SyntheticQueries()
    stats = dict.fromkeys(
        (
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
        ),
        0,
    )
    stats["nodes"] = len(texts)
    candidates: list[tuple[str, str]] = []
    for node_id, text in texts.items():
        answer = answers.get(node_id)
        if answer is None:
            stats["failed_nodes"] += 1
            continue
        seen_here: set[str] = set()
        for question in parse_questions(answer, limit=num_questions_per_node):
            stats["generated"] += 1
            key = normalize_text(question)
            if len(key.split()) < min_query_tokens:
                result.dropped.append((question, node_id, "too_short"))
                stats["too_short"] += 1
            elif (why := copy_filter.reason(question, text)) is not None:
                result.dropped.append((question, node_id, why))
                stats["copy"] += 1
            elif (why := quality_filter.reason(question, text)) is not None:
                result.dropped.append((question, node_id, why))
                stats[why] += 1
            elif key in seen_here:
                result.dropped.append((question, node_id, "duplicate"))
                stats["duplicate"] += 1
            else:
                seen_here.add(key)
                candidates.append((question, node_id))

    nodes_per_key: dict[str, set[str]] = {}
    for question, node_id in candidates:
        nodes_per_key.setdefault(normalize_text(question), set()).add(node_id)
    kept_keys: set[str] = set()
    for question, node_id in candidates:
        key = normalize_text(question)
        shared = len(nodes_per_key[key]) > 1
        if (shared and on_duplicate == "drop") or (on_duplicate == "first" and key in kept_keys):
            result.dropped.append((question, node_id, "duplicate"))
            stats["duplicate"] += 1
            continue
        kept_keys.add(key)
        result.pairs.append((question, node_id))
    stats["kept"] = len(result.pairs)
    result.stats = stats
    logger.info("synthetic queries: %s", stats)
    return result


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
    from llama_index.core.llms import ChatMessage, MessageRole

    system = getattr(llm, "system_prompt", None)
    conversations = []
    for text in texts.values():
        messages = prompt.format_messages(llm=llm, **_prompt_args(prompt, text, n))
        if system:
            messages = [ChatMessage(role=MessageRole.SYSTEM, content=system), *messages]
        conversations.append(messages)
    try:
        responses = llm.generate_batch(
            conversations, batch_size=batch_size, show_progress=show_progress
        )
    except Exception as err:  # noqa: BLE001 - any failure falls back to one prompt at a time
        logger.warning("batched generation failed (%s); asking one passage at a time", err)
        return {}
    return {
        node_id: response.message.content
        for node_id, response in zip(texts, responses, strict=True)
    }


def _as_prompt(template: Any) -> BasePromptTemplate:
    from llama_index.core.prompts import BasePromptTemplate, PromptTemplate

    if template is None:
        template = DEFAULT_QUERY_PROMPT
    if isinstance(template, str):
        template = PromptTemplate(template)
    if not isinstance(template, BasePromptTemplate):
        raise TypeError(
            f"prompt_template must be a str or PromptTemplate, got {type(template).__name__}"
        )
    if "context_str" not in template.template_vars:
        raise ValueError(
            "prompt_template must contain {context_str} (the passage); "
            f"it has variables {template.template_vars}"
        )
    return template


def _prompt_args(prompt: BasePromptTemplate, text: str, n: int) -> dict[str, Any]:
    args: dict[str, Any] = {"context_str": text}
    for name in ("num_questions", "num_questions_per_chunk", "num_questions_per_node"):
        if name in prompt.template_vars:
            args[name] = n
    return args


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
) -> dict[str, str | None]:
    """The LLM's raw answer per node id (``None`` for nodes that failed)."""
    batched: dict[str, str | None] = {}
    if not use_async and batch_size > 1 and callable(getattr(llm, "generate_batch", None)):
        batched = _ask_batched(llm, prompt, texts, n, batch_size, show_progress)
        texts = {k: t for k, t in texts.items() if batched.get(k) is None}
        if not texts:
            return batched

    def failed(node_id: str, err: Exception) -> None:
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
                    answers[node_id] = llm.predict(prompt, **_prompt_args(prompt, text, n))
                    break
                except Exception as err:  # noqa: BLE001 - any LLM client error is retried
                    if attempt == retries:
                        failed(node_id, err)
        return {**batched, **answers}

    from llama_index.core.async_utils import asyncio_run, run_jobs

    async def one(node_id: str, text: str) -> tuple[str, str | None]:
        for attempt in range(retries + 1):
            try:
                return node_id, await llm.apredict(prompt, **_prompt_args(prompt, text, n))
            except Exception as err:  # noqa: BLE001
                if attempt == retries:
                    failed(node_id, err)
        return node_id, None

    jobs = [one(node_id, text) for node_id, text in texts.items()]
    results = asyncio_run(
        run_jobs(jobs, show_progress=show_progress, workers=num_workers, desc="Synthetic queries")
    )
    return dict(results)
