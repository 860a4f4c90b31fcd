"""Saying (once) that an embedding model cut texts to its window, for Hugging Face models.

Sentence-transformers (so LlamaIndex's ``HuggingFaceEmbedding``) cut every text to the
model's ``max_seq_length`` silently: a long node is searched by its start only.
:class:`CutWarner` counts the tokens of the texts a model is given and, the first time
some are longer than the window, logs one warning per kind (queries, documents) naming
how many tokens were dropped and the fix, as :class:`~llama_index_ragtune.embeddings.OnnxEmbedding`
does. Counting uses a copy of the tokenizer, so it never changes (or races with) the
truncation settings of the one the model encodes with.

Example::

    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index_ragtune.embeddings.truncation import hf_cut_warner

    embed = HuggingFaceEmbedding(model_name="sentence-transformers/all-MiniLM-L6-v2")
    warner = hf_cut_warner(embed)
    warner.check(["word " * 1000], "text")    # logs: ... 744 of its tokens dropped ...
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["CutWarner", "hf_cut_warner", "wrapped_cut_warner"]


class CutWarner:
    """Warns once per kind (``"query"`` / ``"text"``) when texts pass the model's window.

    Args:
        name: the model, as the warning names it.
        limit: the window in tokens (``max_seq_length``).
        count_tokens: the tokens of each text (special tokens and prompt included).
        prompts: the prefix the model puts before each kind of text (instructions).
        owner: the class named in the warning.

    Example::

        warner = CutWarner("tiny", 8, lambda texts: [len(t.split()) + 2 for t in texts])
        warner.check(["one two three four five six seven"], "text")   # warns: 1 token dropped
    """

    def __init__(
        self,
        name: str,
        limit: int,
        count_tokens: Callable[[list[str]], list[int]],
        prompts: dict[str, str] | None = None,
        owner: str = "HuggingFaceEmbedding",
    ) -> None:
        self.name, self.limit, self.owner = name, int(limit), owner
        self._count = count_tokens
        self._prompts = dict(prompts or {})
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def check(self, texts: Sequence[Any], kind: str) -> None:
        """Warn (once for ``kind``) if any of ``texts`` is longer than the window; never raises."""
        if kind in self._warned or not texts:
            return
        prefix = self._prompts.get(kind) or ""
        strings = [prefix + t for t in texts if isinstance(t, str)]
        if not strings:
            return
        try:
            counts = self._count(strings)
        except Exception as exc:  # noqa: BLE001 - a warning must never fail the embedding
            logger.debug("%s: could not count tokens (%s); no truncation check", self.owner, exc)
            return
        cut = [n for n in counts if n > self.limit]
        if not cut:
            return
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        self._warn(kind, cut, len(strings))

    def _warn(self, kind: str, cut: list[int], total: int) -> None:
        longest = max(cut)
        if kind == "query":
            logger.warning(
                "%s: a query of %d tokens is longer than the encoder %r reads "
                "(max_seq_length %d): its last %d tokens were dropped, so it is searched by "
                "its start only. Shorten long queries, or raise max_seq_length (max_length=) "
                "if the model was trained for longer texts. (Said once per embedding model; "
                "later queries are cut silently.)",
                self.owner,
                longest,
                self.name,
                self.limit,
                longest - self.limit,
            )
            return
        logger.warning(
            "%s: %d of the %d texts of this call are longer than the encoder %r reads "
            "(max_seq_length %d; the longest has %d tokens, %d of them dropped): only their "
            "first %d tokens are embedded. Split the nodes smaller (a node parser's "
            "chunk_size below the window), or raise max_seq_length (max_length=) if the "
            "model was trained for longer texts. (Said once per embedding model; later "
            "texts are cut silently.)",
            self.owner,
            len(cut),
            total,
            self.name,
            self.limit,
            longest,
            longest - self.limit,
            self.limit,
        )


def hf_cut_warner(embed_model: Any) -> CutWarner | None:
    """A :class:`CutWarner` for a LlamaIndex ``HuggingFaceEmbedding`` (None for another model,
    or one whose tokenizer or window cannot be read).

    Example::

        hf_cut_warner(HuggingFaceEmbedding(model_name=path)).limit    # 256 for MiniLM
    """
    huggingface = sys.modules.get("llama_index.embeddings.huggingface")
    if huggingface is None or not isinstance(embed_model, huggingface.HuggingFaceEmbedding):
        return None
    model = getattr(embed_model, "_model", None)
    tokenizer = getattr(model, "tokenizer", None)
    limit = getattr(model, "max_seq_length", None)
    if tokenizer is None or not isinstance(limit, int) or limit < 1:
        return None
    count = _token_counter(tokenizer)
    if count is None:
        return None
    prompts = {k: v for k, v in (getattr(model, "prompts", None) or {}).items() if v}
    return CutWarner(str(embed_model.model_name), limit, count, prompts)


def _token_counter(tokenizer: Any) -> Callable[[list[str]], list[int]] | None:
    """Token counts of texts with special tokens, no truncation, from a copy of ``tokenizer``
    (a fast tokenizer's settings are shared state: changing them while the model encodes
    in another thread fails with "Already borrowed")."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.no_truncation()
        copy.no_padding()
        lock = threading.Lock()  # the copy is ours; one caller at a time keeps it simple

        def count(texts: list[str]) -> list[int]:
            with lock:
                return [len(e.ids) for e in copy.encode_batch(texts, add_special_tokens=True)]

        return count
    if callable(tokenizer):  # a slow (Python) tokenizer: truncation is a call argument

        def count_slow(texts: list[str]) -> list[int]:
            ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
            return [len(row) for row in ids["input_ids"]]

        return count_slow
    return None


def wrapped_cut_warner(inner: Any) -> CutWarner | None:
    """The :class:`CutWarner` a wrapper (``CachedEmbedding``, ``MicroBatchEmbedding``) keeps
    for the model it wraps: one for a plain ``HuggingFaceEmbedding``, None for a model that
    warns on its own (``WarnedHuggingFaceEmbedding``, ``OnnxEmbedding``) or cannot be read.

    Example::

        wrapped_cut_warner(HuggingFaceEmbedding(model_name=path)) is not None   # True
    """
    if getattr(inner, "_cut_warner", None) is not None:
        return None
    return hf_cut_warner(inner)
