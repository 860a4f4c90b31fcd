"""Fit the numbered sources of a grounded prompt into the LLM's context window.

As LlamaIndex's response synthesizers do with ``PromptHelper``, the prompt may use the
LLM's ``metadata.context_window`` less its answer budget ``metadata.num_output``
(``max_new_tokens`` for ``LocalChatLLM``), or those of a ``PromptHelper`` given to the
engine or set on ``Settings`` (see :func:`prompt_budget`). Sources are kept in rank order: the
lowest-ranked ones that do not fit are left out, and the last one kept may be cut at a
sentence boundary; a source of which not one sentence fits is left out and the ones
after it still get the room; metadata (``metadata_mode``) that alone overflows the room is
left out of the prompt, its node's text shown; the numbering of what is shown stays ``1..k``. Only when the
question alone (with the system prompt) cannot fit is it an error.

Tokens are counted by the LLM's own chat template when it has one (``LocalChatLLM.encode``),
else estimated with LlamaIndex's ``Settings.tokenizer`` as core's token counter does.

Example::

    from llama_index_ragtune.query_engine.prompt_fit import fit_sources

    fit = fit_sources("q?", nodes, build=lambda shown: engine.messages("q?", shown),
                      count=len_in_tokens, context_window=512, num_output=64)
    fit.nodes, fit.left_out_node_ids, fit.cut_node_ids
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from llama_index_ragtune.grounding import sentence_spans

__all__ = ["PromptFit", "fit_sources", "prompt_budget", "token_counter"]

Build = Callable[[Sequence[NodeWithScore]], list[ChatMessage]]
Count = Callable[[list[ChatMessage]], int]


@dataclass(frozen=True)
class PromptFit:
    """The sources shown (``nodes``, a cut one as a copy holding the shown text), the ids
    left out or cut, and the prompt's size against the window.

    Example::

        PromptFit(nodes, prompt_tokens=120, context_window=2048, num_output=256).to_dict()
    """

    nodes: list[NodeWithScore]
    prompt_tokens: int | None = None
    context_window: int | None = None
    num_output: int | None = None
    left_out_node_ids: list[str] = field(default_factory=list)
    cut_node_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "context_window": self.context_window,
            "num_output": self.num_output,
        }


def prompt_budget(llm: Any, prompt_helper: Any | None = None) -> tuple[int, int] | None:
    """``(context_window, num_output)`` for ``llm``, or None when nothing gives a window.

    As core's response synthesizers do, a ``PromptHelper`` given here, else one set on
    ``Settings`` (``Settings.context_window = ...``, ``Settings.num_output = ...``), takes
    the place of ``llm.metadata`` (a remote LLM's metadata is often a default). A model run
    here (``LocalChatLLM``) cannot read past its own window, so that window stays an
    upper bound, and its ``max_new_tokens`` a lower bound of the answer's budget.

    Example::

        prompt_budget(LocalChatLLM(max_new_tokens=64))   # (8192, 64) for SmolLM2
        prompt_budget(my_llm, PromptHelper(context_window=4096, num_output=256))  # (4096, 256)
    """
    own = _metadata_budget(getattr(llm, "metadata", None))
    if prompt_helper is None:
        from llama_index.core.settings import Settings

        # read as core's synthesizers read it: the public property would build one from
        # Settings.llm (resolving, even downloading, a default LLM)
        prompt_helper = Settings._prompt_helper
    helper = _metadata_budget(prompt_helper)
    if helper is None:
        return own
    if own is not None and counts_own_tokens(llm):
        return min(helper[0], own[0]), max(helper[1], own[1])
    return helper


def _metadata_budget(source: Any) -> tuple[int, int] | None:
    window = getattr(source, "context_window", None)
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None
    output = getattr(source, "num_output", None)
    if not isinstance(output, int) or isinstance(output, bool) or output < 0:
        output = 0
    return window, output


def counts_own_tokens(llm: Any) -> bool:
    """Whether ``llm`` runs here with its own chat template and tokenizer (``LocalChatLLM``)."""
    return callable(getattr(llm, "encode", None)) and hasattr(llm, "hf_model")


def token_counter(llm: Any) -> Count:
    """Tokens of a chat prompt for ``llm``: its own chat template when it has ``encode``
    (``LocalChatLLM``), else LlamaIndex's estimate with ``Settings.tokenizer``.

    Example::

        token_counter(llm)(build_messages("Capital of Italy?", ["Rome is."]))   # e.g. 61
    """
    if counts_own_tokens(llm):
        return lambda messages: len(llm.encode(messages))
    from llama_index.core.settings import Settings
    from llama_index.core.utilities.token_counting import TokenCounter

    counter = TokenCounter(Settings.tokenizer)
    return lambda messages: counter.estimate_tokens_in_messages(list(messages))


def fit_sources(
    question: str,
    nodes: Sequence[NodeWithScore],
    build: Build,
    count: Count,
    context_window: int,
    num_output: int,
    llm_name: str = "the LLM",
    metadata_mode: MetadataMode = MetadataMode.NONE,
) -> PromptFit:
    """The longest rank-order prefix of ``nodes`` whose prompt (``build(shown)``, ``count``
    tokens) leaves ``num_output`` tokens of ``context_window``, the next source cut at a
    sentence boundary into what room is left (one of which not one sentence fits is left out
    and the next tried; ``metadata_mode``: how the sources' metadata is shown, left out when
    it alone overflows); ``ValueError`` when the question alone is too long.

    Counts O(log n) prompts (plus O(log sentences) for a cut, and again for each source left
    out as too long), one when everything fits.

    Example::

        fit_sources("q?", nodes, build, count, context_window=300, num_output=16).left_out_node_ids
    """
    nodes = list(nodes)
    budget = context_window - num_output
    if budget <= 0:
        raise ValueError(
            f"{llm_name}'s num_output={num_output} (the answer's budget, max_new_tokens for "
            f"LocalChatLLM) leaves no room for a prompt in its context_window of "
            f"{context_window} tokens; lower num_output / max_new_tokens."
        )
    whole = count(build(nodes))
    if whole <= budget:
        return PromptFit(nodes, whole, context_window, num_output)
    bare = count(build([]))
    if bare > budget:
        raise ValueError(
            f"the question ({len(question)} characters) does not fit the context window: the "
            f"prompt without any source is {bare} tokens, and {llm_name}'s context_window of "
            f"{context_window} tokens minus num_output={num_output} (the answer's budget) leaves "
            f"{budget}; shorten the question, or use an LLM with a larger window (or a smaller "
            "num_output / max_new_tokens)."
        )
    shown: list[NodeWithScore] = []
    left_out: list[str] = []
    cut_ids: list[str] = []
    size, rest, known_too_long = bare, nodes, True  # the whole list did not fit
    while rest:
        # the longest prefix of ``rest`` that fits after ``shown``
        low, high = 0, len(rest) - 1 if known_too_long else len(rest)
        while low < high:
            middle = (low + high + 1) // 2
            tokens = count(build([*shown, *rest[:middle]]))
            if tokens <= budget:
                low, size = middle, tokens
            else:
                high = middle - 1
        shown, rest, known_too_long = [*shown, *rest[:low]], rest[low:], False
        if not rest:
            break
        partial = _cut_to_fit(rest[0], shown, build, count, budget, metadata_mode)
        if partial is not None:
            cut_node, size = partial
            shown.append(cut_node)
            cut_ids.append(cut_node.node.node_id)
            left_out.extend(n.node.node_id for n in rest[1:])
            break
        # not one sentence of it fits: left out, and the sources after it still get the room
        left_out.append(rest[0].node.node_id)
        rest = rest[1:]
    return PromptFit(shown, size, context_window, num_output, left_out, cut_ids)


def _cut_to_fit(
    source: NodeWithScore,
    before: list[NodeWithScore],
    build: Build,
    count: Count,
    budget: int,
    metadata_mode: MetadataMode = MetadataMode.NONE,
) -> tuple[NodeWithScore, int] | None:
    """``source`` cut to its most whole sentences that fit after ``before`` (a copy, same
    id), with the prompt's tokens. When the metadata shown with it (``metadata_mode``) alone
    leaves no room, its text is shown without it, whole or cut the same way (the copy keeps
    its metadata). None when not one sentence fits or its text cannot be cut."""
    node = source.node
    if not isinstance(node, TextNode) or not node.text:
        return None
    text = node.text
    ends = [end for _start, end in sentence_spans(text)]

    def cut(update: dict[str, Any]) -> Callable[[int], NodeWithScore]:
        def make(end: int) -> NodeWithScore:
            copy = node.model_copy(update={**update, "text": text[:end]})
            return NodeWithScore(node=copy, score=source.score)

        return make

    best = _longest(ends[:-1], cut({}), before, build, count, budget)  # whole did not fit
    if best is None and node.get_content(metadata_mode=metadata_mode) != text:
        # the metadata fills the room: the text is what answers, shown without it
        best = _longest(ends, cut({"text_template": "{content}"}), before, build, count, budget)
    return best


def _longest(
    ends: Sequence[int],
    make: Callable[[int], NodeWithScore],
    before: list[NodeWithScore],
    build: Build,
    count: Count,
    budget: int,
) -> tuple[NodeWithScore, int] | None:
    """The candidate ``make(end)`` of the largest of the sorted ``ends`` whose prompt fits
    (a binary search: O(log len(ends)) prompts counted), with its tokens; None if none fits."""
    best: tuple[NodeWithScore, int] | None = None
    low, high = 0, len(ends) - 1
    while low <= high:
        middle = (low + high) // 2
        candidate = make(ends[middle])
        tokens = count(build([*before, candidate]))
        if tokens <= budget:
            best, low = (candidate, tokens), middle + 1
        else:
            high = middle - 1
    return best
