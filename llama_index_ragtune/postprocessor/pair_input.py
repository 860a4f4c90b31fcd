"""What the reranker hands its cross-encoder: texts cut to what the model reads, one call at a time.

Part of :mod:`llama_index_ragtune.postprocessor` (used by :class:`CrossEncoderRerank`).

* :func:`fit_pairs`: a query or node text far longer than the model's ``max_length`` is cut,
  before tokenising, to a start that still holds more tokens than the model reads and than
  the other side of its pairs. The tokenizer truncates each (query, text) pair to
  ``max_length`` (an odd budget's last token going to the longer side), so the model sees
  the same tokens; only a query and a text both cut may differ by that one token. Uncut,
  each text was tokenised whole once per pair, and a fast tokenizer truncating a pair of
  two long texts builds every overflowing piece of both, time and memory growing with the
  product of their lengths: 0.8 s for one pair of 2,000 words each at ``max_length`` 32; a
  10,000-character query over such nodes was killed after 5 minutes.
* :func:`model_lock`: one lock per loaded model. A fast tokenizer's truncation and padding
  settings are switched per call, so two threads in ``predict`` of one model broke each
  other's batches (``Already borrowed``, tensors of mismatched sizes).

Example::

    from llama_index_ragtune.postprocessor.pair_input import fit_pairs, model_lock

    with model_lock(cross_encoder):
        query, texts = fit_pairs(cross_encoder, "what lowers LDL? " * 100_000, ["Statins lower LDL."])
        scores = cross_encoder.predict([(query, text) for text in texts])
"""

from __future__ import annotations

import re
import threading
import weakref
from typing import Any

__all__ = ["count_tokens", "cut_to_model", "fit_pairs", "model_limit", "model_lock"]

LONG_CHARS_PER_TOKEN = 4
"""A text longer than this many characters per token the model reads is cut."""
WINDOW_CHARS_PER_TOKEN = 16
"""The first window read of a text to cut: this many characters per token kept."""
MAX_WINDOW_CHARS_PER_TOKEN = 256
"""The window grows (x4) up to this many characters per token kept; a text that has not
shown enough tokens by then (one unbroken run of characters) is cut there."""
_MARGIN_TOKENS = 16  # kept past `keep` where a cut cannot fall between words
_SPACE = re.compile(r"\s")
_LAST_SPACE = re.compile(r"\s\S*\Z")

_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_lock = threading.Lock()


def model_lock(model: Any) -> threading.Lock:
    """The lock serialising calls into ``model`` (the same lock for every reranker sharing it).

    Example::

        with model_lock(cross_encoder):
            cross_encoder.predict(pairs)
    """
    with _locks_lock:
        try:
            lock = _locks.get(model)
            if lock is None:
                lock = _locks[model] = threading.Lock()
        except TypeError:  # not weak-referenceable: a lock kept on the object itself
            lock = model.__dict__.setdefault("_ragtune_lock", threading.Lock())
    return lock


def model_limit(model: Any) -> int | None:
    """The tokens ``model`` (a CrossEncoder) reads per pair: ``max_seq_length`` (sentence-
    transformers 5+) or ``max_length``; ``None`` when it does not say.

    Example::

        model_limit(cross_encoder)   # 512
    """
    for name in ("max_seq_length", "max_length"):
        try:
            value = getattr(model, name, None)
        except Exception:  # noqa: BLE001 - a custom model's property
            value = None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def fit_pairs(model: Any, query: str, texts: list[str]) -> tuple[str, list[str]]:
    """``query`` and ``texts`` as the reranker pairs them, each one far longer than ``model``
    reads cut by :func:`cut_to_model`: the model sees the same tokens, and no pair makes the
    tokenizer's truncation blow up.

    A cut keeps more tokens than the uncut side of its pairs holds, so that side stays the
    shorter, as in the whole texts (the tokenizer gives an odd budget's last token to the
    longer side).

    Example::

        query, texts = fit_pairs(cross_encoder, "what lowers LDL?", ["Statins lower LDL."])
    """
    limit = model_limit(model)
    tokenizer = getattr(model, "tokenizer", None)
    if limit is None or tokenizer is None:
        return query, texts
    long = LONG_CHARS_PER_TOKEN * limit
    try:
        if len(query) > long:
            shorter = [count_tokens(tokenizer, t) for t in texts if len(t) <= long]
            query = cut_to_model(model, query, keep=max([limit, *(n + 1 for n in shorter)]))
        if any(len(t) > long for t in texts):
            keep = max(limit, count_tokens(tokenizer, query) + 1)
            texts = [cut_to_model(model, t, keep=keep) for t in texts]
    except Exception:  # noqa: BLE001 - a slow or custom tokenizer: the texts as they are
        pass
    return query, texts


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens.

    Example::

        count_tokens(cross_encoder.tokenizer, "statins lower ldl")   # 5
    """
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def cut_to_model(model: Any, text: str, *, keep: int | None = None) -> str:
    """``text``, or, when it is longer than ``4 * max_length`` characters, its start holding
    more than ``keep`` tokens (default and at least: ``max_length``), read from a window of
    the text, not all of it.

    The cut falls at the end of a word, so the kept start tokenises as it did in the whole
    text; a window without whitespace (one unbroken run) is cut between tokens, past
    ``keep`` by a margin. Models without a fast tokenizer or a ``max_length`` get the text
    as it is.

    Example::

        len(cut_to_model(cross_encoder, "word " * 200_000)) < 1_000_000   # True
    """
    limit = model_limit(model)
    tokenizer = getattr(model, "tokenizer", None)
    if limit is None or tokenizer is None or len(text) <= LONG_CHARS_PER_TOKEN * limit:
        return text
    keep = max(limit, keep or 0)
    widest = MAX_WINDOW_CHARS_PER_TOKEN * keep
    window = WINDOW_CHARS_PER_TOKEN * keep
    try:
        while True:
            head = text[:window]
            last_space = _last_space(head) if window < len(text) else len(text)
            if last_space is not None:
                offsets = _offsets(tokenizer, head[:last_space])
                if len(offsets) > keep:
                    found = _SPACE.search(head, offsets[keep - 1][1])
                    if found is not None:
                        return text[: found.start()]
                    return _between_tokens(text, offsets, keep)  # the whole text, read
            if window >= len(text):
                return text
            if window >= widest:
                return _between_tokens(head, _offsets(tokenizer, head), keep)
            window = min(window * 4, widest)
    except Exception:  # noqa: BLE001 - a slow or custom tokenizer: no offsets, no cut
        return text


def _between_tokens(text: str, offsets: list[tuple[int, int]], keep: int) -> str:
    """``text`` cut between two tokens, ``_MARGIN_TOKENS`` past ``keep`` (a run without
    whitespace: only the tokens next to the cut may read otherwise); whole when shorter."""
    if len(offsets) > keep + 2 * _MARGIN_TOKENS:
        return text[: offsets[keep + _MARGIN_TOKENS][0]]
    return text


def _last_space(head: str) -> int | None:
    """The index of the last whitespace character of ``head`` (None without one)."""
    found = _LAST_SPACE.search(head)
    return None if found is None else found.start()


def _offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [tuple(pair) for pair in encoded["offset_mapping"]]
