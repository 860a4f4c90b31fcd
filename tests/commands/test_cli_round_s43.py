"""``ragtune`` round s43: every invalid option value is a usage error (exit status 2) naming
the option, before any work: bounds of ``PipelineConfig`` (``tune`` / ``demo``), ``refresh``'s
numbers, ``--out`` inside ``--docs``, devices; numbers Python reads but a command line should
not (``'٣'``, ``' 5 '``, ``'5_000'``); NaN given once; options after ``--``;
``--bm25-stopwords`` on ``demo`` and ``refresh``; the DPO warm-up warning's name."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from llama_index_ragtune.cli import _build_parser, main


def _parse(argv):
    return _build_parser(argv).parse_args(argv)


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Returns\n\nWithin 30 days.\n", encoding="utf-8")
    return folder


def _bundle(tmp_path: Path, stopwords) -> Path:
    """A run folder whose served version records ``stopwords`` (a manifest loaders accept)."""
    from llama_index_ragtune.pipeline.bundle_manifest import FORMAT, FORMAT_VERSION, write_manifest

    run = tmp_path / "run"
    version = run / "bundles" / "v1"
    version.mkdir(parents=True)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": "v1",
        "models": {"encoder": {"reference": "e"}, "decoder": {"reference": "d"}},
        "retrieval": {"similarity_top_k": 5},
        "generation": {"max_new_tokens": 64},
        "files": {},
        "config": {"bm25_stopwords": stopwords},
    }
    write_manifest(version, manifest)
    (run / "bundles" / "CURRENT").write_text("v1", encoding="utf-8")
    return run


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "feedback.db"
    sqlite3.connect(store).close()
    return store


# ------------------------------------------------------- PipelineConfig bounds: exit 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--max-test-questions", "3000000000"],
            "argument --max-test-questions: must be at most 2,147,483,647",
        ),
        (["--time-budget", "nan"], "argument --time-budget: the time budget must be"),
        (["--time-budget", "-0"], "argument --time-budget: the time budget must be"),
        (["--time-budget", "1e309"], "argument --time-budget: the time budget must be"),
        (["--skip", "parse"], "argument --skip: step(s) ['parse'] cannot be skipped"),
        (["--device", "gpu"], "argument --device: device='gpu' is not a torch device"),
    ],
)
@pytest.mark.parametrize("command", ["tune", "demo"])
def test_an_option_value_the_config_refuses_is_a_usage_error(
    command, extra, message, docs, tmp_path, capsys
):
    # were exit status 1 ("PipelineConfig.max_test_questions must be ..."), as a failed run;
    # `--time-budget nan` said "given twice, with two values (nan, then nan)"
    out = tmp_path / "out"
    argv = [command, "--out", str(out), *extra]
    if command == "tune":
        argv += ["--docs", str(docs)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"ragtune {command}: error: {message}" in err
    assert err.count("\n") == 1 and "Traceback" not in err and "given twice" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--margin", "nan", "argument --margin: must be from 0 to 1"),
        ("--eval-fraction", "-0", "argument --eval-fraction: must be between 0 and 1"),
        ("--time-budget", "1e309", "argument --time-budget: must be > 0 minutes"),
        ("--device", "gpu", "argument --device: device='gpu'"),
    ],
)
def test_refresh_option_values_are_usage_errors(tmp_path, capsys, option, value, message):
    out = tmp_path / "o"
    argv = ["refresh", "--bundle", str(tmp_path), "--feedback", str(_store(tmp_path))]
    assert main([*argv, "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("command", ["encoder", "reranker", "decoder"])
def test_a_train_device_typo_is_a_usage_error(command, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "d.json").write_text("{}", encoding="utf-8")
    data = ["--qa", "q.jsonl"] if command == "decoder" else ["--dataset", "d.json"]
    out = tmp_path / "out"
    argv = ["train", command, *(str(tmp_path / a) if "." in a else a for a in data)]
    assert main([*argv, "--out", str(out), "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert f"ragtune train {command}: error: argument --device: device='gpu'" in err
    assert not out.exists()


def test_out_inside_the_docs_is_a_usage_error(docs, tmp_path, capsys):
    before = _listing(tmp_path)
    assert main(["tune", "--docs", str(docs), "--out", str(docs / "run")]) == 2
    assert "--out" in capsys.readouterr().err
    store = _store(tmp_path)
    argv = ["refresh", "--bundle", str(tmp_path), "--feedback", str(store), "--docs", str(docs)]
    assert main([*argv, "--out", str(docs / "r")]) == 2
    assert f"--out {docs / 'r'} is inside the documents folder" in capsys.readouterr().err
    assert _listing(tmp_path) == [*before, "feedback.db"]


# ------------------------------------------------------------- how numbers are written


NUMBER_OPTIONS = [
    (["train", "encoder", "--dataset", "d.json", "--out", "o"], "--epochs"),  # bounded float
    (["train", "encoder", "--dataset", "d.json", "--out", "o"], "--seed"),
    (["tune", "--docs", ".", "--out", "o"], "--max-test-questions"),  # bounded int
    (["tune", "--docs", ".", "--out", "o"], "--time-limit"),  # number or 'none'
    (["tune", "--docs", ".", "--out", "o"], "--time-budget"),  # plain float
    (["refresh", "--bundle", ".", "--feedback", "f", "--out", "o"], "--eval-fraction"),
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_bytes(b"")  # refresh's --feedback exists


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize("value", ["\u0663", "\uff15", " 5 ", "5\n", "5_000", "1\u00a0"])
@pytest.mark.parametrize(("argv", "option"), NUMBER_OPTIONS)
def test_a_number_python_reads_but_a_command_line_should_not_is_refused(
    argv, option, value, capsys
):
    # were read as 3, 5, 5 and 5000 (Python's int / float take other digits, spaces, '_')
    with pytest.raises(SystemExit) as info:
        _parse([*argv, f"{option}={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(("argv", "option"), NUMBER_OPTIONS)
def test_plain_numbers_still_work(argv, option):
    args = _parse([*argv, f"{option}=5"])
    assert getattr(args, option[2:].replace("-", "_")) == 5


def test_the_reason_is_said_and_minus_zero_is_zero():
    from llama_index_ragtune.commands.options import bounded, number_text_problem

    assert "ASCII" in number_text_problem("\u0663")
    assert "spaces" in number_text_problem(" 5")
    assert "without '_'" in number_text_problem("5_000")
    assert number_text_problem("-1.5e3") is None and number_text_problem("nan") is None
    share = bounded(float, 0, 1)("-0")
    assert share == 0 and str(share) == "0.0"
    args = _parse(["tune", "--docs", ".", "--out", "o", "--max-over-refusal", "-0"])
    assert str(args.max_over_refusal) == "0.0"


def test_nan_given_once_reaches_the_command_and_twice_the_same_is_accepted():
    from llama_index_ragtune.commands.parser import _same_value

    argv = ["tune", "--docs", ".", "--out", "o", "--time-budget", "nan", "--time-budget", "nan"]
    assert _parse(argv).time_budget != _parse(argv).time_budget  # NaN, refused by tune
    assert _same_value(float("nan"), float("nan")) and not _same_value(1.0, float("nan"))


# ------------------------------------------------------------------------ after --


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "--docs", ".", "--out", "o", "--", "--seed", "3"],
        ["tune", "--", "--docs", ".", "--out", "o"],
        ["report", "--", "e.json", "--out", "r"],
    ],
)
def test_options_after_a_double_dash_say_so(argv, capsys):
    # were "unrecognized arguments: -- --seed 3 (--seed: did you mean --seed?)" and
    # "the following arguments are required: --docs, --out" with both given
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'--' ends the options" in err and "did you mean" not in err


# ------------------------------------------------------------------ --bm25-stopwords


def test_demo_takes_bm25_stopwords_as_tune_does(capsys):
    from llama_index_ragtune.commands.tune import build_config
    from llama_index_ragtune.pipeline.config import PipelineConfig

    args = _parse(["demo", "--bm25-stopwords", "The,A"])
    assert build_config(args, PipelineConfig.demo()).bm25_stopwords == ["the", "a"]
    assert build_config(_parse(["demo"]), PipelineConfig.demo()).bm25_stopwords == (
        PipelineConfig.demo().bm25_stopwords
    )
    with pytest.raises(SystemExit) as info:
        _parse(["demo", "--bm25-stopwords", "a b,"])
    assert info.value.code == 2
    assert "argument --bm25-stopwords" in capsys.readouterr().err


def test_refresh_refuses_stopwords_other_than_the_bundles(tmp_path, capsys):
    from llama_index_ragtune.commands.refresh import check_arguments

    run = _bundle(tmp_path, ["the", "a"])
    out = tmp_path / "o"
    argv = ["refresh", "--bundle", str(run), "--feedback", str(_store(tmp_path)), "--out", str(out)]
    assert main([*argv, "--bm25-stopwords", "none"]) == 2
    err = capsys.readouterr().err
    assert "argument --bm25-stopwords: v1 serves the BM25 stopwords ['the', 'a']" in err
    assert "a refresh keeps them" in err and not out.exists()
    check_arguments(_parse([*argv, "--bm25-stopwords", "The,A"]))  # the bundle's own: fine
    assert "refused" in _build_parser(argv)._subparsers._group_actions[0].choices[
        "refresh"
    ].format_help().replace("\n", " ")


# ------------------------------------------------------------------ DPO warm-up name


def test_the_preference_stage_warm_up_warning_names_preference_args(caplog):
    from llama_index_ragtune.finetuning.training_plan import TrainingPlanMixin

    engine = SimpleNamespace(callbacks=[], _training_deadline=lambda: None)
    args = SimpleNamespace(warmup_steps=500, lr_scheduler_type="linear", learning_rate=5e-6)
    for label in ("args", "preference_args"):
        callbacks, _ = TrainingPlanMixin._budget_callbacks(engine, None, label)
        with caplog.at_level(logging.WARNING):
            callbacks[-1].on_train_begin(args, SimpleNamespace(max_steps=10), None)
        assert f"{label}.warmup_steps=500 covers all 10 training steps" in caplog.text
        caplog.clear()
    source = (
        Path(__file__).resolve().parents[2] / "llama_index_ragtune/finetuning/decoder_stages.py"
    )
    text = source.read_text(encoding="utf-8")
    assert 'self._budget_callbacks(self.budget, "preference_args")' in text
    assert json.dumps("preference_args")  # the label is plain text


# ------------------------------------------------------------- empty and misspelt values


@pytest.mark.parametrize(
    ("to", "hint"), [("", ""), ("V2", "version 2 is written v2"), ("v\u0662", "v2")]
)
def test_rollback_to_a_name_that_is_no_version_is_a_usage_error(tmp_path, capsys, to, hint):
    # were exit status 1 from the switch (`--to ""`: an unset shell variable)
    run = _bundle(tmp_path, "language")
    before = _listing(tmp_path)
    assert main(["rollback", "--bundle", str(run), "--to", to]) == 2
    err = capsys.readouterr().err
    assert "ragtune rollback: error: argument --to: expected a bundle version" in err
    assert hint in err and _listing(tmp_path) == before


@pytest.mark.parametrize("keys", ["", " ", ",", " , "])
def test_refresh_keys_naming_no_key_are_a_usage_error(tmp_path, capsys, keys):
    # were read as "no filter": every store's questions merged, silently
    argv = ["refresh", "--bundle", str(tmp_path), "--feedback", str(_store(tmp_path))]
    assert main([*argv, "--out", str(tmp_path / "o"), "--keys", keys]) == 2
    assert "argument --keys: no key in" in capsys.readouterr().err


def test_refresh_keys_none_means_no_filter():
    from llama_index_ragtune.commands.refresh import filter_keys

    assert filter_keys("none") == () and filter_keys(" store , lang ") == ("store", "lang")
