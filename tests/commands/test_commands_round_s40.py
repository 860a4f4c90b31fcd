"""Hostile-input battery (round s40) on the ``ragtune`` command line: a second signal
during the clean-up of the first, ``-`` and ``~`` as paths, options given twice, mistyped
commands and options, ``rollback`` on a version folder, closed standard descriptors and a
stdout that cannot be written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation.results import EvaluationResults


def _evaluation(folder: Path) -> Path:
    results = EvaluationResults("t", "d", {"test": 3}, "v1", created="2026-01-01T00:00:00Z")
    results.add_retrieval("BM25", "before", {"ndcg@10": 0.5}, [1.0, 2.0, 3.0])
    return results.save(folder / "evaluation.json")


def _ragtune(argv: list[str], prelude: str = "", **popen: object) -> subprocess.Popen:
    """``ragtune ARGV`` in a child process, after ``prelude`` (Python code) ran there."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        # Ctrl-C as in a terminal: a job started in the background (a CI runner's shell)
        # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        """
    )
    code += textwrap.dedent(prelude)
    code += "\nfrom llama_index_ragtune.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        text=True,
        stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=popen.pop("stderr", subprocess.PIPE),
        **popen,  # type: ignore[call-overload]
    )


def _status(argv: list[str]) -> int:
    """``main(argv)``'s exit status, also when the parser exits (a usage error)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out or "", err or ""


# --------------------------------------------------------------------------- signals

# Ctrl-C when the report's second temporary file is opened (the first one is written), then
# SECOND when the clean-up removes the first temporary file: signals at exact points of the
# real command, sent from an audit hook (nothing of the command is replaced).
_TWO_SIGNALS = """
second = getattr(signal, {second!r})
state = {{"opens": 0, "second sent": False}}
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and ".report." in args[0] and ".tmp-" in args[0]:
        state["opens"] += 1
        if state["opens"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
    elif event == "os.remove" and ".report.html.tmp-" in str(args[0]) and not state["second sent"]:
        state["second sent"] = True
        os.kill(os.getpid(), second)
sys.addaudithook(hook)
"""


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_signal_during_the_clean_up_lets_it_finish(tmp_path, second):
    source = _evaluation(tmp_path)
    out = tmp_path / "report"
    proc = _ragtune(
        ["report", str(source), "--out", str(out)], prelude=_TWO_SIGNALS.format(second=second)
    )
    status, _, err = _finish(proc)
    # the clean-up ran to its end: no temporary file left, the empty folder removed (was
    # .report.html.tmp-* left in a folder the run made)
    assert not out.exists()
    assert status == 130, err  # the first signal's status
    lines = err.splitlines()
    assert lines[-1] == "ragtune report: interrupted" and "Traceback" not in err
    assert lines[0].startswith(f"ragtune report: {second} while cleaning up after the interrupt")
    assert len(lines) == 2


def test_the_first_signal_still_stops_the_command_at_once(tmp_path):
    from llama_index_ragtune.commands.process import Terminated, termination_raises

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job (a CI runner)
    with termination_raises() as handler, pytest.raises(Terminated):
        handler(signal.SIGTERM, None)
    assert handler.first is not None and handler.held_back == 0
    # a signal after an interrupt that was caught and got over is a new interrupt
    with termination_raises() as handler:
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is before  # restored


# --------------------------------------------------------------------------- path values


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["tune", "--docs", "{docs}", "--out", "-"], "--out"),
        (["tune", "--docs", "-", "--out", "{o}"], "--docs"),
        (["report", "-", "--out", "{o}"], "EVAL_JSON"),
        (["rollback", "--bundle", "-"], "--bundle"),
    ],
)
def test_a_dash_is_not_a_path(tmp_path, capsys, monkeypatch, argv, option):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Returns\n\nThirty days.\n")
    (tmp_path / "-").mkdir()  # even when a folder is named so: ./- names it
    monkeypatch.chdir(tmp_path)
    values = {"docs": str(docs), "o": str(tmp_path / "o")}
    assert _status([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: '-' (standard input / output) is not read or written" in err
    assert "./- for one named '-'" in err  # was: a folder "-" made, or read as the docs
    assert not (tmp_path / "o").exists() and list((tmp_path / "-").iterdir()) == []


def test_a_tilde_the_shell_left_is_the_home_folder(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    _evaluation(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    # `--out=~/site`: bash leaves this ~ to the program
    assert main(["report", "~/evaluation.json", "--out=~/site"]) == 0
    assert (home / "site" / "report.html").is_file()
    assert not (tmp_path / "~").exists()  # was a folder named "~" in the current folder
    printed = capsys.readouterr().out.split()
    assert printed == [str(home / "site" / "report.html"), str(home / "site" / "report.md")]


def test_a_tilde_in_a_folder_argument_is_expanded_before_it_is_checked(tmp_path, monkeypatch):
    from llama_index_ragtune.commands.options import existing_dir, existing_file

    (tmp_path / "docs").mkdir()
    (tmp_path / "q.jsonl").write_text("{}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert existing_dir("~/docs") == str(tmp_path / "docs")  # was "folder not found: ~/docs"
    assert existing_file("~/q.jsonl") == str(tmp_path / "q.jsonl")


# --------------------------------------------------------------------------- option spelling


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["tune", "--docs", "{d}", "--out", "{d}/a", "--out", "{d}/b"],
            "ragtune tune: error: argument --out: given twice, with two values "
            "(--out {d}/a, then --out {d}/b): only one is used; give it once",
        ),
        (
            ["rollback", "--bundle", "{d}", "--to", "v1", "--to", "v2"],
            "ragtune rollback: error: argument --to: given twice, with two values "
            "(--to v1, then --to v2)",
        ),
        (
            ["train", "decoder", "--qa", "{d}/q", "--out", "{d}/a", "--output", "{d}/b"],
            "argument --out/--output: given twice, with two values (--out {d}/a, then --output",
        ),
        (
            ["tune", "--docs", "{d}", "--dcos", "{d}", "--out", "{d}/o"],
            "ragtune tune: error: unrecognized arguments: --dcos {d} (--dcos: did you mean "
            "--docs?) (see 'ragtune tune --help')",
        ),
        ([], "ragtune: error: missing the command: choose one of bench, train, report, tune"),
        (["train"], "ragtune train: error: missing the command: choose one of encoder, reranker"),
        (["reprot", "x"], "invalid choice: 'reprot'"),
        (["train", "encodr"], "ragtune train: error: argument command: invalid choice"),
        (
            ["tune", "--docs", "{d}", "--out", "{d}/o", "--bm25-analyzer", "unicod"],
            "(choose from 'plain', 'unicode') (did you mean 'unicode'?)",
        ),
    ],
)
def test_options_given_twice_and_mistyped_names(tmp_path, capsys, argv, expected):
    d = str(tmp_path)
    (tmp_path / "q").write_text("x\n")
    assert _status([a.format(d=d) for a in argv]) == 2
    err = capsys.readouterr().err
    assert expected.format(d=d) in err and err.count("\n") == 1
    assert not any(p.name in ("a", "b", "o") for p in tmp_path.iterdir())
    assert "required: group" not in err and "required: command" not in err
    for word, meant in (("reprot", "report"), ("encodr", "encoder")):
        if word in argv:
            assert f"(did you mean {meant!r}?) (see " in err


def test_only_a_second_value_is_refused_not_the_same_one_again():
    from llama_index_ragtune.cli import _build_parser

    argv = ["rollback", "--bundle", ".", "--to", "v1", "--to", "v1"]
    assert _build_parser(argv).parse_args(argv).to == "v1"  # `alias` + the same value
    with pytest.raises(SystemExit):
        _build_parser(argv).parse_args([*argv, "--to", "v2"])  # was v2, silently


# --------------------------------------------------------------------------- rollback


def test_rollback_on_a_version_folder_names_the_run_folder(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[1] / "pipeline" / "conftest.py"
    spec = importlib.util.spec_from_file_location("pipeline_conftest_s40", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    bundles = helpers.fake_bundles(tmp_path, 2)
    before = (bundles / "CURRENT").read_text()
    assert main(["rollback", "--bundle", str(bundles / "v2")]) == 1
    err = capsys.readouterr().err
    assert f"--bundle {bundles / 'v2'} is the bundle version v2 itself" in err
    assert f"pass the run folder {bundles.parent}" in err  # was "no bundle in v2/bundles"
    assert not (bundles / "v2" / "bundles").exists()
    assert (bundles / "CURRENT").read_text() == before


# --------------------------------------------------------------------------- standard streams

# A command that writes a file, then, as a C or Rust library does, a warning straight to
# descriptor 2.
_FD2_WRITER = """
import types
from pathlib import Path
from llama_index_ragtune import cli
module = types.ModuleType("fd2_probe")
def add_arguments(parser):
    parser.add_argument("--out", required=True)
def run(args):
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / "data.txt", "w") as handle:
        handle.write("data\\n")
        handle.flush()
        os.write(2, b"warning from a native library\\n")
    print("wrote", args.out)
    return 0
