"""Chat input and output of the local LLM: messages as dicts, batches by length, responses.

Helpers of :class:`~llama_index_ragtune.llms.LocalChatLLM` (and of the decoder's
validation, which shares :func:`common_prefix`).

Example::

    from llama_index_ragtune.llms.chat_io import length_sorted_chunks, to_dicts

    to_dicts([{"role": "user", "content": "Hi"}])
    list(length_sorted_chunks([[1, 2, 3], [1], [1, 2]], 2, False, "Generating"))   # [[1, 2], [0]]
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
)

from llama_index_ragtune.retrievers.checks import clean_text, positive_int

__all__ = [
    "MessagesLike",
    "aiter_in_thread",
    "as_completion",
    "common_prefix",
    "completion_messages",
    "control_tokens",
    "encode_chat",
    "encode_with_plain_controls",
    "length_sorted_chunks",
    "response_raw",
    "sanitizes_natively",
    "to_dicts",
]

MessagesLike = Sequence[ChatMessage | Mapping[str, Any]]
_ROLES = frozenset(role.value for role in MessageRole)


def to_dicts(messages: MessagesLike) -> list[dict[str, str]]:
    """``messages`` (ChatMessage objects or role/content dicts) as plain dicts; errors name the bad item.

    Example::

        to_dicts([ChatMessage(role="user", content="Hi")])   # [{'role': 'user', 'content': 'Hi'}]
    """
    if isinstance(messages, (str, bytes, ChatMessage, Mapping)) or not isinstance(
        messages, Iterable
    ):
        raise TypeError(
            f"Expected a list of chat messages (one conversation), got {type(messages).__name__}: "
            "pass [ChatMessage(role='user', content=...)] or [{'role': 'user', 'content': ...}]."
        )
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            _check_text_blocks(m, i)
            role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
            out.append({"role": role, "content": clean_text(m.content or "")})
        elif isinstance(m, Mapping) and "role" in m and "content" in m:
            if m["role"] not in _ROLES:
                raise ValueError(
                    f"Chat message {i}: role must be one of {sorted(_ROLES)}, got {m['role']!r}."
                )
            content = m["content"]
            if content is not None and not isinstance(content, str):
                raise TypeError(
                    f"Chat message {i}: content must be a str (or None), got "
                    f"{type(content).__name__}; pass ChatMessage objects for multi-part content."
                )
            out.append({"role": str(m["role"]), "content": clean_text(content or "")})
        else:
            raise TypeError(
                f"Cannot use {m!r} as a chat message: pass ChatMessage objects or "
                "dicts with 'role' and 'content' keys."
            )
    if not out:
        raise ValueError("Cannot generate from an empty list of messages.")
    return out


# blocks a text-only chat template may leave out: the text itself, a provider's cache mark,
# a model's earlier reasoning (chat templates drop it from past turns too)
_TEXT_ONLY_BLOCKS = frozenset({"text", "cache", "thinking"})


def _check_text_blocks(message: ChatMessage, index: int) -> None:
    """``TypeError`` when ``message`` holds a block a text model cannot read (an image, audio,
    video, a document, a tool call): ``ChatMessage.content`` keeps only the text blocks, so
    the model answered about a picture it never saw."""
    kinds = [str(getattr(block, "block_type", type(block).__name__)) for block in message.blocks]
    other = [kind for kind in kinds if kind not in _TEXT_ONLY_BLOCKS]
    if other:
        raise TypeError(
            f"Chat message {index}: holds {', '.join(sorted(set(other)))} content, but this LLM "
            "reads text only (its chat template would silently drop it); put the content into "
            "the message as text, or use a multimodal LLM."
        )


def length_sorted_chunks(
    encoded: Sequence[Sequence[int]], batch_size: int, show_progress: bool, desc: str
) -> Any:
    """Indices of ``encoded`` in batches of similar length (less padding), with a progress bar."""
    positive_int(batch_size, "batch_size")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if show_progress:
        from tqdm.auto import tqdm

        return tqdm(chunks, desc=desc, unit="batch")
    return chunks


def completion_messages(prompt: str, formatted: bool) -> list[dict[str, str]] | None:
    """The conversation a completion prompt stands for (None when pre-formatted)."""
    return None if formatted else [{"role": "user", "content": prompt}]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading token ids ``a`` and ``b`` share.

    Example::

        common_prefix([1, 2, 3], [1, 2, 4])   # 2
    """
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def as_completion(chat: ChatResponse) -> CompletionResponse:
    """The ``CompletionResponse`` twin of a ``ChatResponse`` (text, delta, raw, counts)."""
    return CompletionResponse(
        text=chat.message.content or "",
        delta=chat.delta,
        raw=chat.raw,
        additional_kwargs=chat.additional_kwargs,
    )


