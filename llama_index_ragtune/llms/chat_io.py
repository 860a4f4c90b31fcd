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
    "length_sorted_chunks",
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