module.add_arguments, module.run = add_arguments, run
sys.modules["fd2_probe"] = module
cli.COMMANDS["probe"] = ("fd2_probe", "test command")
"""


def test_a_closed_stderr_does_not_send_library_output_into_a_file(tmp_path):
    out = tmp_path / "out"
    proc = _ragtune(
        ["probe", "--out", str(out)],
        prelude=_FD2_WRITER,
        stderr=None,
        preexec_fn=lambda: os.close(2),  # `ragtune ... 2>&-`
    )
    status, printed, _ = _finish(proc)
    assert status == 0 and printed == f"wrote {out}\n"
    # the file took descriptor 2 and got the warning (was "data\nwarning from ...")
    assert (out / "data.txt").read_text() == "data\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_stdout_that_cannot_be_written_is_one_line(tmp_path):
    source = _evaluation(tmp_path)
    with open("/dev/full", "w") as full:  # `ragtune report ... >/dev/full`
        proc = _ragtune(["report", str(source), "--out", str(tmp_path / "r")], stdout=full)
        status, _, err = _finish(proc)
    assert status == 1  # was an OSError traceback from print()
    assert (
        err == "ragtune report: error: cannot write to standard output: No space left on device\n"
    )
    assert (tmp_path / "r" / "report.html").is_file()  # the work done is kept


# --------------------------------------------------------------------------- progress bars

# A command that makes a progress bar and prints how often it would redraw.
_BAR = """
import types
from llama_index_ragtune import cli
module = types.ModuleType("bar_probe")
def add_arguments(parser):
    pass
def run(args):
    from tqdm.auto import tqdm
    with tqdm(range(3), desc="Answering") as bar:
        print(bar.mininterval)
        for _ in bar:
            pass
    return 0
module.add_arguments, module.run = add_arguments, run
sys.modules["bar_probe"] = module
cli.COMMANDS["probe"] = ("bar_probe", "test command")
"""


def test_progress_bars_written_to_a_log_redraw_every_30_seconds():
    environ = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
    for env, interval in (({}, "30.0"), ({"TQDM_MININTERVAL": "2"}, "2.0")):
        proc = _ragtune(["probe"], prelude=_BAR, env={**environ, **env})  # stderr: a pipe
        status, printed, err = _finish(proc)
        assert status == 0, err
        assert printed == f"{interval}\n"  # was 0.1: ten lines a second in a CI log
        assert "Answering: 100%" in err  # the bar is still drawn, at its end too