async def aiter_in_thread(sync_gen: Iterator[Any]):
    """Iterate a blocking generator from async code, one ``next`` per worker-thread call."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, sync_gen, done)
            if item is done:
                return
            yield item
    finally:
        # a reader that stops early closes the blocking generator too (its clean-up, such
        # as stopping a generation, runs now rather than whenever it is collected); one
        # still running in the worker thread (a cancelled read) is closed when collected
        close = getattr(sync_gen, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # "generator already executing"
                close()


def response_raw(
    n_in: int,
    n_out: int,
    seconds: float,
    refusal_probability: float | None = None,
    decision: Any = None,
    *,
    cut: bool = False,
    budget: int | None = None,
) -> dict[str, Any]:
    """The response's ``raw``: token counts, time, and ``finish_reason``: ``"length"`` when
    the answer ran into its token budget before its end-of-turn (cut, not whole), else
    ``"stop"``; ``max_new_tokens``: that budget (``max_new_tokens`` clamped to what the
    context window leaves after the prompt)."""
    extra: dict[str, Any] = {"finish_reason": "length" if cut else "stop"}
    if budget is not None:
        extra["max_new_tokens"] = budget
    if refusal_probability is not None:
        extra["refusal_probability"] = refusal_probability
    if decision is not None:
        extra["refusal_decision"] = decision.to_dict()
    return {
        **extra,
        "usage": {
            "prompt_tokens": n_in,
            "completion_tokens": n_out,
            "total_tokens": n_in + n_out,
        },
        "seconds": seconds,
        "tokens_per_second": n_out / seconds if seconds > 0 else None,
    }


def sanitizes_natively(tokenizer: Any) -> bool:
    """Whether ``tokenizer.apply_chat_template`` takes ``sanitize_control_tokens`` (transformers
    5.x); older versions hand the keyword to the template, which ignores it."""
    try:
        parameters = inspect.signature(tokenizer.apply_chat_template).parameters
    except (TypeError, ValueError):
        return False
    return "sanitize_control_tokens" in parameters


def control_tokens(tokenizer: Any) -> list[str]:
    """The added tokens a message must not write: the special ones and those its chat template
    writes (as transformers' ``sanitize_control_tokens`` counts them), longest first."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    found = set()
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        text = getattr(token, "content", str(token))
        if text and not text.isspace() and (getattr(token, "special", False) or text in template):
            found.add(text)
    return sorted(found, key=len, reverse=True)


def encode_with_plain_controls(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Ids of ``messages`` through the chat template (with the assistant header), the control
    tokens written inside the messages encoded as plain text: what ``sanitize_control_tokens``
    does in transformers 5, for a tokenizer without it.

    Example::

        ids = encode_with_plain_controls(tokenizer, [{"role": "user", "content": "a<|im_end|>"}])
    """
    controls = control_tokens(tokenizer)
    rendered_plain = "".join(m["content"] for m in messages) + str(tokenizer.chat_template)
    start = next(chr(c) for c in range(0xE000, 0xF8FF) if chr(c) not in rendered_plain)
    end = next(chr(c) for c in range(ord(start) + 1, 0xF8FF) if chr(c) not in rendered_plain)
    pattern = re.compile("|".join(map(re.escape, controls)) or "(?!)")
    written: list[str] = []

    def mark(match: re.Match[str]) -> str:
        written.append(match.group())
        return f"{start}{len(written) - 1}{end}"

    marked = [{**m, "content": pattern.sub(mark, m["content"])} for m in messages]
    rendered = tokenizer.apply_chat_template(marked, add_generation_prompt=True, tokenize=False)
    ids: list[int] = []
    for i, piece in enumerate(re.split(f"{start}(\\d+){end}", rendered)):
        if i % 2:  # a control token written inside a message: plain text
            text, split = written[int(piece)], True
        else:
            text, split = piece, False
        if text:
            ids += tokenizer(text, add_special_tokens=False, split_special_tokens=split)[
                "input_ids"
            ]
    return ids


def encode_chat(
    tokenizer: Any, dicts: list[dict[str, str]], sanitize_control_tokens: bool
) -> list[int]:
    """Token ids of ``dicts`` rendered by ``tokenizer``'s chat template, with the assistant header
    appended; with ``sanitize_control_tokens``, a control token inside a message's text
    (``<|im_end|>`` in a document) is encoded as plain text."""
    kwargs: dict[str, Any] = {
        "add_generation_prompt": True,
        "tokenize": True,
        "return_dict": True,
    }
    if sanitize_control_tokens:
        if sanitizes_natively(tokenizer):
            try:
                out = tokenizer.apply_chat_template(dicts, sanitize_control_tokens=True, **kwargs)
                return list(out["input_ids"])
            except (TypeError, NotImplementedError, ValueError):
                pass  # a template the tokenizer cannot sanitize: done below
        # older transformers (the keyword went to the template and was ignored, so a
        # source's "<|im_end|>" ended the turn): the control tokens inside the messages
        # are encoded as plain text here; messages without one are encoded as before
        controls = control_tokens(tokenizer)
        if any(c in m["content"] for m in dicts for c in controls):
            return encode_with_plain_controls(tokenizer, dicts)
    return list(tokenizer.apply_chat_template(dicts, **kwargs)["input_ids"])
