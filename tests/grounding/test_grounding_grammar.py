"""The citation grammar of ``grounding``: every form the module docstring lists, hostile ones included."""

from __future__ import annotations

import pytest

from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    MAX_CODE_SPAN_CHARS,
    MAX_MARKER_CHARS,
    MAX_RANGE,
    CitationFilter,
    cite,
    cited_claims,
    find_citations,
    is_refusal,
    parse_answer,
    parse_citations,
    split_claims,
    strip_citations,
)


@pytest.mark.parametrize(
    ("raw", "text", "cited", "invalid"),
    [
        # the canonical forms
        ("Paris [1].", "Paris [1].", [1], []),
        ("Paris [1, 2].", "Paris [1, 2].", [1, 2], []),
        ("Paris [1][2].", "Paris [1][2].", [1, 2], []),
        ("Paris [1;2] [ 3 ] [2 3].", "Paris [1;2] [ 3 ] [2 3].", [1, 2, 3], []),
        # ranges, any dash
        ("Paris [1-3].", "Paris [1-3].", [1, 2, 3], []),
        ("Paris [1\u20133].", "Paris [1\u20133].", [1, 2, 3], []),
        ("Paris [2-5].", "Paris [2, 3].", [2, 3], [4, 5]),
        ("Paris [5-9].", "Paris.", [], [5, 6, 7, 8, 9]),
        ("Paris [3-1] [4-2].", "Paris [3-1] [2, 3].", [1, 2, 3], [4]),  # either order
        (f"Paris [1-{MAX_RANGE + 1}].", f"Paris [1-{MAX_RANGE + 1}].", [], []),  # too wide: text
        (f"Paris [1-{MAX_RANGE}].", "Paris [1, 2, 3].", [1, 2, 3], list(range(4, MAX_RANGE + 1))),
        # separators and "Source" words
        ("Paris [4; 8].", "Paris.", [], [4, 8]),
        ("Paris [Source 7].", "Paris.", [], [7]),
        ("Paris [source 2].", "Paris [source 2].", [2], []),
        ("Paris [Sources: 1, 3].", "Paris [Sources: 1, 3].", [1, 3], []),
        ("Paris [Source 1, Source 9].", "Paris [1].", [1], [9]),
        ("Paris [SOURCE #2].", "Paris [SOURCE #2].", [2], []),
        # full-width brackets, digits and separators
        ("Paris \uff3b1\uff3d.", "Paris \uff3b1\uff3d.", [1], []),
        ("Paris \u30102\u3011.", "Paris \u30102\u3011.", [2], []),
        ("Paris [\uff11].", "Paris [\uff11].", [1], []),
        ("Paris \uff3b1\uff0c9\uff3d.", "Paris [1].", [1], [9]),
        ("Paris \uff3b\uff19\uff3d.", "Paris.", [], [9]),
        # out of range: removed with the space before it, the valid part kept
        ("Paris [0].", "Paris.", [], [0]),
        ("Paris [1][9]. Rome [2, 9]. Berlin [7].", "Paris [1]. Rome [2]. Berlin.", [1, 2], [9, 7]),
        ("[9] Paris", "Paris", [], [9]),
        # not citations: kept as written, never counted
        ("Paris (1).", "Paris (1).", [], []),
        ("Paris [^1].", "Paris [^1].", [], []),
        (
            "Paris [x] [] [1.5] [-1] [1-] [course 1].",
            "Paris [x] [] [1.5] [-1] [1-] [course 1].",
            [],
            [],
        ),
        ("See [1](https://x.org/a) and [9](b).", "See [1](https://x.org/a) and [9](b).", [], []),
        ("See [the docs](https://x.org).", "See [the docs](https://x.org).", [], []),
        # a bracket in a link's address is part of it; a bare URL cannot hold one (RFC 3986)
        ("See <http://x.com/a[9]>.", "See <http://x.com/a[9]>.", [], []),
        ("See [docs](http://x/[9]) [1].", "See [docs](http://x/[9]) [1].", [1], []),
        ("[docs](http://x/[2]b)[2]", "[docs](http://x/[2]b)[2]", [2], []),
        ("See <https://x.com>[2].", "See <https://x.com>[2].", [2], []),
        ("Visit https://x.com/returns[1].", "Visit https://x.com/returns[1].", [1], []),
        ("Visit https://x.com/a[9].", "Visit https://x.com/a.", [], [9]),
        ("<b>14 days</b>[1]", "<b>14 days</b>[1]", [1], []),
        ("Escaped \\[9] stays.", "Escaped \\[9] stays.", [], []),
        ("Not escaped \\\\[9].", "Not escaped \\\\.", [], [9]),
        # code: never a citation
        ("Use `arr[2]` [1].", "Use `arr[2]` [1].", [1], []),
        ("Use ``a[9]`b`` [9].", "Use ``a[9]`b``.", [], [9]),
        (
            "```python\nx = a[9]\n```\nDone [1] [7].",
            "```python\nx = a[9]\n```\nDone [1].",
            [1],
            [7],
        ),
        ("~~~\n[9]\n~~~\n[8]", "~~~\n[9]\n~~~", [], [8]),
        ("```\nunclosed [9]\n[1]", "```\nunclosed [9]\n[1]", [], []),
        ("```x``` [9] [1]", "```x``` [1]", [1], [9]),  # a backtick in the info string: inline
        ("   ```\n[9]\n   ```", "```\n[9]\n   ```", [], []),
        ("    ```not a fence``` [9]", "```not a fence```", [], [9]),
        # unclosed backticks are text
        ("don`t [9] do [1]", "don`t do [1]", [1], [9]),
        ("a `b\n\nc` [9]", "a `b\n\nc`", [], [9]),  # a code span never crosses a blank line
        # nested and unclosed brackets
        ("Rome [[9]7].", "Rome.", [], [9, 7]),
        ("Paris [[9]1].", "Paris [1].", [1], [9]),
        ("x [1[2] y", "x [1[2] y", [2], []),
        ("[12[9]]", "", [], [9, 12]),
        ("h [3", "h [3", [], []),
        ("[1", "[1", [], []),
    ],
)
def test_every_citation_form_is_mapped_or_removed_and_reported(raw, text, cited, invalid):
    answer = parse_answer(raw, n_sources=3)
    assert answer.text == text
    assert list(answer.citations) == cited
    assert list(answer.invalid_citations) == invalid
    again = parse_answer(answer.text, n_sources=3)  # nothing left to remove
    assert again.text == answer.text and again.citations == answer.citations
    assert again.invalid_citations == ()


