"""Quote checking on hostile answers: the same quotes as ``QUOTE_PATTERN``, in linear work.

``check_quotes`` runs on every answer the citation engine returns; an answer made of
unclosed quotation marks, or of many quotes far from the citation before them, used to
cost time quadratic in its length (seconds for a few tens of kilobytes). The checks here
count operations (characters searched or read), never wall-clock time, so they hold on a
loaded machine; the timings are measured by ``ragtune bench hostile``.
"""

from __future__ import annotations

import random

from llama_index_ragtune.grounding import check_quotes, quotes
from llama_index_ragtune.grounding.quotes import QUOTE_PATTERN, find_quotes

SOURCES = ["Paris is the capital of France.", "Rome is the capital of Italy.", "x y z"]
PIECES = [
    *'ab "\u201c\u201d\u00ab\u00bb:;,- \n.!?`',
    "[1]",
    "[2]",
    "[9]",
    " [1]",
    "Paris",
    ". B",
    "x y z",
    "the capital of",
]


class _CountingPattern:
    """A compiled pattern whose ``search`` counts the characters it reads."""

    def __init__(self, pattern, counter: list[int]):
        self.pattern, self.counter = pattern, counter

    def search(self, text, pos=0):
        found = self.pattern.search(text, pos)
        self.counter[0] += (len(text) if found is None else found.end()) - pos
        return found


def _count_quote_searches(monkeypatch) -> list[int]:
    """Count the characters ``find_quotes`` searches for opening and closing marks."""
    counter = [0]
    monkeypatch.setattr(quotes, "_QUOTE_OPENERS", _CountingPattern(quotes._QUOTE_OPENERS, counter))
    for mark, pattern in list(quotes._QUOTE_STOPS.items()):
        monkeypatch.setitem(quotes._QUOTE_STOPS, mark, _CountingPattern(pattern, counter))
    return counter


class _ReadCounter(str):
    """An answer that counts the characters read out of it by indexing and slicing."""

    read = 0

    def __getitem__(self, key):
        piece = super().__getitem__(key)
        _ReadCounter.read += len(piece)
        return piece


def test_find_quotes_finds_what_the_pattern_finds():
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 60)))
        found = [(m.span(), m.groups()) for m in find_quotes(text)]
        assert found == [(m.span(), m.groups()) for m in QUOTE_PATTERN.finditer(text)], text


def test_quotes_take_the_citation_right_next_to_them():
    answer = 'Paris [1]: "the capital of France" and "the capital of Italy" [2]. "x y z" then [3]'
    checks = check_quotes(answer, SOURCES)
    assert [c.sources for c in checks] == [(1,), (2,), (1, 2, 3)]
    assert [c.match for c in checks] == ["exact", "exact", "exact"]
    # a quote far from every citation is checked against the sources cited anywhere
    far = "[2] " + " " * 50 + 'so "the capital of Italy" x'
    assert [c.sources for c in check_quotes(far, SOURCES)] == [(2,)]


def test_unclosed_quotation_marks_are_searched_once(monkeypatch):
    # each unclosed mark used to read to the end of the line (the regular expression):
    # quadratic, ~7 s here before the fix; now each character is searched a few times at most
    answer = "\u201c" * 30_000
    searched = _count_quote_searches(monkeypatch)
    assert check_quotes(answer, SOURCES) == []  # no quote closes
    assert len(answer) <= searched[0] <= 3 * len(answer), f"{searched[0]} characters searched"
    searched[0] = 0
    assert [m.span() for m in find_quotes(answer + "\u201d")] == [(0, 30_001)]
    assert searched[0] <= 3 * (len(answer) + 1), f"{searched[0]} characters searched"


def test_many_quotes_after_one_citation_do_not_reread_the_answer():
    # every quote used to re-read the text back to the citation (~6 s here before the fix:
    # 1.2e8 characters read); now the answer is read a few times in all
    answer = "[1] " + " " * 30_000 + '"a b c"' * 3_000
    _ReadCounter.read = 0
    checks = check_quotes(_ReadCounter(answer), SOURCES)
    assert _ReadCounter.read <= 3 * len(answer), f"{_ReadCounter.read} characters read"
    assert len(checks) == 3_000
    # each is checked against source 1, the only one cited (next to the first quote)
    assert {(c.quote, c.sources, c.match) for c in checks} == {("a b c", (1,), "none")}
