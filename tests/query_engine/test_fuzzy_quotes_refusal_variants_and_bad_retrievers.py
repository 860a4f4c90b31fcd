"""Serving path under hostile input: huge quotes, dressed-up refusals, a retriever returning None.

Costs are checked by counting the work done (characters difflib compares), never by time.
"""

from __future__ import annotations

import random

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune.grounding import check_quotes
from llama_index_ragtune.grounding import quotes as quote_checks
from llama_index_ragtune.query_engine import CitationQueryEngine

_WORDS = [
    *("apple", "return", "policy", "days", "receipt", "card", "refund", "store", "opened"),
    *("box", "fee", "laptop", "phone", "warranty", "delivery", "order", "voucher", "member"),
    *("price", "match", "repair", "trade", "screen", "battery"),
]


def _text(n_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) + str(rng.randrange(99)) for _ in range(n_chars // 5))[
        :n_chars
    ]


def _edited(text: str) -> str:
    """``text`` with every 25th word replaced: a close, not exact, copy."""
    words = text.split()
    return " ".join("zzz" if i % 25 == 0 else w for i, w in enumerate(words))


def _compared(monkeypatch) -> list[int]:
    """Count the characters of quote x characters of source every difflib comparison takes."""
    counted: list[int] = []
    fuzzy = quote_checks._fuzzy

    def counting(piece, source):
        counted.append(len(piece) * len(source))
        return fuzzy(piece, source)

    monkeypatch.setattr(quote_checks, "_fuzzy", counting)
    return counted


def test_a_huge_quote_costs_work_linear_in_its_length(monkeypatch):
    counted = _compared(monkeypatch)
    work = {}
    for n in (15_000, 30_000):
        source = _text(n, seed=1)
        counted.clear()
        checks = check_quotes(f'x [1]: "{_text(n, seed=2)}"', [source])
        assert checks[0].match == "none"
        work[n] = sum(counted)
    # was: one comparison of 30,000 x 30,000 = 900 M character pairs (34 s)
    assert work[30_000] < 0.1 * 30_000**2
    assert work[30_000] <= 2.5 * work[15_000]  # doubling the input doubles the work
    source = _text(30_000, seed=3)
    counted.clear()
    copy = check_quotes(f'x [1]: "{_edited(source[1000:25_000])}"', [source])[0]
    assert copy.match == "fuzzy" and copy.score >= 0.95  # a close copy is still found
    assert sum(counted) < 0.1 * 24_000 * 30_000
    exact = check_quotes(f'x [1]: "{source[1000:25_000]}"', [source])[0]
    assert exact.match == "exact" and exact.score == 1.0


def test_a_short_quote_in_a_huge_source_costs_work_linear_in_the_source(monkeypatch):
    counted = _compared(monkeypatch)
    source = _text(400_000, seed=4)
    quote = _edited(source[200_000:200_300])
    check = check_quotes(f'x [1]: "{quote}"', [source])[0]
    assert check.match == "fuzzy"
    assert sum(counted) < 0.05 * len(quote) * len(source)  # was: the whole product


def test_normal_sized_quotes_score_exactly_as_before(monkeypatch):
    source = _text(20_000, seed=5)
    answers = [
        f'x [1]: "{_edited(source[500:900])}"',  # 400 characters, edited
        f'x [1]: "{_edited(source[4000:4200])} ... {source[9000:9100]}"',
        f'x [1]: "{_text(450, seed=6)}"',  # not in the source at all
        f'x [1]: "{source[100:300]}"',  # exact
    ]
    bounded = [check_quotes(a, [source]) for a in answers]
    monkeypatch.setattr(quote_checks, "FUZZY_BUDGET", 10**15)  # the old, unbounded comparison
    assert bounded == [check_quotes(a, [source]) for a in answers]
    assert [c[0].match for c in bounded] == ["fuzzy", "fuzzy", "none", "exact"]


@pytest.mark.parametrize("size", [600, 3000])
def test_a_quote_over_the_budget_is_found_where_it_is(monkeypatch, size):
    monkeypatch.setattr(quote_checks, "FUZZY_BUDGET", 10_000)  # every comparison over it
    source = _text(20_000, seed=7)
    found = check_quotes(f'x [1]: "{_edited(source[7000 : 7000 + size])}"', [source])[0]
    assert found.match == "fuzzy"
    missing = check_quotes(f'x [1]: "{_text(size, seed=8)}"', [source])[0]
    assert missing.match == "none"


# ------------------------------------------------------------------ refusals dressed up