def test_long_groups_and_code_spans_are_text():
    group = "[" + "1 " * MAX_MARKER_CHARS + "]"
    assert parse_answer(f"x {group}", 3).text == f"x {group}"
    far = "`" + "a" * (MAX_CODE_SPAN_CHARS + 1) + "` [9]"
    assert parse_answer(far, 3).text == far[:-4]  # the backticks are text: [9] is removed
    near = "`" + "a" * (MAX_CODE_SPAN_CHARS - 1) + " [9]`"
    assert parse_answer(near, 3).text == near  # inside code


def test_parse_and_strip_citations_ignore_code_and_links():
    text = "Paris [2][1-3]. `x[9]` [Source 4] [5](url) (6)"
    assert parse_citations(text) == [2, 1, 3, 4]
    assert strip_citations(text) == "Paris. `x[9]` [5](url) (6)"
    assert parse_citations("") == [] and strip_citations("") == ""


def test_find_citations_spans_take_the_space_before():
    text = "Paris  [1][9] and `a[2]`."
    marks = find_citations(text, n_sources=1)
    assert [(m.text, m.cited, m.invalid) for m in marks] == [("[1]", (1,), ()), ("[9]", (), (9,))]
    assert text[marks[0].start : marks[0].end] == "  [1]"
    assert text[marks[1].start : marks[1].end] == "[9]"


