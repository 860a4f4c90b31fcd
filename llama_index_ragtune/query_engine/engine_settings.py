"""``CitationQueryEngine``'s settings, checked on every assignment as when the engine is built.

A setting changed on a built engine (``engine.max_sources = 0``, ``engine.uncited = "cite"``
on a streaming engine, ``engine.system_prompt = "..."`` without the refusal) used to be taken
as is: ``0`` served every node, ``-1`` dropped the last source, ``1.5`` was a raw ``TypeError``
at the next query, and an unknown mode was silently read as the default. Each setting is a
property here whose setter runs the constructor's check, naming the setting.

Example::

    engine.max_sources = 3          # fine
    engine.max_sources = 0          # ValueError: max_sources (or None) must be an integer >= 1, got 0
"""

from __future__ import annotations

from typing import Any

from llama_index.core.indices.prompt_helper import PromptHelper
from llama_index.core.schema import MetadataMode

from llama_index_ragtune.grounding import check_refusal
from llama_index_ragtune.llms.refusal_policy import RefusalPolicy
from llama_index_ragtune.query_engine.engine_checks import check_llm, check_system_prompt
from llama_index_ragtune.query_engine.post_check import MODES
from llama_index_ragtune.retrievers.checks import CheckedAttribute, positive_int

__all__ = ["EngineSettings"]


def _optional_positive_int(value: Any, name: str) -> int | None:
    return None if value is None else positive_int(value, f"{name} (or None)")


def _metadata_mode(value: Any, name: str) -> MetadataMode:
    if isinstance(value, MetadataMode):
        return value
    try:
        return MetadataMode(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"{name} must be a llama_index MetadataMode "
            f"({', '.join(m.value for m in MetadataMode)}), got {value!r}."
        ) from None


def _prompt_helper(value: Any, name: str) -> PromptHelper | None:
    if value is not None and not isinstance(value, PromptHelper):
        raise TypeError(f"{name} must be a llama_index PromptHelper, got {type(value).__name__}.")
    return value


class EngineSettings:
    """The checked settings of :class:`~llama_index_ragtune.query_engine.CitationQueryEngine`
    (a mixin: each assignment, in ``__init__`` or later, runs the constructor's check).

    Example::

        engine.streaming = True     # fine unless uncited == "cite" (ValueError naming both)
    """

    max_sources = CheckedAttribute(_optional_positive_int)
    max_source_chars = CheckedAttribute(_optional_positive_int)
    metadata_mode = CheckedAttribute(_metadata_mode)
    prompt_helper = CheckedAttribute(_prompt_helper)

    _llm: Any = None
    _refusal: str | None = None
    _system_prompt: str | None = None
    _refusal_policy: Any = None
    _uncited = "flag"
    _streaming = False

    @property
    def refusal(self) -> str:
        """The sentence the model must use when the sources lack the answer."""
        return self._refusal

    @refusal.setter
    def refusal(self, value: str) -> None:
        check_refusal(value)
        if self._system_prompt is not None:
            check_system_prompt(self._system_prompt, value)
        self._refusal = value

    @property
    def system_prompt(self) -> str:
        """The system message template (a ``{refusal}`` slot or the refusal sentence itself)."""
        return self._system_prompt

    @system_prompt.setter
    def system_prompt(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"system_prompt must be a str, got {type(value).__name__}.")
        check_system_prompt(value, self._refusal)
        self._system_prompt = value

    @property
    def refusal_policy(self) -> Any:
        """The ``RefusalPolicy`` deciding before the LLM is called whether to refuse, or None."""
        return self._refusal_policy

    @refusal_policy.setter
    def refusal_policy(self, value: Any) -> None:
        if value is not None and not isinstance(value, RefusalPolicy):
            raise TypeError(
                f"refusal_policy must be a RefusalPolicy (llms.refusal_policy), got "
                f"{type(value).__name__}."
            )
        if self._llm is not None:
            check_llm(self._llm, value, self._uncited)
        self._refusal_policy = value

    @property
    def uncited(self) -> str:
        """``"flag"`` or ``"cite"``: what is done with answered claims lacking a citation."""
        return self._uncited

    @uncited.setter
    def uncited(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"uncited must be one of {MODES}, got {value!r}.")
        if value == "cite" and self._streaming:
            raise ValueError(
                "uncited='cite' rewrites the answer once it is complete; use streaming=False, "
                "or uncited='flag' to stream."
            )
        if self._llm is not None:
            check_llm(self._llm, self._refusal_policy, value)
        self._uncited = value

    @property
    def streaming(self) -> bool:
        """Whether ``query`` returns a ``StreamingResponse``."""
        return self._streaming

    @streaming.setter
    def streaming(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(
                f"streaming must be True or False, got {type(value).__name__} {value!r}."
            )
        if value and self._uncited == "cite":
            raise ValueError(
                "uncited='cite' rewrites the answer once it is complete; use streaming=False, "
                "or uncited='flag' to stream."
            )
        self._streaming = value