_REFUSAL = "Insufficient information in the provided sources."
_DRESSED = [
    f"**{_REFUSAL}**",
    f"__{_REFUSAL}__",
    f'"{_REFUSAL}"',
    f"\u201c{_REFUSAL}\u201d",
    f"`{_REFUSAL}`",
    f"> {_REFUSAL}",
    f"Sorry, {_REFUSAL.lower()}",
    f"I'm sorry, but {_REFUSAL.lower()}",
    f"Unfortunately: *{_REFUSAL}*",
    f"**{_REFUSAL}** [2]",  # cites, but says nothing beyond the refusal
]
_ANSWERS = [
    f"The phrase '{_REFUSAL}' is a refusal, but [1] says Paris.",
    f"Paris is the capital [1]. {_REFUSAL}",
    "Sorry for the wait: Paris is the capital [1].",
    "Sorry, Paris is the capital [1].",
    f"Sorry, **{_REFUSAL}** But [1] says Paris.",
    f"I am sorry to say that Paris is big [1]. {_REFUSAL}",
]


@pytest.mark.parametrize("streaming", [False, True])
def test_a_refusal_in_bold_quotes_or_after_an_apology_is_a_refusal_everywhere(tmp_path, streaming):
    from llama_index_ragtune.evaluation import GenerationEvaluator
    from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
    from llama_index_ragtune.grounding import is_refusal, parse_answer
    from tests.query_engine.test_citation import engine_for

    evaluator = GenerationEvaluator()
    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        for text, refused in [*((t, True) for t in _DRESSED), *((t, False) for t in _ANSWERS)]:
            # was: every dressed-up refusal read as an (uncited) answer
            assert is_refusal(text) is refused, text
            assert parse_answer(text, 2).refused is refused, text
            engine, _ = engine_for(text, streaming=streaming)
            response = FeedbackQueryEngine(engine, store).query("capital?")
            if streaming:
                "".join(response.response_gen)
            assert response.metadata["refused"] is refused, text
            assert response.metadata["uncited"] is False, text  # each answer cites [1]
            row = evaluator.evaluate_example(
                "capital?", text, answerable=False, source_node_ids=["a", "b"]
            )
            assert row["refused"] is refused, text
        stats = store.stats()
        assert (stats.records, stats.refused) == (len(_DRESSED) + len(_ANSWERS), len(_DRESSED))


# ------------------------------------------------------------------ retrievers returning junk


def _retriever_returning(value):
    from llama_index.core.retrievers import BaseRetriever

    class Broken(BaseRetriever):
        def _retrieve(self, query_bundle):
            return value

    return Broken()


@pytest.mark.parametrize(
    ("value", "returned"),
    [
        (None, "returned NoneType, not a list of NodeWithScore \\(return \\[\\] when nothing"),
        ("paris", "returned str, not a list"),
        ([TextNode(id_="x", text="x")], "returned a TextNode at position 0.*NodeWithScore\\(node="),
    ],
    ids=["none", "str", "bare-node"],
)
def test_a_retriever_whose_retrieve_returns_no_nodes_is_named(value, returned):
    import asyncio

    from llama_index.core.schema import QueryBundle

    from tests.query_engine.test_citation import ScriptedLLM

    engine = CitationQueryEngine(_retriever_returning(value), llm=ScriptedLLM(answer="x"))
    # was: "'NoneType' object is not iterable" / "'str' object has no attribute 'node'"
    # from inside LlamaIndex core's BaseRetriever.retrieve, naming no retriever
    with pytest.raises(TypeError, match=rf"the retriever Broken's _retrieve {returned}"):
        engine.query("capital?")
    with pytest.raises(TypeError, match=rf"the retriever Broken's _retrieve {returned}"):
        engine.retrieve(QueryBundle("capital?"))
    with pytest.raises(TypeError, match=rf"Broken's _aretrieve / _retrieve {returned}"):
        asyncio.run(engine.aquery("capital?"))


def test_an_error_raised_inside_a_retriever_is_left_as_it_is():
    from llama_index.core.retrievers import BaseRetriever

    from tests.query_engine.test_citation import ScriptedLLM

    class Failing(BaseRetriever):
        def _retrieve(self, query_bundle):
            return len(None)  # the retriever's own bug: its error must reach the caller

    engine = CitationQueryEngine(Failing(), llm=ScriptedLLM(answer="x"))
    with pytest.raises(TypeError, match="object of type 'NoneType' has no len") as raised:
        engine.query("capital?")
    assert "Failing" not in str(raised.value)
