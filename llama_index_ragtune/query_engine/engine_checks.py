"""Clear errors for what ``CitationQueryEngine`` is given: its system prompt, its LLM, a question.

Example::

    check_system_prompt("Answer from the sources or say: {refusal}", DEFAULT_REFUSAL)
    check_query_type("Capital of Italy?")
    is_local(LocalChatLLM())    # True: it reports P(refusal) and takes refuse=
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import QueryBundle

__all__ = [
    "check_llm",
    "check_llm_enabled",
    "check_llm_type",
    "check_query_type",
    "check_system_prompt",
    "is_local",
]


def check_system_prompt(template: str, refusal: str) -> None:
    """A clear error for a system prompt without the refusal, or with slots other than ``{refusal}``."""
    if "{refusal}" not in template and refusal not in template:
        raise ValueError("system_prompt must contain '{refusal}' (or the refusal sentence itself).")
    try:
        template.format(refusal=refusal)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"system_prompt may only have the slot {{refusal}} ({exc!r}); write literal braces "
            "as '{{' and '}}'."
        ) from exc


def is_local(llm: Any) -> bool:
    """An LLM that reports its refusal probability and takes ``refuse=`` (``LocalChatLLM``)."""
    return hasattr(llm, "conversation_refusal_probabilities") and hasattr(
        llm, "active_refusal_policy"
    )


def check_llm_type(llm: Any, streaming: bool, where: str = "llm") -> None:
    """A ``TypeError`` for an answering LLM that cannot chat (a model name as a string, an
    embedding model, ``5``): it was an ``AttributeError`` ('str' object has no attribute
    'chat') after retrieval, at each query.

    Example::

        check_llm_type(MockLLM(), streaming=False)       # None
        check_llm_type("gpt-4o", streaming=False)        # TypeError naming it
    """
    needed = ("chat", "stream_chat") if streaming else ("chat",)
    missing = [name for name in needed if not callable(getattr(llm, name, None))]
    if missing:
        raise TypeError(
            f"CitationQueryEngine: {where} must be a LlamaIndex LLM (with "
            f"{' and '.join(needed)}), got {type(llm).__name__} {str(llm)[:60]!r} (no "
            f"{', '.join(missing)}); pass an LLM object such as LocalChatLLM(...) or "
            "OpenAI(model=...), not its name"
        )


def echoes_prompt(llm: Any) -> bool:
    """``llm`` is LlamaIndex's ``MockLLM`` without ``max_tokens``: it answers its prompt back
    (what ``Settings.llm = None`` stands in); ``MockLLM(max_tokens=n)`` answers ``"text"`` n times."""
    from llama_index.core.llms.mock import MockLLM

    if not isinstance(llm, MockLLM) or llm.max_tokens:
        return False
    # a subclass with its own complete() may answer otherwise
    owner = next(c for c in type(llm).__mro__ if "complete" in c.__dict__)
    return owner is MockLLM


def check_llm_enabled(llm: Any) -> None:
    """A ``ValueError`` when the engine would answer with ``Settings.llm`` and it is disabled
    (``Settings.llm = None``): LlamaIndex then stands in a ``MockLLM`` that echoes the prompt,
    which was served as an answer -- the system prompt and the sources -- "citing" [1].

    Example::

        Settings.llm = None
        check_llm_enabled(Settings.llm)     # ValueError naming Settings.llm
    """
    if echoes_prompt(llm):
        raise ValueError(
            "CitationQueryEngine has no LLM to answer with: Settings.llm is None (LlamaIndex "
            "stands in a MockLLM that echoes the prompt back, which would be served as the "
            "answer). Set one -- Settings.llm = LocalChatLLM(...) or OpenAI(model=...) -- or "
            "pass llm=... to the engine; for the sources alone (retrieval only), call "
            "engine.retrieve(QueryBundle(question)) or the retriever."
        )


def check_llm(llm: Any, refusal_policy: Any, uncited: str) -> None:
    """A clear error when ``llm`` cannot serve the refusal policy or the post-check."""
    if refusal_policy is not None and refusal_policy.uses_decoder and not is_local(llm):
        raise ValueError(
            f"{type(refusal_policy).__name__} reads the decoder's refusal probability, which "
            f"{type(llm).__name__} does not give; use LocalChatLLM, or an "
            "AnswerabilityRefusalPolicy (encoder side only)."
        )
    if uncited == "cite" and not hasattr(llm, "citation_probabilities"):
        raise ValueError(
            f"uncited='cite' asks the LLM which source to cite; {type(llm).__name__} has no "
            "citation_probabilities (use LocalChatLLM, or uncited='flag')."
        )


def check_query_type(query: Any) -> None:
    """A ``TypeError`` for a question that is not a ``str`` or a ``QueryBundle`` holding one."""
    if not isinstance(query, (str, QueryBundle)):
        raise TypeError(
            f"the question must be a str or a llama_index QueryBundle, got {type(query).__name__}"
        )
    if isinstance(query, QueryBundle) and not isinstance(query.query_str, str):
        raise TypeError(
            "the question's QueryBundle must hold a str query_str, got "
            f"{type(query.query_str).__name__}"
        )
