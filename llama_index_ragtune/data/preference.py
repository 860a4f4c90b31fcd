"""``PreferenceBuilder``: DPO pairs for grounded answers, rule-made or mined from the model's own failures.

Every pair shares its context with an SFT example (``GroundedContext``): the
same numbered sources and question, in TRL's conversational preference
format (``prompt`` = system + user messages, ``chosen`` / ``rejected`` = one
assistant message each). ``chosen`` is the context's target: the cited
answer, or the refusal when the sources lack the answer. ``rejected`` is one
of these failure modes (``strategy`` column):

- ``uncited``: the right answer with its citations stripped;
- ``wrong_citation``: the right answer citing a distractor source;
- ``refusal``: the refusal sentence although the evidence is there;
- ``fabricated``: an answer invented from a source that lacks it, cited,
  when the right reply is the refusal.

``from_model_failures`` mines pairs instead: it samples answers from a model
on each context, scores them with ``GenerationEvaluator`` (``composite_score``)
and pairs the best against the worst, skipping ties.

Example::

    from llama_index_ragtune.data import GroundedSFTBuilder, PreferenceBuilder

    contexts = GroundedSFTBuilder(retriever, documents).build_contexts(examples)
    pairs = PreferenceBuilder(seed=0).build(contexts)     # prompt, chosen, rejected, qid, strategy
    mined = PreferenceBuilder().from_model_failures(llm, contexts[:50], num_samples=4, temperature=0.9)
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.grounded import LABEL_WORDS, GroundedContext
from llama_index_ragtune.data.qa import split_sentences, text_blocks
from llama_index_ragtune.data.synthetic_parsing import answer_text
from llama_index_ragtune.evaluation.rewards import grounded_reward
from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    DEFAULT_SYSTEM_PROMPT,
    check_refusal,
    cite,
    find_citations,
    strip_citations,
)

if TYPE_CHECKING:
    import datasets

STRATEGIES = ("uncited", "wrong_citation", "refusal", "fabricated")
_SPAN_START = re.compile(r"\b(?:[A-Z][\w'-]*|\d[\d,.]*)")


def composite_score(row: Mapping[str, Any]) -> float:
    """One number per evaluated answer (a ``GenerationEvaluator.evaluate_example`` row), in [0, 1].

    The verifiable reward of :func:`llama_index_ragtune.evaluation.rewards.grounded_reward`:
    unanswerable context: 1 for the refusal, 0 otherwise. Answerable: 0 for a
    refusal, else ``0.4 * answer_score + 0.3 * citation_precision + 0.3 * citation_recall``
    (missing citation figures count as 0).
    """
    return grounded_reward(row)


class PreferenceBuilder:
    """Build DPO preference pairs over grounded contexts.

    Args:
        refusal / system_prompt: the shared prompt's refusal sentence and system message.
        strategies: which rule-made rejected answers to use (see the module docstring).
        pairs_per_context: rejected answers drawn per context (among the strategies that apply).
        seed: makes the draws reproducible (per question id).
    """

    def __init__(
        self,
        refusal: str = DEFAULT_REFUSAL,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        strategies: Sequence[str] = STRATEGIES,
        pairs_per_context: int = 1,
        seed: int = 0,
    ) -> None:
        if isinstance(strategies, str):
            strategies = (strategies,)  # one strategy, not its letters
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown or not strategies:
            raise ValueError(
                f"PreferenceBuilder: unknown strategies {unknown}; choose from {STRATEGIES}."
            )
        if not _whole(pairs_per_context, 1):
            raise ValueError(
                "PreferenceBuilder: pairs_per_context must be a whole number >= 1, got "
                f"{pairs_per_context!r}."
            )
        self.refusal = check_refusal(refusal)
        self.system_prompt = system_prompt
        self.strategies = tuple(strategies)
        self.pairs_per_context = pairs_per_context
        self.seed = seed

    # ------------------------------------------------------------ rule-made
    def rejected_candidates(self, context: GroundedContext) -> dict[str, str]:
        """Every rule-made rejected answer that applies to ``context``, by strategy."""
        rng = random.Random(f"{self.seed}:{context.qid}:rejected")
        out: dict[str, str] = {}
        n_sources = len(context.source_ids)
        if context.answerable:
            bare = " ".join(strip_citations(context.target).split())
            out["uncited"] = bare
            distractors = [n for n in range(1, n_sources + 1) if n not in context.gold_numbers]
            if distractors:
                wrong = rng.choice(distractors)
                out["wrong_citation"] = _recite(context.target, cite([wrong]))
            out["refusal"] = self.refusal
        else:
            number = rng.randint(1, n_sources)
            out["fabricated"] = self._fabricate(context, number, rng)
        return {
            k: v
            for k, v in out.items()
            if k in self.strategies and v.strip() and v != context.target
        }

    @staticmethod
    def _fabricate(context: GroundedContext, number: int, rng: random.Random) -> str:
        """A cited answer in the target format, made up from a sentence of source ``number``."""
        text = context.source_texts[number - 1]
        sentences = [s for block in text_blocks(text) for s in split_sentences(block)] or [text]
        sentence = rng.choice(sentences).strip()
        quote = sentence if len(sentence) <= 150 else sentence[:150].rsplit(" ", 1)[0] + " ..."
        if context.example.label is not None:
            answer = LABEL_WORDS[rng.choice(sorted(LABEL_WORDS))]
        else:
            starts = [m.start() for m in _SPAN_START.finditer(sentence)] or [0]
            words = sentence[rng.choice(starts) :].split()[: rng.randint(1, 4)]
            answer = " ".join(words).strip(" ,.;:()\"'") or sentence.split()[0]
        return f'{answer} {cite([number])}: "{quote}"'

    def build(
        self, contexts: Sequence[GroundedContext], show_progress: bool = True
    ) -> datasets.Dataset:
        """Rule-made pairs: up to ``pairs_per_context`` per context (contexts with no applicable strategy are skipped)."""
        from tqdm.auto import tqdm

        if not contexts:
            raise ValueError(
                "PreferenceBuilder.build: no contexts given (use GroundedSFTBuilder.build_contexts)."
            )
        rows: list[dict[str, Any]] = []
        for context in tqdm(contexts, desc="Building preference pairs", disable=not show_progress):
            candidates = self.rejected_candidates(context)
            if not candidates:
                continue
            rng = random.Random(f"{self.seed}:{context.qid}:pick")
            names = sorted(candidates)
            rng.shuffle(names)
            for name in names[: self.pairs_per_context]:
                rows.append(self._row(context, context.target, candidates[name], name))
        if not rows:
            raise ValueError(
                f"PreferenceBuilder.build: none of the strategies {self.strategies} applies to the "
                f"{len(contexts)} contexts (e.g. only 'fabricated' but every context is answerable)."
            )
        return _to_dataset(rows)

    def _row(
        self, context: GroundedContext, chosen: str, rejected: str, strategy: str, **extra: Any
    ) -> dict[str, Any]:
        return {
            "prompt": context.messages(self.refusal, self.system_prompt),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "qid": context.qid,
            "strategy": strategy,
            "chosen_score": float(extra.get("chosen_score", 1.0)),
            "rejected_score": float(extra.get("rejected_score", 0.0)),
        }

    # -------------------------------------------------------------- mined
    def from_model_failures(
        self,
        llm: Any,
        contexts: Sequence[GroundedContext],
        evaluator: Any | None = None,
        num_samples: int = 4,
        temperature: float = 0.9,
        max_new_tokens: int = 64,
        batch_size: int = 8,
        show_progress: bool = True,
    ) -> datasets.Dataset:
        """Sample ``num_samples`` answers per context from ``llm``, score them, pair best vs worst.

        ``llm`` is a LlamaIndex LLM; ``LocalChatLLM`` is sampled in batches
        (``generate_batch``), any other LLM through ``chat(..., temperature=...)``.
        ``evaluator`` defaults to a ``GenerationEvaluator`` with the SciFact label
        metric when the contexts carry labels, SQuAD F1 otherwise. Contexts whose
        samples all score the same give no pair (``strategy="model_failure"``).
        """
        from tqdm.auto import tqdm

        if not _whole(num_samples, 2):
            raise ValueError(
                "from_model_failures: num_samples must be a whole number >= 2 to form a pair, "
                f"got {num_samples!r}."
            )
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
            raise ValueError(
                f"from_model_failures: temperature must be a finite number > 0, got {temperature!r}."
            )
        if temperature <= 0:
            raise ValueError(
                f"from_model_failures: temperature must be > 0 (greedy samples are all equal), got {temperature}."
            )
        if evaluator is None:
            from llama_index_ragtune.evaluation.generation import GenerationEvaluator

            labelled = any(c.example.label is not None for c in contexts)
            evaluator = GenerationEvaluator(
                refusal=self.refusal, answer_metric="scifact" if labelled else "squad"
            )
        conversations = [
            c.messages(self.refusal, self.system_prompt)
            for c in contexts
            for _ in range(num_samples)
        ]
        answers = _sample(
            llm, conversations, temperature, max_new_tokens, batch_size, show_progress
        )
        if len(answers) != len(conversations):
            raise ValueError(
                f"from_model_failures: the LLM {type(llm).__name__} gave {len(answers)} answers "
                f"for {len(conversations)} prompts ({len(contexts)} contexts x {num_samples} "
                "samples); every prompt needs its answer, or the answers of one question would "
                "be paired under another's prompt."
            )
        rows: list[dict[str, Any]] = []
        for i, context in enumerate(
            tqdm(contexts, desc="Pairing samples", disable=not show_progress)
        ):
            scored: dict[str, float] = {}
            for answer in answers[i * num_samples : (i + 1) * num_samples]:
                if answer not in scored:
                    scored[answer] = composite_score(
                        evaluator.evaluate_example(**context.evaluation_kwargs(answer))
                    )
            ranked = sorted(scored.items(), key=lambda kv: -kv[1])
            (best, best_score), (worst, worst_score) = ranked[0], ranked[-1]
            if best_score > worst_score:
                rows.append(
                    self._row(
                        context,
                        best,
                        worst,
                        "model_failure",
                        chosen_score=best_score,
                        rejected_score=worst_score,
                    )
                )
        import datasets

        if not rows:
            return datasets.Dataset.from_dict({k: [] for k in _COLUMNS})
        return _to_dataset(rows)


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _recite(text: str, citation: str) -> str:
    """``text`` with its first run of adjacent citation markers replaced by ``citation``."""
    marks = find_citations(text)
    if not marks:
        return text
    end = marks[0].end
    for mark in marks[1:]:
        if mark.start != end:
            break
        end = mark.end
    return f"{text[: marks[0].start]} {citation}{text[end:]}".strip()


_COLUMNS = ("prompt", "chosen", "rejected", "qid", "strategy", "chosen_score", "rejected_score")


def _to_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in _COLUMNS})


def _sample(
    llm: Any,
    conversations: list[list[dict[str, str]]],
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    show_progress: bool,
) -> list[str]:
    if hasattr(llm, "generate_batch"):
        responses = llm.generate_batch(
            conversations,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            show_progress=show_progress,
            do_sample=True,
            temperature=temperature,
            top_p=0.95,
        )
        return [answer_text(r) for r in responses]
    from llama_index.core.base.llms.types import ChatMessage

    return [
        answer_text(
            llm.chat(
                [ChatMessage(role=m["role"], content=m["content"]) for m in conv],
                temperature=temperature,
            )
        )
        for conv in conversations
    ]
