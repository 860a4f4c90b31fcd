"""Streaming generation of the local LLM: tokens as they are decoded, usage at the end.

:class:`Streaming` is mixed into :class:`~llama_index_ragtune.llms.LocalChatLLM`
(it uses the LLM's model, tokenizer, lock, token budget and refusal decision);
generation runs in a worker thread and ``transformers``' ``TextIteratorStreamer``
hands the text over. ``stream_chat`` / ``stream_complete`` and their async twins
on the LLM call these undecorated cores.

Example::

    from llama_index_ragtune.llms import LocalChatLLM

    llm = LocalChatLLM(max_new_tokens=16)
    for chunk in llm.stream_chat(messages):
        print(chunk.delta, end="")
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponseGen,
    MessageRole,
)

from llama_index_ragtune.llms.chat_io import MessagesLike, as_completion, response_raw

__all__ = ["Streaming", "stoppable_in_thread"]


class Streaming:
    """The streaming half of :class:`~llama_index_ragtune.llms.LocalChatLLM` (a mixin).

    Example::

        chunks = list(llm._chat_stream(llm.encode(messages), messages))
        chunks[-1].raw["usage"]     # token counts of the whole answer
    """

    def _stream_ids(
        self,
        prompt_ids: list[int],
        messages: MessagesLike | None = None,
        refuse: bool | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Yield (delta text, None) while generating, then ("", usage) once done."""
        import torch
        from transformers import TextIteratorStreamer

        gen = self._gen_kwargs(kwargs.pop("max_new_tokens", None), kwargs)
        gen["max_new_tokens"] = self._room(len(prompt_ids), gen["max_new_tokens"])
        start = time.perf_counter()
        flags, probs, decisions = self._decide(
            [prompt_ids],
            None if messages is None else [messages],
            None if refuse is None else [refuse],
        )
        probability = probs[0] if probs else None
        decision = decisions[0] if decisions else None
        if flags is not None:
            if flags[0]:
                yield self.refusal.strip(), None
                n_out = len(self.refusal_token_ids())
                seconds = time.perf_counter() - start
                yield "", response_raw(len(prompt_ids), n_out, seconds, probability, decision)
                return
            gen = self._barring_refusal(gen)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        counter = {"calls": 0, "tokens": 0, "last": None}
        put = streamer.put

        def counting_put(value: Any) -> None:
            counter["calls"] += 1
            if counter["calls"] > 1:  # the first call carries the prompt
                counter["tokens"] += int(value.numel())
                counter["last"] = int(value.reshape(-1)[-1])
            put(value)

        streamer.put = counting_put  # type: ignore[method-assign]
        # a reader that stops early (a client gone) stops the generation, which holds the
        # LLM's lock, instead of decoding on to max_new_tokens while other requests wait
        stop = threading.Event()
        gen = {**gen, "stopping_criteria": _stoppable(gen.get("stopping_criteria"), stop)}
        errors: list[BaseException] = []
        input_ids = torch.tensor([prompt_ids], device=self._model.device)

        def work() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self._model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        **gen,
                    )
            except BaseException as exc:  # surfaced in the consuming thread
                errors.append(exc)
                _end(streamer, errors)

        start = time.perf_counter()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            for delta in streamer:
                if delta:
                    yield delta, None
        finally:
            stop.set()  # a no-op once generation has ended
        thread.join()
        if errors:
            raise errors[0]
        limit = gen["max_new_tokens"]
        n_out = min(counter["tokens"], limit)
        seconds = time.perf_counter() - start
        cut = n_out >= limit and counter["last"] not in self._stop_ids
        usage = response_raw(
            len(prompt_ids), n_out, seconds, probability, decision, cut=cut, budget=limit
        )
        yield "", usage

    def _chat_stream(
        self, ids: list[int], messages: MessagesLike | None = None, **kwargs: Any
    ) -> ChatResponseGen:
        text = ""
        for delta, usage in self._stream_ids(ids, messages, **kwargs):
            text += delta
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=text.strip()),
                delta=delta,
                raw=usage,
                additional_kwargs=dict(usage["usage"]) if usage else {},
            )

    def _completion_stream(
        self, ids: list[int], messages: MessagesLike | None = None, **kwargs: Any
    ) -> CompletionResponseGen:
        for chunk in self._chat_stream(ids, messages, **kwargs):
            yield as_completion(chunk)


def _end(streamer: Any, errors: list[BaseException]) -> None:
    """End ``streamer`` after generation failed, so its reader wakes up and raises the error.

    ``streamer.end()`` decodes the text it still holds; when that decoding is what failed
    (a token id the tokenizer cannot decode), it fails again, and the reader, waiting for
    an end that never came, hung for ever. The end signal then goes in directly.
    """
    try:
        streamer.end()
    except BaseException as exc:  # noqa: BLE001 - the first error is the one raised
        errors.append(exc)
        streamer.text_queue.put(streamer.stop_signal, timeout=streamer.timeout)


async def stoppable_in_thread(generate: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``generate(*args, **kwargs)`` (a whole, not streamed, generation) in a worker thread,
    stopped at the next token when the awaiting task is cancelled (a client gone, a
    timeout): it went on to ``max_new_tokens`` holding the LLM's lock, so every later
    request waited for an answer no one would read.

    Example::

        response = await stoppable_in_thread(llm._chat_ids, llm.encode(messages), messages)
    """
    stop = threading.Event()
    kwargs["stopping_criteria"] = _stoppable(kwargs.get("stopping_criteria"), stop)
    try:
        return await asyncio.to_thread(generate, *args, **kwargs)
    finally:
        stop.set()  # cancelled, or done (a no-op then)


def _stoppable(criteria: Any, stop: threading.Event) -> Any:
    """``criteria`` (a ``StoppingCriteriaList`` or None) plus one that ends generation once
    ``stop`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([*(criteria or []), _StopWhenSet()])
