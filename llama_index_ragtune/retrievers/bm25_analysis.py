"""Text analysis for BM25: the ``"unicode"`` analyzer's normalisation and extra terms.

What the ``"unicode"`` analyzer of :class:`~llama_index_ragtune.retrievers.BM25Tokenizer`
does before, around and after its token pattern (the same for documents and queries):

* **Normalise**: drop invisible format characters (zero-width space/joiners, soft
  hyphen, BOM, bidi marks), NFKC (full-width ``ＡＢＣ``/``１４`` → ``ABC``/``14``,
  ligature ``ﬁ`` → ``fi``, ``²`` → ``2``, NFD → composed, no-break space → space),
  then full case folding (``STRASSE`` = ``straße``, ``İ`` → ``i``).
* **Accent-insensitive terms**: Latin/Greek/Cyrillic diacritics (U+0300–U+036F),
  Hebrew points and Arabic harakat/tatweel are stripped from each term after the
  stopword check, before stemming (``café`` = ``cafe``, ``سِيَاسَة`` = ``سياسة``).
* **Word characters include combining marks** (the pattern runs on the ``regex``
  module), so Thai/Devanagari/Arabic words with vowel signs are not cut apart.
* **Scripts written without spaces** (Han, Hiragana, Katakana, Thai, Lao, Khmer,
  Myanmar) and Hangul (spaced, but with particles glued to each word): each run is
  indexed as overlapping character bigrams (a lone character as itself), as Lucene's
  CJK analyzer does, so a query naming part of a sentence or word finds it.
* **Codes**: a run of letters/digits joined by ``-``, ``.`` or ``/`` that mixes letters
  and digits, holds a decimal number or has a one-letter part is also indexed whole,
  without its separators, next to its parts (``SKU-48213`` → ``sku48213``, ``USB-C`` →
  ``usbc``, ``v2.3.1`` and ``1.5L`` keep their decimal points: ``v2.3.1``, ``1.5l``).

Example::

    from llama_index_ragtune.retrievers.bm25_analysis import fold_text, no_space_terms
    fold_text("ＣＡＦÉ Straße")     # 'café strasse'
    no_space_terms("退货政策")      # (['退货', '货政', '政策'], ' ')
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

import regex

from llama_index_ragtune.retrievers.checks import clean_text

__all__ = ["code_terms", "fold_text", "no_space_terms", "strip_accents"]

_FORMAT_CHARS = regex.compile(r"\p{Cf}+")
# Latin/Greek/Cyrillic diacritics, Hebrew points, Arabic harakat and tatweel: optional marks
_ACCENTS = regex.compile(r"[\u0300-\u036f\u0591-\u05c7\u0640\u064b-\u065f\u0670]+")
_NO_SPACE_RUN = regex.compile(
    r"(?:[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
    r"\u30fc\u3005]\p{M}*)+"
)
_CODE_IN_WORDS = re.compile(r"\b\w+(?=[-./]\w)(?:[-./]\w+)+")  # \b: tried at word starts only
# the same where a word holds combining marks, which re's \w leaves out: it cut the word
# there ("न/ब" of "दुकान/बाज़ार" was a code of one-letter parts)
_CODE_WITH_MARKS = regex.compile(r"(?<![\w\p{M}])[\w\p{M}]+(?=[-./]\w)(?:[-./][\w\p{M}]+)+")
_MARK = regex.compile(r"\p{M}")
_CODE_SEPARATORS = re.compile(r"[-./]")
_DECIMAL = re.compile(r"\d\.\d")
_CODE_JOINERS = re.compile(r"[-/]|(?<!\d)\.|\.(?!\d)")  # a decimal point stays


def fold_text(text: str) -> str:
    """``text`` without format characters, NFKC-normalised and case-folded (accents kept).

    Example::

        fold_text("Hauptstra\\u00dfe \\uff11\\uff14 trans\\u00admission")  # 'hauptstrasse 14 transmission'
    """
    text = clean_text(text)
    if text.isascii():  # no format characters, NFKC changes nothing, casefold is lower
        return text.lower()
    text = _FORMAT_CHARS.sub("", text)
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def strip_accents(term: str) -> str:
    """``term`` without Latin/Greek/Cyrillic diacritics, Hebrew points, Arabic harakat.

    Other scripts' marks (Devanagari, Thai vowel signs) are part of their letters and kept.

    Example::

        strip_accents("naïve")    # 'naive'
    """
    if term.isascii():
        return term
    return unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", term)))


def no_space_terms(text: str) -> tuple[list[str], str]:
    """Character bigrams of the runs of scripts written without spaces, and ``text`` without them.

    A one-character run is its own term. Example::

        no_space_terms("返品は14日")   # (['返品', '品は', '日'], ' 14 ')
    """
    terms: list[str] = []
    if text.isascii():
        return terms, text

    def take(match: regex.Match[str]) -> str:
        chars = regex.findall(r"\X", match.group())  # a character with its marks
        terms.extend(chars if len(chars) == 1 else map("".join, pairwise(chars)))
        return " "

    return terms, _NO_SPACE_RUN.sub(take, text)


def code_terms(text: str, split_marks: bool = False) -> list[str]:
    """The codes in ``text``, each as one term without its ``-``/``/`` (and non-decimal ``.``);
    a word's combining marks stay in it (``split_marks``: cut words at them, as indexes
    persisted before did).

    A code is a run of letters/digits joined by ``-``, ``.`` or ``/`` that mixes letters and
    digits, holds a decimal number, or has a one-letter part; number ranges, dates and
    phone numbers (digits only) and hyphenated words are not codes.

    Example::

        code_terms("sku-48213 fits the 1.5l usb-c kettle, 3-5 days")   # ['sku48213', '1.5l', 'usbc']
    """
    terms = []
    marks = not split_marks and _MARK.search(text) is not None
    for code in (_CODE_WITH_MARKS if marks else _CODE_IN_WORDS).findall(text):
        parts = _CODE_SEPARATORS.split(code)
        has_digit = any(c.isdigit() for c in code)
        if (
            (has_digit and any(c.isalpha() for c in code))
            or _DECIMAL.search(code)
            or any(len(p) == 1 and p.isalpha() for p in parts)
        ):
            terms.append(_CODE_JOINERS.sub("", code))
    return terms
