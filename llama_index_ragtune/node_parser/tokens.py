"""Token counters for the structured node parsers.

The default counter is the bundled encoder's own tokenizer, and the default
cap is that encoder's ``max_seq_length`` minus the special tokens the
tokenizer adds (``[CLS]``/``[SEP]``): 256 - 2 = 254 for all-MiniLM-L6-v2, so a
node is embedded without truncation. Counters are picklable (an
``IngestionPipeline`` with ``num_workers`` sends the parser to other processes);
a Hugging Face tokenizer is reloaded there by name.

Example::

    from llama_index_ragtune.node_parser.tokens import HFTokenCounter

    count = HFTokenCounter(None)          # bundled MiniLM tokenizer, loaded on first use
    count("Opened boxes can be returned within 14 days.")
    count.default_cap                     # 254
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from llama_index_ragtune.models import resolve_model

TokenCounter = Callable[[str], int]

#: A node holds at most this many characters per token of its budget, whatever the
#: tokenizer counts (a word of over 100 characters is one [UNK] for BERT tokenizers).
MAX_CHARS_PER_TOKEN = 16

#: ``model_max_length`` values at or above this are "unknown" sentinels in transformers.
_UNKNOWN_MAX_LENGTH = 100_000


class CallableTokenCounter:
    """Counts tokens with a ``text -> tokens`` callable (e.g. ``str.split``, tiktoken's ``encode``)."""

    def __init__(self, tokenizer: Callable[[str], Sequence]):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text))


class CharBoundedCounter:
    """``count`` raised to ``ceil(len(text) / chars_per_token)``: the token cap then also
    bounds a node's characters (a giant "word" or a tokenizer that counts nothing).

    Example::

        CharBoundedCounter(lambda text: len(text.split()), 16)("a" * 200)     # 13, not 1
    """

    def __init__(self, count: TokenCounter, chars_per_token: int = MAX_CHARS_PER_TOKEN):
        self.count, self.chars_per_token = count, chars_per_token

    def __call__(self, text: str) -> int:
        return max(self.count(text), -(-len(text) // self.chars_per_token))

    def over(self, tokens: int) -> TokenCounter:
        """This counter, except that a text of more than ``chars_per_token * tokens``
        characters is counted by its length alone, without the tokenizer: its count is over
        ``tokens`` either way, so every comparison with a limit up to ``tokens`` holds, while
        the splitter's probes of a huge block (a 50,000-column table row) cost no tokenizer
        pass over hundreds of kilobytes.

        Example::

            counter = CharBoundedCounter(lambda text: len(text.split()), 16).over(4)
            counter("a b c"), counter("x" * 100)     # (3, 7)
        """
        longest = self.chars_per_token * max(tokens, 0)

        def count(text: str) -> int:
            if len(text) > longest:
                return -(-len(text) // self.chars_per_token)
            return self(text)

        return count

    def char_bound(self, text: str) -> bool:
        """True when ``text`` is counted by its length, not by its tokens."""
        return -(-len(text) // self.chars_per_token) > self.count(text)


class HFTokenCounter:
    """Counts tokens (without special tokens) with a Hugging Face tokenizer loaded on first use.

    ``name_or_path`` is a local folder or hub id; None means the bundled default encoder.
    """

    def __init__(self, name_or_path: str | None = None):
        self.name_or_path = name_or_path

    def __call__(self, text: str) -> int:
        return _load(self.name_or_path)[0](text)

    @property
    def default_cap(self) -> int | None:
        """The model's max sequence length minus its special tokens (None when unknown)."""
        return _load(self.name_or_path)[1]


def _max_seq_length(path: Path) -> int | None:
    config = path / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return None


@lru_cache(maxsize=8)
def _load(name_or_path: str | None) -> tuple[TokenCounter, int | None]:
    """Load a tokenizer with ``AutoTokenizer``; return ``(count, default_cap)`` (cached per process)."""
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path, kind="encoder")
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_length = _max_seq_length(Path(path)) if Path(path).is_dir() else None
    if max_length is None:
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < _UNKNOWN_MAX_LENGTH:
            max_length = model_max
    cap = None
    if max_length is not None:
        cap = max_length - tokenizer.num_special_tokens_to_add(pair=False)

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import Tokenizer

        # A private copy without the truncation/padding saved in tokenizer.json.
        fast = Tokenizer.from_str(backend.to_str())
        fast.no_truncation()
        fast.no_padding()

        def count(text: str) -> int:
            return len(fast.encode(text, add_special_tokens=False).ids)

    else:
        tokenizer.model_max_length = int(1e30)  # silence the "sequence too long" warning

        def count(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

    return count, cap
