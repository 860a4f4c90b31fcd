"""Hostile-input battery (round s39) on the ``ragtune`` command line: paths that are not
regular files or folders, signals, a closed stdout pipe, a stdout that cannot encode the
text, huge whole numbers, paths with line breaks, a deleted current folder and a model
cache folder that cannot be made."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llama_index_ragtune.cli import main

# A command module run in a child process: ``--then`` says what it does once it started.
_PROBE = """
import os, signal, sys, time
from pathlib import Path

def add_arguments(parser):
    parser.add_argument("--out", required=True)
    parser.add_argument("--then", default="sleep")
    if os.environ.get("PROBE_SIGNAL_WHILE_PARSING"):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the command is still imported
        time.sleep(5)

def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.then == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        elif args.then == "print-lots":
            for i in range(100_000):
                print("line", i)
        elif args.then == "print-accents":
            print("caf\\u00e9 \\u2014 r\\u00e9sum\\u00e9.md")
    finally:
        (out.parent / "cleanup-ran").write_text("yes")
    return 0
"""


def _child(tmp_path: Path, argv: list[str], **popen: object) -> subprocess.Popen:
    """``ragtune`` with the probe command registered, in a child process."""
    (tmp_path / "ragtune_probe39.py").write_text(_PROBE)
    code = textwrap.dedent(
        f"""
        import signal, sys
        # Ctrl-C as in a terminal: a job started in the background (a CI runner's shell)
        # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(tmp_path)!r})
        from llama_index_ragtune import cli
        cli.COMMANDS["probe"] = ("ragtune_probe39", "test command")
        raise SystemExit(cli.main(sys.argv[1:]))
        """
    )
    env = {**os.environ, **popen.pop("env", {})}  # type: ignore[dict-item]
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        env=env,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out or "", err or ""


# --------------------------------------------------------------------------- path kinds


def _special(tmp_path: Path, kind: str) -> str:
    if kind == "device":
        return os.devnull
    path = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "broken link":
        path.symlink_to(tmp_path / "nowhere")
    return str(path)


_KINDS = {
    "device": "a character device",
    "fifo": "a named pipe (FIFO)",
    "socket": "a socket",
    "broken link": "a broken symbolic link",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Returns\n\nThirty days.\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize(
    ("argv", "option", "expected"),
    [
        (["tune", "--docs", "{docs}", "--queries", "{x}", "--out", "{o}"], "--queries", "file"),
        (["tune", "--docs", "{x}", "--out", "{o}"], "--docs", "folder"),
        (["tune", "--docs", "{docs}", "--out", "{x}"], "--out", "folder"),
        (["train", "encoder", "--beir", "{x}", "--out", "{o}"], "--beir", "folder"),
        (["train", "decoder", "--qa", "{x}", "--out", "{o}"], "--qa", "file"),
        (["rollback", "--bundle", "{x}"], "--bundle", "folder"),
        (["report", "{x}", "--out", "{o}"], "EVAL_JSON", "file"),
    ],
)
def test_a_path_that_is_no_file_or_folder_is_named_by_its_kind(
    tmp_path, docs, capsys, kind, argv, option, expected
):
    special = _special(tmp_path, kind)
    values = {"docs": str(docs), "x": special, "o": str(tmp_path / "out")}
    with pytest.raises(SystemExit) as stop:
        status = main([a.format(**values) for a in argv])
        raise SystemExit(status)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"argument {option}: {special} is {_KINDS[kind]}" in err  # was "file not found"
    assert "not found" not in err
    assert ("not a regular file" if expected == "file" else "expected a folder") in err
    assert not (tmp_path / "out").exists()


def test_a_folder_under_a_device_is_named_as_such(docs, capsys):
    assert main(["tune", "--docs", str(docs), "--out", "/dev/null/run"]) == 2
    err = capsys.readouterr().err
    assert "cannot create /dev/null/run: /dev/null is a character device" in err


# --------------------------------------------------------------------------- signals


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path):
    out = tmp_path / "out"
    proc = _child(
        tmp_path,
        ["probe", "--out", str(out), "--then", "sigterm"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    status, _, err = _finish(proc)
    assert status == 128 + signal.SIGTERM  # 143 (was a silent death, -15)
    assert err == "ragtune probe: terminated (SIGTERM)\n"
    assert (tmp_path / "cleanup-ran").read_text() == "yes"  # finally blocks ran
    assert not out.exists()  # the empty output folder the run made is removed


def test_ctrl_c_while_the_command_is_imported_is_one_line(tmp_path):
    proc = _child(
        tmp_path,
        ["probe", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PROBE_SIGNAL_WHILE_PARSING": "1"},
    )
    status, _, err = _finish(proc)
    assert (status, err) == (130, "ragtune: interrupted\n")  # was a KeyboardInterrupt traceback


def test_a_signal_set_to_be_ignored_stays_ignored():
    from llama_index_ragtune.commands.process import termination_raises

    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with termination_raises():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # nohup / a supervisor
    finally:
        signal.signal(signal.SIGTERM, before)
    with termination_raises():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the command


# --------------------------------------------------------------------------- stdout


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    read, write = os.pipe()
    os.close(read)  # `ragtune ... | head -1` after head has exited
    proc = _child(
        tmp_path,
        ["probe", "--out", str(tmp_path / "out"), "--then", "print-lots"],
        stdout=write,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    status, _, err = _finish(proc)
    assert status == 128 + signal.SIGPIPE  # 141, as a program ended by SIGPIPE (was 1)
    assert err == ""  # was a BrokenPipeError traceback and "Exception ignored" at exit
    assert (tmp_path / "cleanup-ran").exists()


def test_text_stdout_cannot_encode_is_escaped(tmp_path):
    proc = _child(
        tmp_path,
        ["probe", "--out", str(tmp_path / "out"), "--then", "print-accents"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PYTHONIOENCODING": "ascii"},
    )
    status, out, err = _finish(proc)
    assert (status, err) == (0, "")  # was a UnicodeEncodeError traceback, status 1
    assert out == "caf\\xe9 \\u2014 r\\xe9sum\\xe9.md\n"  # as stderr shows them


# --------------------------------------------------------------------------- option values


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train", "encoder", "--max-steps", "9" * 400], "--max-steps"),
        (["train", "reranker", "--train-batch-size", "1" + "0" * 19], "--train-batch-size"),
        (["train", "decoder", "--refusal-cv-repeats", "9" * 40], "--refusal-cv-repeats"),
        (["train", "decoder", "--top-k", "-" + "9" * 400], "--top-k"),
    ],
)
def test_a_huge_whole_number_is_a_usage_error(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as stop:  # was OverflowError, or accepted
        main([*argv, "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected a whole number" in err
    assert len(err.splitlines()) == 1 and len(err) < 400  # the number is shortened


def test_the_largest_whole_number_is_still_accepted():
    from llama_index_ragtune.commands.options import MAX_WHOLE_NUMBER, bounded

    assert bounded(int, 1)(str(MAX_WHOLE_NUMBER)) == 2**63 - 1


# --------------------------------------------------------------------------- path text


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["tune", "--docs", "{docs}", "--queries", "{t}/q\nx.jsonl", "--out", "{t}/o"], "q\\nx"),
        (["tune", "--docs", "{t}/d\tx", "--out", "{t}/o"], "d\\tx"),
        (["tune", "--docs", "{docs}", "--out", "{t}/file\nx"], "file\\nx"),
        (["train", "encoder", "--beir", "{t}/b\nx", "--out", "{t}/o"], "b\\nx"),
        (["tune", "--docs", "{docs}", "--encoder", "./m\nx", "--out", "{t}/o"], "./m\\nx'"),
    ],
)
def test_a_path_with_a_line_break_is_shown_escaped_on_one_line(tmp_path, docs, capsys, argv, shown):
    (tmp_path / "file\nx").write_text("")
    try:
        status = main([a.format(docs=docs, t=tmp_path) for a in argv])
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # was split in two, or folded to "file x"
    assert shown in err and "file x" not in err and "b x" not in err


def test_a_deleted_current_folder_is_named(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    code = textwrap.dedent(
        f"""
        import os
        os.chdir({str(gone)!r})
        os.rmdir({str(gone)!r})
        from llama_index_ragtune.cli import main
        raise SystemExit(main(["rollback", "--bundle", {str(tmp_path)!r}]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2
    assert "the current folder no longer exists" in proc.stderr  # was "[Errno 2] ..."
    assert "cd to an existing folder" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("variable", ["XDG_CACHE_HOME", "RAGTUNE_CACHE_DIR"])
def test_a_cache_folder_that_cannot_be_made_is_refused_before_any_work(
    tmp_path, docs, capsys, monkeypatch, variable
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv("RAGTUNE_CACHE_DIR", raising=False)
    monkeypatch.setenv(variable, str(blocker / "cache"))
    out = tmp_path / "out"
    assert main(["tune", "--docs", str(docs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"(from {variable}={blocker}/cache)" in err and f"{blocker} is a file" in err
    assert "set RAGTUNE_CACHE_DIR to a writable folder" in err
    assert not out.exists()  # was: parsed, then failed while the index was built


@pytest.mark.parametrize("option", ["--time-budget", "--relative-margin"])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_number_is_not_read_as_none(tmp_path, capsys, option, value):
    argv = ["train", "encoder", "--dataset", "d.json", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as stop:  # "" was 'none': unlimited training, no filter
        main([*argv, option, value])
    assert stop.value.code == 2
    assert f"argument {option}: expected a number > 0" in capsys.readouterr().err


def test_none_still_turns_an_optional_number_off():
    from llama_index_ragtune.cli import _build_parser

    argv = ["train", "encoder", "--dataset", "d.json", "--out", "o"]
    args = _build_parser(argv).parse_args([*argv, "--time-budget", "none"])
    assert (args.time_budget, args.relative_margin) == (None, 0.95)
    args = _build_parser(argv).parse_args([*argv, "--relative-margin", "off"])
    assert args.relative_margin is None
