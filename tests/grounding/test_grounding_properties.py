"""Properties of the citation grammar on random and hostile answers (hypothesis), and its cost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_index_ragtune.grounding import (
    MAX_HELD_CHARS,
    AnswerStream,
    CitationFilter,
    parse_answer,
    parse_citations,
    says_nothing,
    strip_citations,
)

# Pieces an answer is made of, hostile ones included: every citation form of the
# grammar, near misses, backticks, fences, escapes, links and lone brackets.
PIECES = [
    *"abcXYZ0123456789 .,;:-!?()\\^#~`[]\n\t",
    *"\uff3b\uff3d\u3010\u3011\uff11\uff0c\u2013\u3002\u00e9",
    "[1]",
    "[2]",
    "[3]",
    "[9]",
    "[0]",
    "[1, 2]",
    "[1][9]",
    "[1-3]",
    "[2-5]",
    "[5-9]",
    "[3-1]",
    "[4; 8]",
    "[Source 7]",
    "[source 2]",
    "[Sources: 1, 3]",
    "\uff3b1\uff3d",
    "\u30109\u3011",
    "[ 1 ]",
    "[1](url)",
    "[x]",
    "[]",
    "[^1]",
    "(1)",
    "\\[2]",
    "[[9]1]",
    "[[9]7]",
    "[1[2]",
    "`",
    "``",
    "```",
    "`[9]`",
    "`x`",
    "\n   ```\n",
    "~~~",
    "\n```\n",
    "\n~~~\n",
    "\n\n",
    "   ",
    "source",
    "Paris ",
    "Insufficient information in the provided sources.",
]
answers = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
sources = st.integers(min_value=0, max_value=4)


def _chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=400, deadline=None)
@given(answers, sources)
def test_parser_never_raises_and_reports_only_sources_that_exist(text, n):
    cleaner = CitationFilter(n)
    clean = cleaner.clean(text)
    assert all(1 <= c <= n for c in cleaner.cited)
    assert not set(cleaner.cited) & set(cleaner.invalid)
    answer = parse_answer(text, n)
    said = strip_citations(clean).strip()
    if cleaner.cited and (answer.refused or not any(c.isalnum() for c in said)):
        # only the refusal, or nothing, around the markers: they are dropped
        assert answer.text == said and answer.citations == ()
    else:
        assert answer.text == clean.strip() and list(answer.citations) == cleaner.cited
    assert [answer.refused, bool(answer.citations), answer.uncited].count(True) == 1


@settings(max_examples=400, deadline=None)
@given(answers, sources)
def test_removed_markers_do_not_survive_cleaning(text, n):
    first = CitationFilter(n)
    clean = first.clean(text)
    second = CitationFilter(n)
    assert second.clean(clean) == clean  # nothing left that looks like a citation to remove
    assert second.invalid == [] and second.cited == first.cited
    assert parse_citations(clean) == first.cited  # every kept marker is a reported citation


@settings(max_examples=400, deadline=None)
@given(answers, sources, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_streaming_in_any_chunks_equals_the_whole_text(text, n, cuts):
    whole = CitationFilter(n)
    expected = whole.clean(text)
    chunked = CitationFilter(n)
    pieces = [chunked.feed(part) for part in _chunked(text, cuts)]
    assert "".join(pieces) + chunked.flush() == expected
    assert (chunked.cited, chunked.invalid) == (whole.cited, whole.invalid)
    stream = AnswerStream(max(n, 0))
    shown = "".join(stream.feed(part) for part in _chunked(text, cuts)) + stream.finish()
    assert stream.answer == parse_answer(text, n)
    if stream.answer.citations or not stream.filter.cited:
        assert shown == stream.answer.text
    else:  # a refusal or an answer of markers alone: the stream showed markers now dropped
        assert strip_citations(shown).strip() == stream.answer.text


code_spans = st.builds(
    lambda ticks, body: ticks + body + ticks,
    st.sampled_from(["`", "``"]),
    st.lists(
        st.sampled_from(["arr", "[2]", "[9]", "[1-3]", " ", "x[", "]", "[[9]1]"]),
        min_size=1,
        max_size=6,
    )
    .map("".join)
    .filter(lambda body: body.strip() and "`" not in body),
)
prose = st.lists(
    st.sampled_from(["Paris ", "[1]", "[9]", " [5-9]", "[Source 7]", ". ", "[x]"]), max_size=5
).map("".join)


@settings(max_examples=400, deadline=None)
@given(answers)
def test_says_nothing_is_no_letter_or_digit_once_the_markers_are_removed(text):
    assert says_nothing(text) == (not any(c.isalnum() for c in strip_citations(text)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(prose, code_spans), min_size=1, max_size=5), prose, sources)
def test_code_spans_are_left_unchanged(parts, tail, n):
    text = "".join(f"{before} {code} " for before, code in parts) + tail
    clean = CitationFilter(n).clean(text)
    position = 0
    for _, code in parts:
        found = clean.find(code, position)
        assert found >= 0, (code, clean)
        position = found + len(code)
    fence = "```\n" + text.replace("`", "") + "\n```\n"
    assert CitationFilter(n).clean(fence + "[9]") == fence  # the block whole, then [9] removed


HOSTILE_STREAMS = {
    "1 MB unclosed bracket": "[" + "1" * 1_000_000,
    "unclosed backtick": "`" + "a [1] " * 40_000,
    "unclosed fence line": "```" + "x" * 200_000,
    "nested brackets": "[" * 200_000,
    "removed groups inside a bracket": "[" + "[9]" * 70_000,
    "removed groups after a backtick": "`" + "[9]" * 70_000,
    "whitespace": " " * 200_000,
    "citations": "Paris [1][9]. " * 15_000,
}


@pytest.mark.parametrize("name", list(HOSTILE_STREAMS))
def test_filter_reads_each_character_once_and_holds_back_a_bounded_amount(name):
    text = HOSTILE_STREAMS[name]
    cleaner = CitationFilter(3)
    shown = []
    for i in range(0, len(text), 4096):
        shown.append(cleaner.feed(text[i : i + 4096]))
        assert cleaner.held <= MAX_HELD_CHARS  # bounded look-ahead, whatever came before
    shown.append(cleaner.flush())
    # characters read + tokens moved: at most three steps per character, never a re-scan
    assert cleaner.steps <= 3 * len(text)
    assert cleaner.held == 0 and "".join(shown) == CitationFilter(3).clean(text)
