"""Hostile command-line values and input files the other batteries do not cover: huge
minutes, seeds the trainers refuse, refresh margins that can never be met, an answer on a
question that is trained to refuse, Unicode-decomposed file names, and a ``--feedback``
file that is not a feedback store. Each is one line naming the item, before any work."""

from __future__ import annotations

import argparse
import json
import shutil
import unicodedata

import pytest

from llama_index_ragtune.cli import _build_parser, main
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.grounding import DEFAULT_REFUSAL
from llama_index_ragtune.pipeline import PipelineConfig, steps
from llama_index_ragtune.pipeline.queries import load_queries
from llama_index_ragtune.pipeline.sources import parse_documents, read_documents, read_metadata


@pytest.fixture
def no_index(monkeypatch):
    """The index step fails the test: bad input must be found before it."""

    def index(ctx):
        raise AssertionError("the index step ran")

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "index", index)


def _tune(tiny_corpus, encoder, out, *extra):
    argv = ["tune", "--docs", str(tiny_corpus["docs"]), "--queries", str(tiny_corpus["queries"])]
    return main([*argv, "--encoder", encoder, "--out", str(out), *extra])


# ---------------------------------------------------------------------- huge minutes


def test_the_cli_the_config_and_the_budget_share_the_most_minutes():
    from llama_index_ragtune.commands import options
    from llama_index_ragtune.finetuning import budget
    from llama_index_ragtune.pipeline import config

    assert options.MAX_MINUTES == config.MAX_MINUTES == budget.MAX_MINUTES


@pytest.mark.parametrize("minutes", [1e308, 2e6, 1_000_000.5])
def test_an_engine_budget_built_directly_refuses_minutes_that_overflow(minutes):
    """An engine's own ``TrainingBudget`` (no ``PipelineConfig`` around it) planned its steps
    with ``minutes * 60`` seconds: 1e308 passed as finite and overflowed when training began."""
    with pytest.raises(ValueError, match=r"TrainingBudget.minutes .*at most 1000000"):
        TrainingBudget(minutes=minutes)
    assert TrainingBudget(minutes=1_000_000).minutes == 1_000_000


@pytest.mark.parametrize(
    "make",
    [
        lambda: PipelineConfig(time_limit_minutes=1e308),
        lambda: PipelineConfig().with_time_budget(1e308),
        lambda: PipelineConfig.from_time_budget(10**7),
        lambda: PipelineConfig(encoder_budget=TrainingBudget(minutes=1e308)),
        lambda: PipelineConfig(decoder_budget=TrainingBudget(max_pairs=4, minutes=2e6)),
    ],
)
def test_minutes_that_overflow_to_infinite_seconds_are_refused(make):
    """1e308 minutes is finite, but 1e308 * 60 seconds is not: the engine's step plan
    raised an OverflowError mid-run, after the index and the training data were built."""
    with pytest.raises(ValueError, match="at most 1000000"):
        make()


