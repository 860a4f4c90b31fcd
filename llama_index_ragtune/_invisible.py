"""Invisible characters: what has no glyph of its own, for comparing texts and finding blank ones.

One definition for the whole package, at the bottom of it (standard library only), so
that the data loaders, the grounded format and the pipeline agree on which texts are the
same and which say nothing:

* :func:`is_invisible`: a Unicode format character (category ``Cf``: zero-width space and
  joiners, word joiner, BOM, soft hyphen, bidi marks...) or a variation selector.
* :func:`drop_invisible`: a text without them, for comparisons only (what a model or a
  reader is shown keeps them).
* :func:`is_blank`: a text with no visible character (only invisible characters,
  whitespace, control characters, surrogates or noncharacters).

Displaying a text is another matter: the structured node parsers clean section titles with
their own, narrower list (``node_parser.block.visible_title``), which keeps the joiners,
variation selectors and tag characters that shape emoji, flags and some scripts.

Example::

    from llama_index_ragtune._invisible import drop_invisible, is_blank

    drop_invisible("re\u200bturn")        # 'return'
    is_blank("\u200f \ufe0f\n")           # True
"""

from __future__ import annotations

import unicodedata

__all__ = ["drop_invisible", "is_blank", "is_invisible"]

#: Whitespace, control characters and surrogates: not invisible format characters (a
#: comparison keeps a tab), but nothing to read either. Unassigned code points (``Cn``) are
#: not among them: one may be a character newer than this Python's Unicode tables (an emoji
#: of Unicode 15 under Python 3.11); only the noncharacters (U+FDD0-U+FDEF, U+FFFE/U+FFFF
#: of every plane) are never text.
_NOT_VISIBLE_CATEGORIES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})


def is_invisible(ch: str) -> bool:
    """Whether the character ``ch`` is a format character (``Cf``) or a variation selector.

    Example::

        is_invisible("\u200b"), is_invisible("\ufe0f"), is_invisible(" ")   # (True, True, False)
    """
    code = ord(ch)
    return (
        unicodedata.category(ch) == "Cf" or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF
    )


def drop_invisible(text: str) -> str:
    """``text`` without its invisible characters (:func:`is_invisible`). For comparing
    texts only: the text shown to a model keeps them.

    Example::

        drop_invisible("re\u200bturn\u00ad policy")   # 'return policy'
    """
    if text.isascii():
        return text
    invisible = [ch for ch in set(text) if is_invisible(ch)]
    return text.translate(dict.fromkeys(map(ord, invisible))) if invisible else text


def is_blank(text: str) -> bool:
    """True when ``text`` has no visible character: only invisible characters
    (:func:`is_invisible`), whitespace, control characters, surrogates or noncharacters
    (nothing to ask or rank by; an emoji is visible, even one newer than Python's tables).

    Example::

        is_blank("\u200f \x00\n\ufe0f"), is_blank("\U0001f355?")   # (True, False)
    """
    if not all(_not_visible(ch) for ch in text[:256]):
        return False  # the usual case: a visible character near the start
    return all(_not_visible(ch) for ch in set(text))  # each distinct character once


def _not_visible(ch: str) -> bool:
    code = ord(ch)
    return (
        unicodedata.category(ch) in _NOT_VISIBLE_CATEGORIES
        or is_invisible(ch)
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )
