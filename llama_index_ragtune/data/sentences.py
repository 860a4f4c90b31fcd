"""Prose split into sentences, and text into its blocks (paragraphs, headings, list items, rows).

Example::

    from llama_index_ragtune.data.sentences import split_sentences, text_blocks

    split_sentences("Smith et al. reported it in E. coli. It held. Fig. 2 shows it.")
    # ['Smith et al. reported it in E. coli.', 'It held.', 'Fig. 2 shows it.']
    text_blocks("# Returns\\nWithin 30 days\\nof delivery.\\n- Keep the receipt.")
    # ['Returns', 'Within 30 days of delivery.', 'Keep the receipt.']
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"[.?!]\s+")
# Never split after these words ("Fig. 2", "e.g. mice", "vs. controls").
_ALWAYS_ABBREV = {
    "e.g",
    "i.e",
    "vs",
    "cf",
    "ca",
    "approx",
    "fig",
    "figs",
    "no",
    "nos",
    "dr",
    "mr",
    "ms",
    "st",
    "eq",
    "ref",
    "refs",
    "vol",
    "resp",
    "viz",
}
# Titles and "No." as written so ("Dr. Smith", "St. James", "No. 5"); in capitals they are
# acronyms ending a sentence ("nitric oxide (NO). ... increased NO. In", "DR. DA"), and "ms."
# is milliseconds ("300 ms. We").
_TITLES = {"dr", "mr", "ms", "st", "no", "nos"}
# Besides an upper-case letter or a digit, these open a sentence after ". " ("©2016 AACR").
_OPENERS = ("(", "[", '"', "\u201c", "\u2018", "\u00a9", "#")
# Before a lower-case word these end an abbreviation, not a sentence ("et al. reported").
_LOWER_ABBREV = _ALWAYS_ABBREV | {
    "al",
    "etc",
    "et",
    "sp",
    "spp",
    "subsp",
    "var",
    "inc",
    "ltd",
    "co",
    "u.s",
    "min",
    "max",
}


_WORD_WINDOW = 64
"""Characters before a boundary read for the word that ends there: longer words are no
abbreviation, and cut to this they still are none."""


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at ``. ? !`` + space, keeping common abbreviations whole.

    A boundary before an upper-case letter, a digit or a bracket always
    splits; a boundary before a lower-case word (``miR-193a``, ``iHepSCs``
    open sentences in biomedical abstracts) splits unless the word before
    the period is an abbreviation or a single letter (``E. coli``).
    """
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        # the word before the boundary, from a bounded window: slicing from ``start`` was
        # quadratic when abbreviations keep ``start`` in place ("fig. 2" 40,000 times: 77 s)
        words = text[max(start, match.start() - _WORD_WINDOW) : match.start() + 1].split()
        word = words[-1].rstrip(".?!").lstrip("([") if words else ""
        last = word.lower()
        after = text[match.end() : match.end() + 1]
        period = text[match.start()] == "."
        if after.isupper() or after.isdigit() or after in _OPENERS:
            acronym = last in _TITLES and (word.isupper() or word == "ms")
            if period and last in _ALWAYS_ABBREV and not acronym:
                continue
            if after == '"' and not text[match.end() + 1 : match.end() + 2].strip():
                continue  # a closing quote ('"not MS. "'), not an opening one
        elif after.islower():
            if period and (last in _LOWER_ABBREV or len(last) <= 1):
                continue
        else:
            continue
        sentences.append(text[start : match.start() + 1].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


_BLOCK_START = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|>|\|)")


def text_blocks(text: str) -> list[str]:
    """``text``'s paragraphs, headings, list items and table rows, hard-wrapped lines joined.

    Example::

        text_blocks("# Returns\\nWithin 30 days\\nof delivery.\\n- Keep the receipt.")
        # ['Returns', 'Within 30 days of delivery.', 'Keep the receipt.']
    """
    blocks: list[list[str]] = []
    joinable = False  # may the next line continue the last block?
    for line in text.splitlines():
        if not line.strip():
            joinable = False
            continue
        starts = bool(_BLOCK_START.match(line))
        if joinable and not starts:
            blocks[-1].append(line.strip())
        else:
            blocks.append([line.strip()])
        # A heading or a table row ends on its line; paragraphs and list items run on.
        joinable = not re.match(r"^\s*(?:#{1,6}\s|\|)", line)
    return [" ".join(b).strip("#-*+>| ") for b in blocks if " ".join(b).strip("#-*+>| ")]