def test_huge_cli_minutes_are_one_line_and_write_nothing(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index
):
    out = tmp_path / "o"
    assert _tune(tiny_corpus, tiny_encoder_path, out, "--time-budget", "1e308") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "argument --time-budget:" in err and "at most" in err
    with pytest.raises(SystemExit) as info:
        _tune(tiny_corpus, tiny_encoder_path, out, "--time-limit", "1e308")
    assert info.value.code == 2
    assert "argument --time-limit: expected minutes > 0 (at most" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--time-budget", "inf", "argument --time-budget: must be > 0 minutes and at most"),
        ("--time-budget", "1e308", "argument --time-budget: must be > 0 minutes and at most"),
        ("--margin", "inf", "argument --margin: must be from 0 to 1"),
        ("--margin", "2", "argument --margin: must be from 0 to 1"),
    ],
)
def test_refresh_values_that_pass_a_sign_check_but_cannot_work_are_refused(
    tmp_path, capsys, option, value, message
):
    """Were accepted: inf minutes failed with a traceback once the bundle was loaded, and a
    margin no nDCG@10 gain can reach retrained everything to promote nothing."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    feedback = tmp_path / "feedback.sqlite"
    feedback.write_bytes(b"")
    out = tmp_path / "o"
    argv = ["refresh", "--bundle", str(bundle), "--feedback", str(feedback), "--out", str(out)]
    assert main([*argv, option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------------- seeds


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999999"])
@pytest.mark.parametrize(
    "command",
    [
        ["train", "decoder", "--qa", "q.jsonl", "--out", "o"],
        ["train", "encoder", "--dataset", "d.json", "--out", "o"],
        ["train", "reranker", "--dataset", "d.json", "--out", "o"],
    ],
)
def test_a_seed_the_trainers_refuse_is_a_usage_error(command, seed, capsys):
    """``set_seed(-1)`` raises inside the trainer: the run failed with a traceback after its
    data was loaded (and, for the decoder, its sources retrieved)."""
    argv = [*command, "--seed", seed]
    with pytest.raises(SystemExit) as info:
        _build_parser(argv).parse_args(argv)
    assert info.value.code == 2
    assert f"argument --seed: expected a whole number from 0 to {2**32 - 1}" in (
        capsys.readouterr().err
    )


def test_the_largest_seed_is_accepted():
    from llama_index_ragtune.commands.options import seed_number

    assert seed_number(str(2**32 - 1)) == 2**32 - 1 and seed_number("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        seed_number("1.5")


# ---------------------------------------------------------------------- the queries file


@pytest.fixture(scope="module")
def nodes(tiny_corpus):
    return parse_documents(read_documents(tiny_corpus["docs"]), tokenizer=None)


def _file(tmp_path, *rows):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({"question": "delivery fee?", "answer": "4 dollars"}, "it has no 'gold' references"),
        (
            {"question": "lobsters?", "answerable": False, "answer": "We do not sell them."},
            "'answerable' is false",
        ),
    ],
)
def test_an_answer_on_a_question_trained_to_refuse_is_an_error(tmp_path, nodes, row, why):
    """Was accepted: an answer written without its gold made the question unanswerable, so
    the decoder was trained to refuse it and the answer was never used."""
    path = _file(tmp_path, {"question": "parking?", "answerable": False}, row)
    with pytest.raises(DataError, match=rf"q\.jsonl:2: the question has an 'answer' but {why}"):
        load_queries(path, nodes)


def test_a_blank_or_null_answer_on_an_unanswerable_question_is_fine(tmp_path, nodes):
    rows = [
        {"question": "parking?", "answerable": False, "answer": None},
        {"question": "lobsters?", "answer": "  "},
        # the refusal sentence is what such a question is trained to say
        {"question": "oysters?", "answerable": False, "answer": DEFAULT_REFUSAL},
    ]
    loaded = load_queries(_file(tmp_path, *rows), nodes)
    assert [q.answerable for q in loaded] == [False, False, False]


# ---------------------------------------------------------------------- Unicode forms


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_decomposed_file_names_and_headings_match_composed_references(tmp_path):
    """A file copied from macOS has a decomposed (NFD) name; ids typed in the queries and
    metadata files are composed (NFC). Both print the same, so "not one of the documents"
    and "match no document" named an id identical to one on the screen."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / _nfd("rückgabe.md")).write_text(_nfd("# Rückgabe\n\n## Äpfel\nBinnen 48 Stunden.\n"))
    (docs / "other.md").write_text("# Other\n\nSomething else entirely.\n")
    files = ["other.md", _nfd("rückgabe.md")]
    assert read_metadata(_write_json(tmp_path, {"rückgabe.md": {"store": "g"}}), files)[
        files[1]
    ] == {"store": "g"}
    assert read_metadata(_write_json(tmp_path, {"r*gabe.md": {"store": "g"}}), files)[files[1]]
    nodes = parse_documents(read_documents(docs, metadata=tmp_path / "m.json"), tokenizer=None)
    gold = [{"doc_id": "rückgabe.md", "section": "Rückgabe > Äpfel"}]
    path = _file(tmp_path, {"question": "Äpfel?", "gold": gold, "answer": "48 Stunden"})
    assert load_queries(path, nodes)[0].gold_node_ids == [f"{_nfd('rückgabe.md')}#0"]
    by_node = _file(tmp_path, {"question": "Äpfel?", "gold": ["rückgabe.md#0"]})
    assert load_queries(by_node, nodes)[0].gold_node_ids == [f"{_nfd('rückgabe.md')}#0"]


def _write_json(tmp_path, data):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- --feedback


def test_a_feedback_file_that_is_not_a_store_fails_before_the_index(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index
):
    """Was a raw FeedbackStoreError traceback after the documents were parsed and indexed,
    leaving OUT/work behind."""
    docs = tmp_path / "docs"
    shutil.copytree(tiny_corpus["docs"], docs)
    out = tmp_path / "o"
    argv = ["tune", "--docs", str(docs), "--feedback", str(tiny_corpus["queries"])]
    code = main([*argv, "--encoder", tiny_encoder_path, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"ragtune tune: error: {tiny_corpus['queries']} is not a readable SQLite database" in err
    assert not out.exists()


def test_a_feedback_store_error_is_a_one_line_cli_error():
    from llama_index_ragtune.cli import _user_error_types
    from llama_index_ragtune.feedback import FeedbackStoreError

    assert FeedbackStoreError in _user_error_types()


# ---------------------------------------------------------------------- empty paths


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune", "--docs", "", "--out", "{tmp}/o"], "argument --docs: the path is empty"),
        (["tune", "--docs", "{docs}", "--out", ""], "argument --out: the path is empty"),
        (["tune", "--docs", "{docs}", "--out", " "], "argument --out: the path is empty"),
        (["rollback", "--bundle", ""], "argument --bundle: the path is empty"),
        (["report", ""], "argument EVAL_JSON: the path is empty"),
        (["train", "decoder", "--qa", "", "--out", "{tmp}/o"], "argument --qa: the path is"),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    tiny_corpus, tmp_path, monkeypatch, capsys, no_index, argv, message
):
    """``Path("")`` is ``.``: ``--out ""`` (an unset shell variable) wrote work/ into the
    folder the command was started from, and ``--docs ""`` read it as the documents."""
    monkeypatch.chdir(tmp_path)
    argv = [a.format(tmp=tmp_path, docs=tiny_corpus["docs"]) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
