"""Generation of the local LLM: token budgets, left-padded batches, refusals, responses.

:class:`Generation` is mixed into :class:`~llama_index_ragtune.llms.LocalChatLLM`
(it uses the LLM's model, tokenizer, lock, stop ids and refusal decision):
``max_new_tokens`` is clamped per prompt to what the context window leaves, prompts
the refusal policy refuses get the refusal without decoding, the others decode in
left-padded batches with the refusal barred, and each answer becomes a
``ChatResponse`` with its token counts and ``finish_reason`` in ``raw``.
``chat`` / ``complete`` and their async twins on the LLM call these undecorated cores.

Example::

    from llama_index_ragtune.llms import LocalChatLLM

    llm = LocalChatLLM(max_new_tokens=16)
    llm.generate_batch([[{"role": "user", "content": "Hi"}]] * 4, batch_size=4)[0].raw["usage"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole

from llama_index_ragtune.llms.chat_io import MessagesLike, length_sorted_chunks, response_raw
from llama_index_ragtune.retrievers.checks import positive_int

__all__ = ["Generation", "check_stop_strings"]


def _without_padding(ids: list[int], pad_id: int) -> list[int]:
    """``ids`` without the run of ``pad_id`` that ends them."""
    end = len(ids)
    while end and ids[end - 1] == pad_id:
        end -= 1
    return ids[:end]


def check_stop_strings(stops: Any) -> list[str]:
    """``stop_strings`` (a ``generate()`` argument) as a list: ``None`` and ``[]`` stop
    nowhere; an empty string, which stopped every answer after its first token, or a value
    that is not text is a ``ValueError`` / ``TypeError`` naming it.

    Example::

        check_stop_strings("\\n\\n"), check_stop_strings(None)   # (['\\n\\n'], [])
    """
    if stops is None:
        return []
    listed = [stops] if isinstance(stops, str) else stops
    if not isinstance(listed, (list, tuple)) or not all(isinstance(s, str) for s in listed):
        raise TypeError(
            f"LocalChatLLM: stop_strings must be a str or a list of str, got {stops!r}"[:300]
        )
    empty = [i for i, s in enumerate(listed) if not s]
    if empty:
        raise ValueError(
            f"LocalChatLLM: stop_strings holds an empty string (item {empty[0]}), which would "
            "stop every answer after its first token; remove it."
        )
    return list(listed)


class Generation:
    """The generating half of :class:`~llama_index_ragtune.llms.LocalChatLLM` (a mixin).

    Example::

        llm._chat_ids(llm.encode(messages), messages).raw["finish_reason"]   # "stop" or "length"
    """

    def _room(self, n_prompt: int, max_new: int, item: str = "") -> int:
        """The answer's token budget after a prompt of ``n_prompt`` tokens: ``max_new``, clamped
        to what the context window leaves (a clamped answer that runs into it is reported as
        ``finish_reason="length"``); ``ValueError`` when the prompt leaves no room at all."""
        if not self.context_window:
            return max_new
        if n_prompt >= self.context_window:
            raise ValueError(
                f"{item}Prompt of {n_prompt} tokens exceeds the context window "
                f"({self.context_window}) of {self._model_name}: it leaves no room for an answer "
                f"(max_new_tokens={max_new}). Send fewer or shorter sources "
                "(CitationQueryEngine fits them to the window; max_sources=..., "
                "max_source_chars=...) or use a model with a larger window."
            )
        return min(max_new, self.context_window - n_prompt)

    def _gen_kwargs(
        self, max_new_tokens: int | None, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "eos_token_id": self._stop_ids or None,
            "pad_token_id": self._pad_id,
        }
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kw["do_sample"] = False
        kw.update(self.generate_kwargs)
        kw.update({k: v for k, v in overrides.items() if k not in ("formatted",)})
        if max_new_tokens is not None:
            kw["max_new_tokens"] = max_new_tokens
        kw["max_new_tokens"] = positive_int(kw["max_new_tokens"], "LocalChatLLM: max_new_tokens")
        if "stop_strings" in kw:
            stops = check_stop_strings(kw.pop("stop_strings"))
            if stops:  # generate() matches them with the tokenizer, which it must be given
                kw.update(stop_strings=stops, tokenizer=self._tokenizer)
        return kw

    def _count_completion(self, ids: Sequence[int]) -> int:
        for i, tid in enumerate(ids):
            if tid in self._stop_ids:
                return i + 1
        return len(ids)

    def _generate_ids(
        self,
        batch_ids: list[list[int]],
        conversations: Sequence[MessagesLike] | None = None,
        refuse: Sequence[bool] | None = None,
        **kwargs: Any,
    ) -> tuple[list[list[int]], list[float] | None, list[Any] | None]:
        """Generate for token-id prompts (left padded): the new token ids of each prompt, each
        prompt's decoder refusal probability and refusal decision (None without a policy).

        Prompts the policy (or ``refuse``) refuses get the refusal's tokens without
        decoding; the others decode with the refusal barred.
        """
        import torch

        gen = self._gen_kwargs(kwargs.pop("max_new_tokens", None), kwargs)
        limits = [self._room(len(ids), gen["max_new_tokens"]) for ids in batch_ids]
        results: list[list[int] | None] = [None] * len(batch_ids)
        todo = list(range(len(batch_ids)))
        flags, probs, decisions = self._decide(batch_ids, conversations, refuse)
        if flags is not None:
            refused = self.refusal_token_ids() + self._stop_ids[:1]
            for i, flag in enumerate(flags):
                if flag:
                    results[i] = list(refused)
            todo = [i for i in todo if results[i] is None]
            gen = self._barring_refusal(gen)
        groups: dict[int, list[int]] = {}  # prompts clamped to a smaller budget decode apart
        for i in todo:
            groups.setdefault(limits[i], []).append(i)
        for limit, group in groups.items():
            enc = self._pad([batch_ids[i] for i in group])
            with self._lock, torch.inference_mode():
                out = self._model.generate(**enc, **{**gen, "max_new_tokens": limit})
            width = enc["input_ids"].shape[1]
            for i, row in zip(group, out, strict=True):
                results[i] = row[width:].tolist()
                if gen.get("stop_strings") and len(group) > 1:
                    # a row stopped by a stop string ends in no stop id: the padding after
                    # it is not part of its answer (it was counted, and read as cut)
                    results[i] = _without_padding(results[i], self._pad_id)
        return results, probs, decisions  # type: ignore[return-value]

    def _pad(self, batch_ids: Sequence[Sequence[int]]) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` of ``batch_ids`` padded on the left, whatever the
        tokenizer's padding side or pad token (one without either is padded too)."""
        import torch

        width = max(len(ids) for ids in batch_ids)
        input_ids = torch.full((len(batch_ids), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(batch_ids):
            if ids:
                input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
                mask[row, width - len(ids) :] = 1
        device = self._model.device
        return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}

    def _response(
        self,
        prompt_ids: list[int],
        new_ids: list[int],
        seconds: float,
        refusal_probability: float | None = None,
        decision: Any = None,
        limit: int | None = None,
    ) -> ChatResponse:
        n_out = self._count_completion(new_ids)
        text = self._tokenizer.decode(new_ids[:n_out], skip_special_tokens=True).strip()
        cut = limit is not None and n_out >= limit and new_ids[n_out - 1] not in self._stop_ids
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            raw=response_raw(
                len(prompt_ids),
                n_out,
                seconds,
                refusal_probability,
                decision,
                cut=cut,
                budget=limit,
            ),
            additional_kwargs={
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": n_out,
                "total_tokens": len(prompt_ids) + n_out,
            },
        )

    def _chat_ids(
        self,
        prompt_ids: list[int],
        messages: MessagesLike | None = None,
        refuse: bool | None = None,
        **kwargs: Any,
    ) -> ChatResponse:
        start = time.perf_counter()
        limit = self._gen_kwargs(kwargs.get("max_new_tokens"), kwargs)["max_new_tokens"]
        limit = self._room(len(prompt_ids), limit)
        new_ids, probs, decisions = self._generate_ids(
            [prompt_ids],
            None if messages is None else [messages],
            None if refuse is None else [refuse],
            **kwargs,
        )
        seconds = time.perf_counter() - start
        return self._response(
            prompt_ids,
            new_ids[0],
            seconds,
            probs[0] if probs else None,
            decisions[0] if decisions else None,
            limit,
        )

    def generate_batch(
        self,
        conversations: Sequence[MessagesLike],
        *,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        show_progress: bool = False,
        refuse: Sequence[bool] | None = None,
        **generate_kwargs: Any,
    ) -> list[ChatResponse]:
        """Answer many conversations, ``batch_size`` at a time (left padding, prompts sorted by length).

        Returns one ``ChatResponse`` per conversation, in input order, each with
        token counts in ``raw["usage"]`` and the batch's wall time share in ``raw["seconds"]``.
        Greedy results equal ``chat`` up to floating-point noise from padding.
        ``refuse`` (one flag per conversation) overrides the refusal policy: True
        gives the refusal, False an answer with the refusal barred.
        """
        if refuse is not None and len(refuse) != len(conversations):
            raise ValueError(
                f"generate_batch: {len(refuse)} refuse flags for {len(conversations)} conversations."
            )
        encoded = [self.encode(c) for c in conversations]
        # every prompt is checked before any is answered: a long one among short ones is
        # named, and no batch is generated only to be thrown away
        limit = self._gen_kwargs(max_new_tokens, generate_kwargs)["max_new_tokens"]
        limits = [
            self._room(len(ids), limit, f"generate_batch: conversation {i}: ")
            for i, ids in enumerate(encoded)
        ]
        results: list[ChatResponse | None] = [None] * len(encoded)
        chunks = length_sorted_chunks(encoded, batch_size, show_progress, "Generating")
        for chunk in chunks:
            start = time.perf_counter()
            outs, probs, decisions = self._generate_ids(
                [encoded[i] for i in chunk],
                [conversations[i] for i in chunk],
                None if refuse is None else [refuse[i] for i in chunk],
                max_new_tokens=max_new_tokens,
                **generate_kwargs,
            )
            seconds = (time.perf_counter() - start) / len(chunk)
            for j, (i, new_ids) in enumerate(zip(chunk, outs, strict=True)):
                results[i] = self._response(
                    encoded[i],
                    new_ids,
                    seconds,
                    probs[j] if probs else None,
                    decisions[j] if decisions else None,
                    limits[i],
                )
        return results  # type: ignore[return-value]
