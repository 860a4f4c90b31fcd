"""Entailment checks for the ALCE-style citation metrics of ``GenerationEvaluator``.

An entailment check is any callable ``(claim, source_text) -> bool | float``:
does the source support the claim? Two ready-made ones: a sentence-transformers
cross-encoder (an NLI model, or a relevance reranker as a proxy) and any
LlamaIndex LLM as a yes/no judge.

Example::

    from llama_index_ragtune.evaluation import GenerationEvaluator, LLMJudgeEntailment
    from llama_index_ragtune.llms import LocalChatLLM

    evaluator = GenerationEvaluator(entailment=LLMJudgeEntailment(LocalChatLLM(max_new_tokens=4)))
    row = evaluator.evaluate_example(
        "Capital of France?", "Paris is the capital [1].", source_node_ids=["n1"],
        gold_answers=["Paris"], source_texts=["Paris is the capital of France."],
    )
    row["nli_citation_recall"]      # 1.0 when the judge answers "yes"
"""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class EntailmentCheck(Protocol):
    """Does ``source_text`` support ``claim``? A bool, or a score compared to the evaluator's threshold."""

    def __call__(self, claim: str, source_text: str) -> bool | float: ...


def entailed(value: Any, threshold: float, claim: str) -> bool:
    """An entailment check's answer read as entailed or not: a bool as it is, a finite
    score at or above ``threshold``; anything else (NaN, None, "yes") raises ``ValueError``
    naming ``claim``, never "not entailed".

    Example::

        entailed(0.7, 0.5, "Paris is in France."), entailed(False, 0.5, "...")   # (True, False)
    """
    if isinstance(value, bool):
        return value
    dtype = getattr(value, "dtype", None)
    if getattr(dtype, "kind", None) == "b" and not getattr(value, "shape", ()):
        return bool(value)  # a NumPy / torch boolean scalar
    if isinstance(value, Real) and math.isfinite(value):
        return float(value) >= threshold
    raise ValueError(
        f"the entailment check returned {value!r} ({type(value).__name__}) for the claim "
        f"{claim[:80]!r}; it must return True / False or a finite score (a NaN score is "
        "neither entailed nor not: fix the check, or catch its failures and return False)"
    )


# --------------------------------------------------------- entailment checks
class CrossEncoderEntailment:
    """Entailment (or relevance) score from a sentence-transformers ``CrossEncoder``.

    A 3-way NLI model (labels with "entail" in ``id2label``) is fed
    ``(source, claim)`` = (premise, hypothesis) and returns the softmax
    probability of entailment; a 1-logit model (a reranker such as the one
    ``RerankerFinetuneEngine`` trains) is fed ``(claim, source)`` and returns
    its sigmoid score, a relevance proxy for support.

    Example::

        from sentence_transformers import CrossEncoder
        from llama_index_ragtune.models import default_encoder

        # In practice an NLI model ("cross-encoder/nli-deberta-v3-small", from the hub) or a
        # trained reranker folder; offline, the bundled MiniLM with a fresh 1-logit head runs too.
        check = CrossEncoderEntailment(CrossEncoder(default_encoder(), num_labels=1))
        0.0 <= check("Statins lower LDL.", "Statins reduced LDL by 30%.") <= 1.0    # True
    """

    def __init__(
        self, model: Any = None, device: str | None = None, max_length: int | None = 512
    ) -> None:
        from sentence_transformers import CrossEncoder

        if isinstance(model, CrossEncoder):
            self.model = model
        else:
            if model is None:
                raise ValueError(
                    "CrossEncoderEntailment needs a model: an NLI cross-encoder id/path "
                    "(e.g. 'cross-encoder/nli-deberta-v3-small') or a trained reranker folder."
                )
            from llama_index_ragtune.models import load_model

            self.model = load_model(CrossEncoder, str(model), device=device, max_length=max_length)
        labels = {int(k): str(v).lower() for k, v in (self.model.config.id2label or {}).items()}
        entail = [i for i, name in labels.items() if "entail" in name]
        if self.model.num_labels > 1 and not entail:
            raise ValueError(
                f"Cross-encoder with {self.model.num_labels} labels {labels} has no 'entailment' label; "
                "use an NLI model or a 1-logit relevance model."
            )
        self.entail_index = entail[0] if self.model.num_labels > 1 else None

    def __call__(self, claim: str, source_text: str) -> float:
        if self.entail_index is None:
            return float(self.model.predict([(claim, source_text)], show_progress_bar=False)[0])
        probs = self.model.predict(
            [(source_text, claim)], apply_softmax=True, show_progress_bar=False
        )[0]
        return float(probs[self.entail_index])


DEFAULT_JUDGE_PROMPT = (
    "Source:\n<source>\n{source}\n</source>\n\nClaim: {claim}\n\n"
    "Does the source fully support the claim? Answer with one word: yes or no."
)


class LLMJudgeEntailment:
    """Any LlamaIndex ``LLM`` as a yes/no support judge (``None`` = ``Settings.llm``).

    Returns True when the reply's first word is "yes" (case-insensitive). ``prompt``
    needs ``{claim}`` and ``{source}`` slots.

    Example::

        from llama_index_ragtune.llms import LocalChatLLM

        judge = LLMJudgeEntailment(LocalChatLLM(max_new_tokens=4))
        judge("Paris is in France.", "Paris is the capital of France.")   # True or False
    """

    def __init__(self, llm: Any = None, prompt: str = DEFAULT_JUDGE_PROMPT) -> None:
        try:
            prompt.format(claim="", source="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"LLMJudgeEntailment: prompt has a slot other than {{claim}} and {{source}} "
                f"({exc!r}); double literal braces as '{{{{' and '}}}}'."
            ) from exc
        if "{claim}" not in prompt or "{source}" not in prompt:
            raise ValueError("LLMJudgeEntailment: prompt must contain '{claim}' and '{source}'.")
        if llm is None:
            from llama_index.core import Settings

            llm = Settings.llm
        self.llm = llm
        self.prompt = prompt

    def __call__(self, claim: str, source_text: str) -> bool:
        from llama_index.core.llms import ChatMessage

        text = self.prompt.format(
            claim=claim, source=source_text.replace("</source>", "</ source>")
        )
        reply = self.llm.chat([ChatMessage(role="user", content=text)]).message.content or ""
        words = re.findall(r"[a-z]+", reply.lower())
        return bool(words) and words[0] == "yes"
