"""Refusal scoring of the local LLM: P(refusal | prompt), which source it would cite, the decision.

:class:`RefusalScoring` is mixed into :class:`~llama_index_ragtune.llms.LocalChatLLM`
(it uses the LLM's model, tokenizer, lock and refusal sentence): one teacher-forced
pass gives the decoder's probability of the whole refusal sentence; the refusal
policy (:mod:`~llama_index_ragtune.llms.refusal_policy`) decides from it and from
the sources; an answer that is not refused may not open with the refusal
(:class:`BarRefusalStart`).

Example::

    from llama_index_ragtune.llms import LocalChatLLM

    llm = LocalChatLLM(refusal_threshold=0.5)
    llm.refusal_probabilities([llm.encode([{"role": "user", "content": "Hi"}])])   # [~0.0]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llama_index_ragtune.grounding import read_grounded_prompt
from llama_index_ragtune.llms.chat_io import (
    MessagesLike,
    common_prefix,
    length_sorted_chunks,
    to_dicts,
)
from llama_index_ragtune.retrievers.checks import positive_int

__all__ = ["BarRefusalStart", "RefusalScoring"]


class RefusalScoring:
    """The refusal half of :class:`~llama_index_ragtune.llms.LocalChatLLM` (a mixin).

    Example::

        llm.citation_probabilities(messages, "Rouen", n_sources=3)   # e.g. [0.1, 0.8, 0.1]
    """

    def active_refusal_policy(self) -> Any:
        """The policy applied to each answer: ``refusal_policy``, else ``DecoderRefusalPolicy``
        of ``refusal_threshold``, else None (plain decoding)."""
        if self.refusal_policy is not None:
            return self.refusal_policy
        if self.refusal_threshold is not None:
            from llama_index_ragtune.llms.refusal_policy import DecoderRefusalPolicy

            return DecoderRefusalPolicy(self.refusal_threshold)
        return None

    def _decide(
        self,
        batch_ids: Sequence[Sequence[int]],
        conversations: Sequence[MessagesLike] | None,
        refuse: Sequence[bool] | None,
    ) -> tuple[list[bool] | None, list[float] | None, list[Any] | None]:
        """(refuse flags, decoder refusal probabilities, RefusalDecisions) for a batch."""
        if refuse is not None:
            if len(refuse) != len(batch_ids):
                raise ValueError(f"refuse: {len(refuse)} flags for {len(batch_ids)} prompts.")
            for r in refuse:
                if not isinstance(r, (bool, np.bool_)):
                    raise TypeError(
                        f"refuse must be True, False or None, got {type(r).__name__} {r!r} "
                        "(a string such as 'no' would count as True)."
                    )
            return [bool(r) for r in refuse], None, None
        policy = self.active_refusal_policy()
        if policy is None:
            return None, None, None
        probs = self.refusal_probabilities(batch_ids) if policy.uses_decoder else None
        questions: list[str] = [""] * len(batch_ids)
        sources: list[Sequence[str]] = [()] * len(batch_ids)
        if policy.uses_sources:
            if conversations is None:
                raise ValueError(
                    f"{type(policy).__name__} reads the question and the sources: call chat() / "
                    "generate_batch() with the grounded messages, not raw prompt ids."
                )
            for i, conversation in enumerate(conversations):
                prompt = read_grounded_prompt(to_dicts(conversation))
                if prompt is None:
                    raise ValueError(
                        f"{type(policy).__name__} needs grounded prompts (grounding.build_messages, "
                        f"as CitationQueryEngine sends); conversation {i} is not one. Use "
                        "refusal_threshold= (decoder only) for other conversations."
                    )
                questions[i], sources[i] = prompt.question, prompt.source_texts
        decisions = policy.decide(questions, sources, probs)
        return [d.refused for d in decisions], probs, decisions

    def refusal_token_ids(self) -> list[int]:
        """The token ids of the ``refusal`` sentence as the decoder reads it after a prompt
        (what :meth:`refusal_probabilities` scores; a prompt needs room for them).

        Example::

            len(LocalChatLLM().refusal_token_ids())   # e.g. 6
        """
        return self._encode_raw(self.refusal.strip())

    def refusal_probabilities(self, batch_ids: Sequence[Sequence[int]]) -> list[float]:
        """P(the whole ``refusal`` sentence | prompt) for token-id prompts (one teacher-forced pass).

        A prompt's probability does not depend on the prompts scored with it: in float32
        the prompts share one left-padded pass; in half precision (bfloat16 / float16)
        each gets a pass of its own, since padding changes the rounding there (it moved
        the demo's tuned decoder's P(refusal) by up to 0.06, where most questions lie
        between 0.2 and 0.5), and a threshold chosen on dev questions scored in batches
        would then meet other numbers in the query engine, which scores one at a time.

        Example::

            llm = LocalChatLLM(refusal_threshold=0.5)
            llm.refusal_probabilities([llm.encode([{"role": "user", "content": "Hi"}])])   # [~0.0]
        """
        import torch

        if not batch_ids:
            return []
        self._check_prompt_ids(batch_ids)
        refusal = self.refusal_token_ids()
        for i, ids in enumerate(batch_ids):
            self._check_scored_length(len(ids), len(refusal), "the refusal", f"prompt {i}")
        if len(batch_ids) > 1 and not self._padding_keeps_scores():
            return [p for ids in batch_ids for p in self.refusal_probabilities([ids])]
        n = len(refusal)
        logits = self._teacher_forced_logits([list(ids) + refusal for ids in batch_ids], n)
        target = torch.tensor(refusal, device=logits.device).expand(logits.shape[0], n)
        logprobs = torch.log_softmax(logits, dim=-1).gather(2, target[..., None])[..., 0]
        # float64: a float32 exp of a long unlikely sentence underflows to tied zeros.
        return logprobs.double().sum(dim=1).exp().tolist()

    def _check_prompt_ids(self, batch_ids: Any) -> None:
        """``TypeError`` / ``ValueError`` naming the prompt that is not a non-empty list of
        token ids the model knows (a conversation failed deep in torch; an id past the
        vocabulary is an ``IndexError`` on CPU and a device-side assert, fatal to the
        process's CUDA context, on a GPU)."""
        if isinstance(batch_ids, (str, bytes)) or not isinstance(batch_ids, Sequence):
            raise TypeError(
                "refusal_probabilities takes a list of token-id prompts (llm.encode(messages)), "
                f"got {type(batch_ids).__name__}; for conversations use "
                "conversation_refusal_probabilities."
            )
        embeddings = getattr(self._model, "get_input_embeddings", lambda: None)()
        vocab = getattr(embeddings, "num_embeddings", None)
        for i, ids in enumerate(batch_ids):
            if hasattr(ids, "tolist"):
                ids = ids.tolist()
            if (
                isinstance(ids, (str, bytes, Mapping))
                or not isinstance(ids, Sequence)
                or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids)
            ):
                raise TypeError(
                    f"refusal_probabilities: prompt {i} is not a list of token ids, got "
                    f"{type(ids).__name__}; encode conversations with llm.encode(messages), "
                    "or use conversation_refusal_probabilities."
                )
            if not ids:
                raise ValueError(f"refusal_probabilities: prompt {i} is empty (no token ids).")
            bad = [t for t in ids if t < 0 or (isinstance(vocab, int) and t >= vocab)]
            if bad:
                known = f"ids 0 to {vocab - 1}" if isinstance(vocab, int) else "ids from 0"
                raise ValueError(
                    f"refusal_probabilities: prompt {i} holds token id {bad[0]}, outside the "
                    f"vocabulary of {self._model_name} ({known}); encode it with this LLM's "
                    "llm.encode(messages)."
                )

    def _check_scored_length(self, n_prompt: int, n_scored: int, what: str, item: str) -> None:
        """``ValueError`` naming ``item`` when ``n_prompt`` tokens + the ``n_scored`` tokens of
        ``what`` reach past the context window: the model would read positions it does not
        know (a silent wrong score, or an ``IndexError`` inside a model with learned positions)."""
        if not self.context_window or n_prompt + n_scored <= self.context_window:
            return
        raise ValueError(
            f"{item}: Prompt of {n_prompt} tokens + {what}'s {n_scored} tokens exceeds the "
            f"context window ({self.context_window}) of {self._model_name}: its probability "
            "would be read past the positions the model knows. Send fewer or shorter sources "
            "(CitationQueryEngine(max_sources=..., max_source_chars=...))."
        )

    def _teacher_forced_logits(self, sequences: Sequence[Sequence[int]], keep: int) -> Any:
        """float32 logits of the last ``keep`` positions of each sequence (left padded).

        Position ids count each row's own tokens, so a padded row is read at the positions it
        has alone (a plain forward pass numbers the padding too, which moved the scores of
        models with learned positions, such as GPT-2, by half)."""
        import torch

        enc = self._pad(sequences)
        positions = (enc["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        options = [
            {"position_ids": positions, "logits_to_keep": keep + 1},
            {"position_ids": positions},
            {},
        ]
        with self._lock, torch.inference_mode():
            for extra in options:  # a model whose forward lacks logits_to_keep / position_ids
                try:
                    logits = self._model(**enc, **extra).logits
                    break
                except TypeError:
                    if not extra:
                        raise
        return logits[:, -(keep + 1) : -1].float()

    def _padding_keeps_scores(self) -> bool:
        """Whether a left-padded batch scores each prompt as it scores alone (float32 and
        float64 weights: to about 1e-6; half precision: not, see ``refusal_probabilities``)."""
        import torch

        dtype = getattr(self._model, "dtype", None)
        return dtype in (torch.float32, torch.float64)

    def conversation_refusal_probabilities(
        self,
        conversations: Sequence[MessagesLike],
        *,
        batch_size: int = 8,
        show_progress: bool = False,
    ) -> list[float]:
        """P(``refusal`` | conversation) for many conversations, ``batch_size`` at a time, without
        generating: what ``choose_refusal_threshold`` needs from a dev set. Each value is the one
        a query engine computes for that conversation alone (see ``refusal_probabilities``).

        Example::

            from llama_index_ragtune.evaluation import choose_refusal_threshold

            probabilities = llm.conversation_refusal_probabilities([c.messages() for c in dev])
            choice = choose_refusal_threshold(probabilities, [c.answerable for c in dev])
            llm.refusal_threshold = choice.threshold
        """
        encoded = [self.encode(c) for c in conversations]
        refusal = self.refusal_token_ids()
        for i, ids in enumerate(encoded):  # all checked before any is scored
            self._check_scored_length(len(ids), len(refusal), "the refusal", f"conversation {i}")
        chunks = length_sorted_chunks(encoded, batch_size, show_progress, "Scoring refusals")
        probabilities: list[float] = [0.0] * len(encoded)
        for chunk in chunks:
            scores = self.refusal_probabilities([encoded[i] for i in chunk])
            for i, p in zip(chunk, scores, strict=True):
                probabilities[i] = p
        return probabilities

    def citation_probabilities(
        self, messages: MessagesLike, answer_prefix: str, n_sources: int
    ) -> list[float]:
        """P(the next citation is ``[n]``) for n = 1..``n_sources`` after ``answer_prefix``,
        normalised over the sources: which source the model would cite at that point.

        Teacher-forced passes over ``prompt + answer_prefix + " [n]"``, at most
        ``CITATION_ROWS`` variants a pass and only variants of one length together (``[7]``
        and ``[12]`` differ in length): no row is padded, so each score is the one it has
        alone, and memory stays bounded for 100 sources.

        Example::

            llm.citation_probabilities(messages, "Rouen", n_sources=3)   # e.g. [0.1, 0.8, 0.1]
        """
        positive_int(n_sources, "citation_probabilities: n_sources")
        if not isinstance(answer_prefix, str):
            raise TypeError(
                "citation_probabilities: answer_prefix must be a str, got "
                f"{type(answer_prefix).__name__}."
            )
        prompt = self.encode(messages)
        prefix = answer_prefix.rstrip()
        # the answer is text: a "<|im_end|>" quoted in it must not end the turn being scored
        variants = [self._encode_text(f"{prefix} [{n}]") for n in range(1, n_sources + 1)]
        if len(variants) == 1:
            return [1.0]
        longest = max(len(v) for v in variants)
        self._check_scored_length(
            len(prompt), longest, "the answer prefix + citation", "citation_probabilities"
        )
        shared = min(common_prefix(variants[0], v) for v in variants)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(variants):
            by_length.setdefault(len(ids), []).append(i)
        scores = [0.0] * len(variants)
        for rows in by_length.values():
            for start in range(0, len(rows), CITATION_ROWS):
                chunk = rows[start : start + CITATION_ROWS]
                tails = [variants[i][shared:] for i in chunk]
                logits = self._teacher_forced_logits(
                    [prompt + variants[i] for i in chunk], len(tails[0])
                )
                logprobs = logits.log_softmax(dim=-1)
                for row, (i, tail) in enumerate(zip(chunk, tails, strict=True)):
                    scores[i] = sum(float(logprobs[row, j, tok]) for j, tok in enumerate(tail))
        top = max(scores)
        weights = [math.exp(x - top) for x in scores]
        return [w / sum(weights) for w in weights]

    def _barring_refusal(self, gen: dict[str, Any]) -> dict[str, Any]:
        """``gen`` plus a logits processor that stops an answer from opening with the refusal."""
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList(gen.get("logits_processor") or [])
        spaced = self._encode_raw(" " + self.refusal.strip())[:1]
        processors.append(
            BarRefusalStart(self.refusal_token_ids(), self._tokenizer, spaced_ids=spaced)
        )
        return {**gen, "logits_processor": processors}


# What an answer may hold before it has said anything: citation markers (complete or still
# being written) and whitespace. "[2] Insufficient information ..." opens with the refusal.
_NOTHING_SAID = re.compile(r"\s*(?:\[[^\]\n]{0,24}\]?\s*)*")
MARKER_TOKENS = 24  # a prefix longer than this has said something
CITATION_ROWS = 16  # citation variants scored in one pass (bounds memory for many sources)


class BarRefusalStart:
    """A ``transformers`` logits processor: the answer may not open with the refusal's first token.

    Barring only the refusal's exact continuation is not enough: a tuned model
    that leans towards refusing paraphrases it (``In|sufficiency ...``,
    ``In|adequate information ...``). An answer that happens to open with the
    same word piece (``In 1754``) opens differently (``1754``) instead.

    With the ``tokenizer``, the opening lasts while the answer holds only citation
    markers: a model taught to start with its citation writes ``[2] Insufficient
    information ...`` when the refusal at the very start is barred, so the refusal's
    first token after a space (``spaced_ids``: ``" In"``) is barred there too.

    Example::

        bar = BarRefusalStart(refusal_ids, tokenizer, spaced_ids=[533])
        gen_kwargs["logits_processor"] = LogitsProcessorList([bar])
    """

    def __init__(
        self,
        refusal_ids: Sequence[int],
        tokenizer: Any = None,
        spaced_ids: Sequence[int] = (),
    ) -> None:
        self.first = list(refusal_ids[:1])
        self.barred = list(dict.fromkeys([*self.first, *spaced_ids]))
        self.tokenizer = tokenizer
        self.prompt_width: int | None = None
        self._said: list[bool] | None = None  # per row: the answer has said something

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1]
        written = input_ids.shape[1] - self.prompt_width
        if not self.first:
            return scores
        if written == 0:
            scores[:, self.first] = float("-inf")
            return scores
        if self.tokenizer is None or written > MARKER_TOKENS:
            return scores
        if self._said is None:
            self._said = [False] * input_ids.shape[0]
        for row, said in enumerate(self._said):
            if said:
                continue
            text = self.tokenizer.decode(
                input_ids[row, self.prompt_width :].tolist(), skip_special_tokens=True
            )
            if _NOTHING_SAID.fullmatch(text):
                scores[row, self.barred] = float("-inf")
            else:
                self._said[row] = True
        return scores
