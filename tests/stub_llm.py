"""A scripted chat LLM for tests: a subclass says what to answer (``reply``); the stub streams it
in ``chunk``-character deltas and provides the async and completion twins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback


class StubChatLLM(CustomLLM):
    """Answers ``reply(messages)``; ``complete`` answers ``completion(prompt)`` (the prompt)."""

    chunk: int = 3

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True)

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        raise NotImplementedError

    def completion(self, prompt: str) -> str:
        return prompt

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply(messages)))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        answer = self.reply(messages)

        def gen():
            for i in range(0, len(answer), self.chunk):
                yield ChatResponse(
                    message=ChatMessage(role="assistant", content=answer[: i + self.chunk]),
                    delta=answer[i : i + self.chunk],
                )

        return gen()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        chunks = list(self.stream_chat(messages))

        async def gen():
            for chunk in chunks:
                yield chunk

        return gen()

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.completion(prompt))

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        text = self.completion(prompt)
        yield CompletionResponse(text=text, delta=text)


class DiesMidStream(StubChatLLM):
    """Streams ``answer`` and fails (a reset backend connection) after ``good`` chunks,
    sync and async; ``chat`` answers whole."""

    answer: str = "Paris is the capital of France [1]."
    good: int = 3

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        return self.answer

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        chunks = super().stream_chat(messages)

        def gen():
            for i, chunk in enumerate(chunks):
                if i == self.good:
                    raise ConnectionError("backend connection reset")
                yield chunk

        return gen()

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        chunks = list(super().stream_chat(messages))

        async def gen():
            for i, chunk in enumerate(chunks):
                if i == self.good:
                    raise ConnectionError("backend connection reset")
                yield chunk

        return gen()


class UserLLM(CustomLLM):
    """A user's completion LLM: ``reply(prompt)`` is its answer (an exception it returns is
    raised); ``prompts`` records what it was asked, ``window`` is its context window."""

    reply: Callable[[str], Any]
    prompts: list[str] = []
    window: int = 3900

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.window, num_output=64, model_name="user-model")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        answer = self.reply(prompt)
        if isinstance(answer, Exception):
            raise answer
        return CompletionResponse(text=answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError
