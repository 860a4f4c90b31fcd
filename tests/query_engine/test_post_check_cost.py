"""The citation post-check and the response metadata on long hostile answers.

Every answer of ``CitationQueryEngine`` goes through ``uncited_claims`` (its claims)
and ``fill_metadata``; many claims next to many citations or quotes used to cost time
quadratic in the answer's length. The checks here are results on those answers and,
where there is one to count, operations (never wall-clock time, which a loaded machine
makes unreliable); the timings are measured by ``ragtune bench hostile``.
"""

from __future__ import annotations

import random

from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.grounding import parse_answer
from llama_index_ragtune.query_engine import post_check
from llama_index_ragtune.query_engine.post_check import claim_spans, uncited_claims
from llama_index_ragtune.query_engine.response_metadata import base_metadata, fill_metadata

PIECES = [*'ab "\u201c\u201d:;, \n.!?`', "[1]", "[2]", "[9]", " [1]", "Paris", ". B", "A. "]


class _CountedCitation:
    """A citation marker that counts the attributes read from it."""

    reads = 0

    def __init__(self, citation):
        self._citation = citation

    def __getattr__(self, name):
        _CountedCitation.reads += 1
        return getattr(self._citation, name)


def _reference_uncited(answer: str, n_sources: int) -> list[tuple[int, int]]:
    """What ``uncited_claims`` computes, the slow way (every claim against every marker)."""
    from llama_index_ragtune.grounding import find_citations, is_refusal
    from llama_index_ragtune.grounding.quotes import code_mask

    if is_refusal(answer):
        return []
    marks = [c for c in find_citations(answer, n_sources) if c.cited]
    code = code_mask(answer)
    return [
        (a, b)
        for a, b in claim_spans(answer)
        if not all(code[a:b]) and not any(a <= m.end - len(m.text) and m.end <= b for m in marks)
    ]


def test_uncited_claims_match_the_claim_by_claim_reading():
    rng = random.Random(3)
    for _ in range(2000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 50)))
        assert uncited_claims(text, 2) == _reference_uncited(text, 2), text


def test_many_claims_and_many_citations_read_each_citation_once(monkeypatch):
    # each uncited claim used to be checked against every citation: ~6 s before the fix
    # (2e8 reads of citation attributes here); now each citation is read a few times
    found = post_check.find_citations
    monkeypatch.setattr(
        post_check,
        "find_citations",
        lambda *args, **kwargs: [_CountedCitation(c) for c in found(*args, **kwargs)],
    )
    answer = "[1]" * 10_000 + " A." * 10_000
    _CountedCitation.reads = 0
    uncited = uncited_claims(answer, 1)
    assert _CountedCitation.reads <= 4 * 10_000, f"{_CountedCitation.reads} citation reads"
    assert len(uncited) == 9_999  # the first " A." follows the markers
    assert [answer[a:b] for a, b in uncited[:2]] == ["A.", "A."]


def test_many_claims_after_many_quotes_are_split_right():
    # each claim used to be checked against every quote: ~6 s before the fix
    answer = '"a" ' * 10_000 + " A." * 10_000
    spans = claim_spans(answer)
    # the quotes and the first " A." are one claim; each later " A." is a claim of its own
    assert len(spans) == 10_000
    assert spans[0] == (0, 4 * 10_000 + 3) and spans[-1] == (len(answer) - 2, len(answer))
    assert all(answer[a:b] == "A." for a, b in spans[1:])


def test_response_metadata_of_a_long_cited_answer_is_complete():
    nodes = [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=f"Fact {i}."), score=1.0) for i in range(3)
    ]
    answer = parse_answer('A: "x y z w" [1]. ' * 3_000, 3)
    metadata = base_metadata("q", nodes)
    fill_metadata(metadata, nodes, answer, [n.node.text for n in nodes])  # ~10 s before the fix
    assert metadata["cited_node_ids"] == ["n0"] and len(metadata["quotes"]) == 3_000
    assert metadata["citations"][0]["claim"] == 'A: "x y z w".'
