"""Words of a text: runs of letters, digits and underscores with the combining marks that
belong to them, for comparing texts (duplicate questions, verbatim quotes).

Python's ``\\w`` leaves out combining marks (categories ``Mn``, ``Mc``, ``Me``), so
``re.findall(r"\\w+", "हिन्दी")`` cuts the word at each vowel sign and drops the signs
(``['ह', 'न', 'द']``): different Hindi, Tamil or Thai words then compare equal. Here a mark
stays inside its word; a mark with no letter before it is dropped, like punctuation.
Standard library only.

Example::

    from llama_index_ragtune._words import words

    words("हिन्दी, please!")     # ['हिन्दी', 'please']
    words("What is X?")         # ['What', 'is', 'X']
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["words"]

_ASCII_NOT_WORD = re.compile(r"[^\w\s\x80-\U0010ffff]")  # punctuation, controls: no marks
_OTHER_NOT_WORD = re.compile(r"[^\w\s\x00-\x7f]")  # a combining mark or a separator
_WORD = re.compile(r"\w\S*")  # after both, a token holds only word characters and marks


def _mark_or_space(match: re.Match[str]) -> str:
    char = match.group()
    return char if unicodedata.category(char)[0] == "M" else " "


def words(text: str) -> list[str]:
    """The words of ``text``: ``re.findall(r"\\w+", text)`` with combining marks kept inside
    the words they follow.

    Example::

        words("किताब")   # ['किताब'] (not ['क', 'त', 'ब'])
    """
    return _WORD.findall(_OTHER_NOT_WORD.sub(_mark_or_space, _ASCII_NOT_WORD.sub(" ", text)))
