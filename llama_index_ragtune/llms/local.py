"""``LocalChatLLM``: any Hugging Face causal LM (or LoRA adapter folder) as a LlamaIndex chat LLM.

The prompt is always built by the model's own chat template, so a decoder
tuned on chat-formatted data (``DecoderFinetuneEngine``) is queried in exactly
the format it was trained on. Generation is greedy by default (reproducible),
stops at the template's end-of-turn token (``<|im_end|>`` for SmolLM2), and
records token counts and tokens/s in every response's ``raw["usage"]`` so
LlamaIndex's ``TokenCountingHandler`` sees them; ``raw["finish_reason"]`` is
``"length"`` for an answer cut by ``max_new_tokens`` (not a whole answer), else ``"stop"``.
``max_new_tokens`` is clamped per call to what the context window leaves after the prompt
(``raw["max_new_tokens"]``); only a prompt that fills the window is an error, and a value
``>= context_window`` is refused when the LLM is built.

Calibrated refusal (``refusal_threshold``): greedy decoding picks the refusal
sentence whenever its first token beats the first token of every single
answer, although the answer's probability is spread over many first tokens;
a tuned decoder then refuses questions it would answer. With a threshold,
the LLM scores P(refusal sentence | prompt) in one teacher-forced pass and
refuses exactly when it reaches the threshold; below it, the answer may not
open with the refusal's first token (which also rules out paraphrases of the
refusal). 0.5 means "refuse when refusing is more likely than any answer";
choose it on dev questions (``evaluation.choose_refusal_threshold``) to trade
refusals against answers. Each response carries the probability in
``raw["refusal_probability"]``.

Refusal policies (``refusal_policy``, see :mod:`llama_index_ragtune.llms.refusal_policy`)
generalise the threshold: the decision may also read the encoder side's
answerability of the sources (read back from the grounded prompt with
``grounding.read_grounded_prompt``), or a calibrated combination of both.
``refusal_threshold=t`` is the policy ``DecoderRefusalPolicy(t)``. Each
response explains its decision in ``raw["refusal_decision"]`` (signal, value,
threshold). A caller that already decided passes ``refuse=True/False`` to
``chat`` / ``generate_batch`` (the refusal, or an answer with the refusal
barred). ``citation_probabilities`` gives the model's probability of citing
each source after a partial answer (the post-check that cites uncited claims).

Its parts, one module each: ``loading`` (the model, the tokenizer, stop and pad ids),
``chat_io`` (messages in, responses out), ``generation`` (token budgets, batches),
``streaming``, and ``refusal_scoring`` (P(refusal), citation probabilities).

Why not ``llama-index-llms-huggingface``'s ``HuggingFaceLLM``? Its ``chat``
works with chat templates, but ``complete`` sends raw text to an instruct
model (SmolLM2 then answers nothing), streaming ignores ``completion_to_prompt``,
async calls block the event loop, there is no batched generation, no token
counts, no PEFT adapter loading, and control tokens inside a document
(``<|im_end|>``) are tokenized as real turn delimiters. This class fixes those.

Example::

    from llama_index.core.llms import ChatMessage
    from llama_index_ragtune.llms import LocalChatLLM

    llm = LocalChatLLM(max_new_tokens=32)            # bundled SmolLM2-135M-Instruct
    llm.chat([ChatMessage(role="user", content="Capital of France?")]).message.content
    llm.generate_batch([[{"role": "user", "content": "Hi"}]] * 4, batch_size=4)
    tuned = LocalChatLLM("runs/decoder/merged", refusal_threshold=0.5)   # calibrated refusal
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llama_index_ragtune.grounding import DEFAULT_REFUSAL, check_refusal
from llama_index_ragtune.llms.chat_io import (
    MessagesLike,
    aiter_in_thread,
    as_completion,
    completion_messages,
    encode_chat,
    to_dicts,
)
from llama_index_ragtune.llms.generation import Generation, check_stop_strings
from llama_index_ragtune.llms.loading import (
    check_device,
    load_causal_lm,
    pad_token_id,
    require_chat_template,
    stop_token_ids,
)
from llama_index_ragtune.llms.refusal_policy import RefusalPolicy
from llama_index_ragtune.llms.refusal_scoring import RefusalScoring
from llama_index_ragtune.llms.streaming import Streaming, stoppable_in_thread
from llama_index_ragtune.retrievers.checks import (
    clean_text,
    non_negative_float,
    positive_int,
    unit_float,
)


def check_llm_settings(kwargs: Mapping[str, Any]) -> None:
    """Numeric settings of :class:`LocalChatLLM` as the user passed them, checked before any
    model loads: ``TypeError`` / ``ValueError`` naming the argument (a bool, a string or
    ``2.5`` is refused, never coerced).

    Example::

        check_llm_settings({"max_new_tokens": 64, "temperature": 0.0})   # passes
    """

    def name(key: str) -> str:
        return f"LocalChatLLM: {key}"

    if "max_new_tokens" in kwargs:
        positive_int(kwargs["max_new_tokens"], name("max_new_tokens"))
    if kwargs.get("context_window") is not None:
        positive_int(kwargs["context_window"], name("context_window"), minimum=2)
    if "temperature" in kwargs:
        non_negative_float(kwargs["temperature"], name("temperature"))
    if "top_p" in kwargs and unit_float(kwargs["top_p"], name("top_p")) == 0.0:
        raise ValueError(f"{name('top_p')} must be a number in (0, 1], got 0.0")
    if kwargs.get("refusal_threshold") is not None:
        unit_float(kwargs["refusal_threshold"], name("refusal_threshold"))
    extra = kwargs.get("generate_kwargs")
    if isinstance(extra, Mapping) and "stop_strings" in extra:
        check_stop_strings(extra["stop_strings"])


def _checked_messages(method: Any) -> Any:
    """Check ``messages`` before LlamaIndex's callback decorator turns a wrong one into a
    pydantic error from its start event: a ``TypeError`` / ``ValueError`` naming the message."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def checked_async(self: Any, messages: Any, **kwargs: Any) -> Any:
            to_dicts(messages)
            return await method(self, messages, **kwargs)

        return checked_async

    @functools.wraps(method)
    def checked(self: Any, messages: Any, **kwargs: Any) -> Any:
        to_dicts(messages)
        return method(self, messages, **kwargs)

    return checked


