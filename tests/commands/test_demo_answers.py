"""How ``ragtune demo`` prints the seed questions' answers (``commands.demo.show_answers``)."""

from __future__ import annotations

import pytest

from llama_index_ragtune.commands.demo import show_answers
from llama_index_ragtune.grounding import DEFAULT_REFUSAL
from tests.query_engine.test_citation import engine_for


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Rome is the capital [2].", ["  A: Rome is the capital [2].", "     [2] ?: doc-rome ()"]),
        (f"[2] {DEFAULT_REFUSAL}", [f"  A: {DEFAULT_REFUSAL}", "     refused: the sources"]),
        ("[1] [2] [3]", ["  A: (no answer: the decoder wrote '[1] [2] [3]')", "(no citation)"]),
    ],
)
def test_each_answer_is_printed_with_what_it_cites(capsys, answer, expected):
    engine, _ = engine_for(answer)
    show_answers("After tuning:", lambda store: engine, [("capital of Italy?", "grocery")])
    out = capsys.readouterr().out
    assert out.startswith('After tuning:\n  Q: "capital of Italy?" (asked of the grocery store)\n')
    for line in expected:
        assert line in out
    if "no answer" in out:  # an answer of markers alone lists no source
        assert "doc-" not in out