def test_refusal_xor_cited():
    plain = parse_answer(DEFAULT_REFUSAL, 2)
    assert plain.refused and not plain.citations and not plain.uncited
    hedged = parse_answer(f"{DEFAULT_REFUSAL} But [1] says Paris.", 2)
    assert not hedged.refused and hedged.citations == (1,) and not hedged.uncited
    invalid_only = parse_answer(f"{DEFAULT_REFUSAL} [7]", 2)
    assert invalid_only.refused and invalid_only.invalid_citations == (7,)
    assert invalid_only.text == DEFAULT_REFUSAL
    in_code = parse_answer(f"{DEFAULT_REFUSAL} `a[1]`", 2)
    assert in_code.refused and not in_code.citations
    longer_word = parse_answer(DEFAULT_REFUSAL.rstrip(".") + "XYZ", 2)
    assert not longer_word.refused and longer_word.uncited
    marked = parse_answer(f"[2] {DEFAULT_REFUSAL.upper()}", 2)  # says only the refusal
    assert marked.refused and marked.citations == () and marked.numbers == ()
    assert marked.text == DEFAULT_REFUSAL.upper() and is_refusal(f"[2] {DEFAULT_REFUSAL}")
    trailing = parse_answer(f"{DEFAULT_REFUSAL} [1]", 2)
    assert trailing.refused and trailing.text == DEFAULT_REFUSAL
    claim_after = parse_answer(f"[1] {DEFAULT_REFUSAL} Paris is the capital.", 2)
    assert not claim_after.refused and claim_after.citations == (1,)
    assert not is_refusal(f"[1] {DEFAULT_REFUSAL} Paris is the capital.")
    markers_only = parse_answer("[1] [2][9]. ", 2)  # says nothing: backs nothing
    assert markers_only.uncited and markers_only.citations == () and markers_only.text == "."
    assert markers_only.empty and not marked.empty and not hedged.empty
    assert markers_only.numbers == (9,) and markers_only.invalid_citations == (9,)
    answers = (plain, hedged, invalid_only, in_code, longer_word, marked, claim_after, markers_only)
    for answer in answers:
        assert [answer.refused, bool(answer.citations), answer.uncited].count(True) == 1


@pytest.mark.parametrize("refusal", ["", "   ", "\n\t", ".", "No answer [1]."])
def test_unusable_refusal_is_rejected(refusal):
    from llama_index_ragtune.grounding import build_messages, check_refusal, is_refusal

    with pytest.raises(ValueError, match="refusal"):
        check_refusal(refusal)
    with pytest.raises(ValueError, match="refusal"):
        parse_answer("Paris.", 1, refusal=refusal)
    with pytest.raises(ValueError, match="refusal"):
        is_refusal("Paris.", refusal=refusal)
    with pytest.raises(ValueError, match="refusal"):
        build_messages("q", ["s"], refusal=refusal)


def test_n_sources_is_checked():
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="n_sources"):
            CitationFilter(bad)


def test_claims_map_each_citation_to_its_sentence():
    answer = "Paris is in France [1]. Rome is big. It is old [2][1]. Code `a[3]` here [3-4]. "
    assert cited_claims(answer) == [
        ("Paris is in France.", (1,)),
        ("It is old.", (2, 1)),
        ("Code `a[3]` here.", (3, 4)),
    ]
    assert split_claims("Paris is big. [1] Rome.")[0] == "Paris is big. [1] Rome."
    assert split_claims("  A. B  ") == ["A.", "B"]


def test_cite_writes_the_canonical_form():
    assert cite([1, 3]) == "[1][3]" and parse_citations(cite([1, 3])) == [1, 3]


def test_filter_is_single_use():
    cleaner = CitationFilter(1)
    assert cleaner.clean("a [1]") == "a [1]"
    with pytest.raises(RuntimeError, match="new filter"):
        cleaner.feed("more")