class LocalChatLLM(Generation, RefusalScoring, Streaming, CustomLLM):
    """A local Hugging Face causal LM behind LlamaIndex's ``LLM`` interface, prompted by its chat template.

    ``model`` is ``None`` (the bundled SmolLM2-135M-Instruct), a local folder,
    or a hub id. A folder holding ``adapter_config.json`` (a PEFT/LoRA output
    directory) loads its base model plus the adapter, merged by default. An
    in-memory model is passed as ``hf_model=`` with its ``tokenizer=``. The
    model is loaded when the LLM is built; generation is serialised by a lock,
    so one instance can be shared between threads.

    Example::

        from llama_index.core import Settings
        from llama_index_ragtune.llms import LocalChatLLM

        Settings.llm = LocalChatLLM(max_new_tokens=16)        # or LocalChatLLM("runs/decoder/merged")
        Settings.llm.complete("Name a primary colour.").raw["usage"]["completion_tokens"]   # <= 16
    """

    model: str | None = Field(
        default=None,
        description="None (bundled SmolLM2-135M-Instruct), a local model folder, a PEFT adapter folder, or a hub id.",
    )
    max_new_tokens: int = Field(default=256, gt=0, description="Most tokens generated per answer.")
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        description="0 = greedy decoding (reproducible); > 0 samples at this temperature.",
    )
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (only when sampling)."
    )
    device: str | None = Field(
        default=None, description="Torch device; None picks 'cuda' when available, else 'cpu'."
    )
    dtype: str | None = Field(
        default=None,
        description=(
            "Weights dtype name; None = float32 on CPU, bfloat16/float16 on GPU; "
            "'auto' = the same but bfloat16 on a CPU with native bfloat16 (about 2x faster)."
        ),
    )
    context_window: int | None = Field(
        default=None,
        description="Prompt + answer token budget; None reads max_position_embeddings from the config.",
    )
    merge_adapter: bool = Field(
        default=True, description="Merge a loaded LoRA adapter into the base weights (faster)."
    )
    sanitize_control_tokens: bool = Field(
        default=True,
        description="Encode control tokens found inside message text (e.g. '<|im_end|>' in a document) as plain text.",
    )
    generate_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for transformers' generate() (e.g. repetition_penalty).",
    )
    refusal_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Calibrated refusal: answer with `refusal` exactly when the model gives it a probability "
            ">= this threshold; below it, the answer may not open with the refusal's first token. "
            "None: plain decoding."
        ),
    )
    refusal: str = Field(
        default=DEFAULT_REFUSAL,
        description="The refusal sentence `refusal_threshold` applies to (CitationQueryEngine's).",
    )
    refusal_policy: Any = Field(
        default=None,
        description=(
            "A RefusalPolicy (llms.refusal_policy) deciding each refusal before decoding, e.g. "
            "the decoder's and the encoder's signals combined; exclusive with refusal_threshold."
        ),
        exclude=True,
    )

    @field_validator("refusal")
    @classmethod
    def _check_refusal(cls, value: str) -> str:
        return check_refusal(value)

    @field_validator("refusal_policy")
    @classmethod
    def _check_policy(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, RefusalPolicy):
            raise TypeError(
                f"refusal_policy must be a RefusalPolicy (llms.refusal_policy), got "
                f"{type(value).__name__}."
            )
        return value

    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _stop_ids: list[int] = PrivateAttr(default_factory=list)
    _pad_id: int = PrivateAttr(default=0)
    _lock: Any = PrivateAttr(default=None)
    _model_name: str = PrivateAttr(default="")

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        hf_model: Any | None = None,
        tokenizer: Any | None = None,
        **kwargs: Any,
    ) -> None:
        if model is not None and not isinstance(model, (str, Path)):
            raise TypeError(
                f"LocalChatLLM: model must be None (the bundled decoder), a folder path or a hub "
                f"id, got {type(model).__name__} {model!r}; pass an in-memory model as hf_model=."
            )
        check_llm_settings(kwargs)
        super().__init__(model=None if model is None else str(model), **kwargs)
        import torch

        if self.refusal_policy is not None and self.refusal_threshold is not None:
            raise ValueError(
                "LocalChatLLM: pass refusal_threshold= or refusal_policy=, not both "
                "(refusal_threshold=t is DecoderRefusalPolicy(t))."
            )

        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        check_device(self.device, "LocalChatLLM")
        if tokenizer is not None and not callable(getattr(tokenizer, "apply_chat_template", None)):
            raise TypeError(
                "LocalChatLLM: tokenizer must be a transformers tokenizer (with a chat template), "
                f"got {type(tokenizer).__name__}."
            )
        if hf_model is not None:
            if tokenizer is None:
                raise ValueError("LocalChatLLM: pass `tokenizer=` together with `hf_model=`.")
            if not callable(getattr(hf_model, "generate", None)):
                raise TypeError(
                    "LocalChatLLM: hf_model must be a transformers causal LM (with generate()), "
                    f"got {type(hf_model).__name__}."
                )
            self._model, self._tokenizer = hf_model, tokenizer
            self._model_name = str(getattr(hf_model, "name_or_path", "") or "in-memory model")
        else:
            self._model, self._tokenizer, self._model_name = load_causal_lm(
                self.model,
                device=self.device,
                dtype=self.dtype,
                merge_adapter=self.merge_adapter,
                tokenizer=tokenizer,
            )
        require_chat_template(self._tokenizer, self._model_name)
        self._model.eval()
        self._pad_id = pad_token_id(self._model, self._tokenizer)
        positions = getattr(self._model.config, "max_position_embeddings", None)
        if self.context_window is None:
            self.context_window = int(positions or 2048)
        elif isinstance(positions, int) and self.context_window > positions:
            raise ValueError(
                f"LocalChatLLM: context_window={self.context_window} is larger than the "
                f"{positions} positions {self._model_name} was built for; pass at most "
                f"{positions} (or None to read it from the model)."
            )
        if self.max_new_tokens >= self.context_window:
            raise ValueError(
                f"LocalChatLLM: max_new_tokens={self.max_new_tokens} leaves no room for a prompt "
                f"in the context window ({self.context_window}) of {self._model_name}; lower "
                "max_new_tokens."
            )
        self._stop_ids = stop_token_ids(self._model, self._tokenizer)
        self._lock = threading.Lock()

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialisation stores for this class."""
        return "LocalChatLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output budget and model name; always a chat model."""
        return LLMMetadata(
            context_window=self.context_window or 2048,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self._model_name,
        )

    @property
    def hf_model(self) -> Any:
        """The underlying ``transformers`` model."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The underlying tokenizer (with the chat template)."""
        return self._tokenizer

    # --------------------------------------------------------------- prompting
    def _with_system(self, messages: MessagesLike) -> list[dict[str, str]]:
        dicts = to_dicts(messages)
        if self.system_prompt and dicts[0]["role"] != "system":
            dicts.insert(0, {"role": "system", "content": self.system_prompt})
        return dicts

    def encode(self, messages: MessagesLike) -> list[int]:
        """Token ids of ``messages`` rendered by the chat template, with the assistant header appended."""
        return encode_chat(
            self._tokenizer, self._with_system(messages), self.sanitize_control_tokens
        )

    def _encode_raw(self, prompt: str) -> list[int]:
        return list(self._tokenizer(clean_text(prompt), add_special_tokens=False)["input_ids"])

    def _encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` with any control token in it (``<|im_end|>``) encoded as plain text."""
        tokens = self._tokenizer(
            clean_text(text), add_special_tokens=False, split_special_tokens=True
        )
        return list(tokens["input_ids"])

    def _prompt_ids(self, prompt: str, formatted: bool) -> list[int]:
        """A completion prompt as ids: one user turn through the chat template unless ``formatted``."""
        if not isinstance(prompt, str):
            raise TypeError(f"LocalChatLLM: prompt must be a str, got {type(prompt).__name__}.")
        if formatted:
            ids = self._encode_raw(prompt)
            if not ids:
                raise ValueError(
                    "LocalChatLLM: the formatted prompt is empty; there is nothing to complete."
                )
            return ids
        return self.encode([{"role": "user", "content": prompt}])

    # ----------------------------------------------------------- LLM interface
    # Each public method is decorated once and calls only undecorated cores, so every
    # call emits exactly one set of LLM callback and instrumentation events.
    @_checked_messages
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer ``messages`` (rendered by the chat template); ``kwargs`` override generate().

        ``refuse=True`` / ``False`` overrides the refusal policy for this call.
        """
        return self._chat_ids(self.encode(messages), messages, **kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete ``prompt``; unless ``formatted``, it is sent as one user turn through the chat template."""
        ids = self._prompt_ids(prompt, formatted)
        return as_completion(self._chat_ids(ids, completion_messages(prompt, formatted), **kwargs))

    @_checked_messages
    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the answer: each chunk has the new ``delta`` and the text so far; the last, the usage."""
        return self._chat_stream(self.encode(messages), messages, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Streaming twin of :meth:`complete`."""
        messages = completion_messages(prompt, formatted)
        return self._completion_stream(self._prompt_ids(prompt, formatted), messages, **kwargs)

    # Async twins run generation in a worker thread so the event loop stays free.
    @_checked_messages
    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async twin of :meth:`chat` (generation in a worker thread)."""
        # a cancelled request stops generating at the next token (and frees the lock)
        kwargs.setdefault("stopping_criteria", self.generate_kwargs.get("stopping_criteria"))
        return await stoppable_in_thread(self._chat_ids, self.encode(messages), messages, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async twin of :meth:`complete` (generation in a worker thread)."""
        ids = self._prompt_ids(prompt, formatted)
        messages = completion_messages(prompt, formatted)
        kwargs.setdefault("stopping_criteria", self.generate_kwargs.get("stopping_criteria"))
        return as_completion(await stoppable_in_thread(self._chat_ids, ids, messages, **kwargs))

    @_checked_messages
    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async twin of :meth:`stream_chat` (each chunk produced in a worker thread)."""
        return aiter_in_thread(self._chat_stream(self.encode(messages), messages, **kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async twin of :meth:`stream_complete`."""
        ids = self._prompt_ids(prompt, formatted)
        messages = completion_messages(prompt, formatted)
        return aiter_in_thread(self._completion_stream(ids, messages, **kwargs))
