"""The ragtune CLI: wrong paths fail before torch loads; user errors are one line; no empty dirs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llama_index_ragtune import cli
from llama_index_ragtune.data.errors import DataError

PACKAGE = Path(cli.__file__).parent
HEAVY = ("torch", "transformers", "sentence_transformers")


def _beir(root: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "Aspirin."}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "what is aspirin"}\n')
    (root / "qrels" / "test.tsv").write_text(qrels)
    (root / "qrels" / "train.tsv").write_text(qrels)
    return root


def _one_error_line(capsys: pytest.CaptureFixture[str], prefix: str) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prefix}: error: ")
    return lines[0]


def test_wrong_path_fails_before_heavy_imports(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "encoder"
    code = textwrap.dedent(
        f"""
        import sys
        from llama_index_ragtune.cli import main
        status = main(["train", "encoder", "--beir", "/nope", "--out", {str(out)!r}])
        print(status, *[name for name in {HEAVY!r} if name in sys.modules])
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.stdout.split() == ["2"]  # status 2, and none of the heavy modules imported
    assert proc.stderr.startswith("ragtune train encoder: error: argument --beir: ")
    assert "BEIR folder not found: /nope" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_module_entry_point_exits_with_status_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llama_index_ragtune.cli", "bench", "retrieval", "--beir", "/nope"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr.splitlines() == [proc.stderr.strip()]
        and "argument --beir: BEIR folder not found: /nope" in proc.stderr
    )


@pytest.mark.parametrize(
    ("argv", "prefix", "needle"),
    [
        (
            ["train", "encoder", "--beir", "{beir}", "--train-split", "tran", "--out", "{o}"],
            "ragtune train encoder",
            "argument --train-split: unknown split 'tran' for BEIR folder {beir}; "
            "available splits: test, train",
        ),
        (
            ["train", "reranker", "--dataset", "{tmp}/missing.json", "--out", "{o}"],
            "ragtune train reranker",
            "argument --dataset: file not found: {tmp}/missing.json",
        ),
        (
            ["train", "encoder", "--dataset", "{tmp}", "--out", "{o}"],
            "ragtune train encoder",
            "argument --dataset: {tmp} is a folder, expected a file",
        ),
        (
            ["bench", "retrieval", "--beir", "{beir}", "--model", "./no-such-model"],
            "ragtune bench retrieval",
            "argument --model: Model path './no-such-model' does not exist",
        ),
        (
            ["bench", "retrieval", "--beir", "{beir}", "--reranker", "{tmp}"],
            "ragtune bench retrieval",
            "argument --reranker: Model folder '{tmp}' holds no model files",
        ),
        (
            ["bench", "retrieval", "--beir", "{beir}", "--out", "{beir}/corpus.jsonl"],
            "ragtune bench retrieval",
            "argument --out: {beir}/corpus.jsonl is a file, expected a folder",
        ),
        (
            ["bench", "tuning", "--beir", "{beir}/corpus.jsonl", "--out", "{o}"],
            "ragtune bench tuning",
            "argument --beir: {beir}/corpus.jsonl is a file, not a BEIR folder",
        ),
        (
            [
                "bench",
                "retrieval",
                "--beir",
                "{beir}",
                "--embedding-cache",
                "{beir}/corpus.jsonl/x",
            ],
            "ragtune bench retrieval",
            "argument --embedding-cache: cannot create {beir}/corpus.jsonl/x: "
            "{beir}/corpus.jsonl is a file",
        ),
        (
            ["report", "{tmp}/evaluation.json"],
            "ragtune report",
            "argument EVAL_JSON: file not found: {tmp}/evaluation.json",
        ),
        (
            ["train", "encoder", "--beir", "{beir}"],
            "ragtune train encoder",
            "the following arguments are required: --out",
        ),
        (["nope"], "ragtune", "argument group: invalid choice: 'nope'"),
    ],
)
def test_wrong_arguments_print_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv, prefix, needle
) -> None:
    beir = _beir(tmp_path / "beir")
    values = {"beir": str(beir), "tmp": str(tmp_path), "o": str(tmp_path / "out")}
    assert _status([a.format(**values) for a in argv]) == 2
    line = _one_error_line(capsys, prefix)
    assert needle.format(**values) in line
    assert not (tmp_path / "out").exists()


def _status(argv: list[str]) -> int:
    """``main``'s exit status, also when argparse exits by itself."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_argparse_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "encoder", "--beir"])
    assert exc.value.code == 2
    line = _one_error_line(capsys, "ragtune train encoder")
    assert "argument --beir: expected one argument (see 'ragtune train encoder --help')" in line


def test_data_errors_during_a_run_print_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    beir = _beir(tmp_path / "beir", qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    argv = ["bench", "retrieval", "--beir", str(beir), "--out", str(tmp_path / "new" / "out")]
    assert cli.main(argv) == 1
    line = _one_error_line(capsys, "ragtune bench retrieval")
    assert f"{beir}/qrels/test.tsv:2: relevance score 'high' is not an integer" in line
    assert not (tmp_path / "new").exists()
    with pytest.raises(DataError, match="'high' is not an integer"):
        cli.main([*argv, "--debug"])
    with pytest.raises(DataError):
        cli.main(["--debug", *argv])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(DataError):
        cli.main(argv)


_PROBE = """
import argparse
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--out")
    parser.add_argument("--dataset")
    parser.add_argument("--fail", default="data")


def run(args):
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if args.fail == "partial":
        (out / "log.txt").write_text("started")
    if args.fail == "interrupt":
        raise KeyboardInterrupt
    if args.fail == "bug":
        raise RuntimeError("a bug")
    from llama_index_ragtune.data import RetrievalDataset

    RetrievalDataset.load_json(args.dataset)
    return 0
"""


@pytest.fixture()
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real command module that creates its output folder before reading its input."""
    (tmp_path / "ragtune_probe_command.py").write_text(_PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "probe", ("ragtune_probe_command", "test command"))
    dataset = tmp_path / "bad.json"
    dataset.write_text(json.dumps({"queries": {"q1": "x"}, "corpus": {}, "relevant_docs": {}}))
    return dataset


def test_a_failed_run_leaves_no_empty_output_folder(
    tmp_path: Path, probe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "a" / "out"
    assert cli.main(["probe", "--out", str(out), "--dataset", str(probe)]) == 1
    line = _one_error_line(capsys, "ragtune probe")
    assert f"{probe}: RetrievalDataset has an empty corpus" in line
    assert not (tmp_path / "runs").exists()  # every folder this run created is gone
    # an output folder that existed before the run is left alone
    out.mkdir(parents=True)
    assert cli.main(["probe", "--out", str(out), "--dataset", str(probe)]) == 1
    assert (out / "checkpoints").is_dir()
    capsys.readouterr()
    # a folder the run wrote files into is kept (partial results are not deleted)
    other = tmp_path / "partial"
    argv = ["probe", "--out", str(other), "--dataset", str(probe), "--fail", "partial"]
    assert cli.main(argv) == 1
    assert (other / "log.txt").read_text() == "started"


def test_interrupts_and_bugs(tmp_path: Path, probe: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "out"
    assert cli.main(["probe", "--out", str(out), "--fail", "interrupt"]) == 130
    assert capsys.readouterr().err == "ragtune probe: interrupted\n"
    assert not out.exists()
    # an unexpected exception is a bug: its traceback is kept for the report
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["probe", "--out", str(out), "--fail", "bug"])
    assert not out.exists()


def test_check_arguments_accepts_good_paths(tmp_path: Path, minilm_path: str) -> None:
    import argparse

    beir = _beir(tmp_path / "beir")
    args = argparse.Namespace(
        beir=str(beir),
        train_split="train",
        eval_split="none",
        model=minilm_path,
        reranker="cross-encoder/ms-marco-MiniLM-L6-v2",
        output=str(tmp_path / "new" / "deeper"),
        cache_dir="none",
    )
    cli.check_arguments(args)
    assert not (tmp_path / "new").exists()  # checking creates nothing


def _package_sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]


def test_the_package_never_runs_a_shell() -> None:
    pattern = re.compile(
        r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.|(?<![\w.])(?:eval|exec)\("
    )
    hits = [
        f"{path.relative_to(PACKAGE)}:{text[: m.start()].count(chr(10)) + 1}"
        for path, text in _package_sources()
        for m in pattern.finditer(text)
    ]
    assert hits == []


def test_remote_code_is_never_trusted_by_default() -> None:
    pattern = re.compile(
        r"trust_remote_code\s*[=:]\s*(?:bool\s*=\s*)?(?:Field\(\s*default\s*=\s*)?True"
    )
    hits = [
        str(path.relative_to(PACKAGE)) for path, text in _package_sources() if pattern.search(text)
    ]
    assert hits == []


# --------------------------------------------------------------------------- vocabulary


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_documents_the_vocabulary(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    for name in (
        "--out DIR",
        "--learning-rate, --lr",
        "--train-batch-size",
        "--generation-batch-size",
    ):
        assert name in text


@pytest.mark.parametrize(
    ("command", "present", "absent"),
    [
        (
            ["train", "encoder"],
            ["--out DIR", "--learning-rate LEARNING_RATE, --lr", "--train-batch-size"],
            ["--batch-size"],
        ),
        (
            ["train", "reranker"],
            ["--out DIR", "--learning-rate LEARNING_RATE, --lr", "--train-batch-size"],
            ["--batch-size"],
        ),
        (
            ["train", "decoder"],
            [
                "--out DIR",
                "--learning-rate LEARNING_RATE, --lr",
                "--generation-batch-size",
                "--max-train-examples",
                "--qa FILE",
            ],
            ["--train-batch-size"],
        ),
        (
            ["bench", "generation"],
            [
                "--out OUT",
                "--learning-rate LEARNING_RATE, --lr",
                "--generation-batch-size",
                "--max-train-examples",
            ],
            ["--train-batch-size"],
        ),
        (["bench", "retrieval"], ["--out OUT", "--embedding-cache DIR"], []),
        (["bench", "tuning"], ["--out", "--embedding-cache"], []),
        (["tune"], ["--out DIR"], []),
        (["demo"], ["--out DIR"], []),
        (["report"], ["--out DIR"], []),
    ],
)
def test_each_command_uses_the_shared_names(
    command: list[str], present: list[str], absent: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(_help(command, capsys).split())
    for name in present:
        assert name in text, f"{' '.join(command)} --help lacks {name}"
    for name in absent:
        assert f"{name} " not in text.replace("(" + name, ""), f"{' '.join(command)}: {name}"


@pytest.mark.parametrize(
    ("command", "old", "new", "dest", "value"),
    [
        (["train", "decoder", "--squad", "s.json"], "--output", "--out", "out", "runs/d"),
        (
            ["train", "decoder", "--squad", "s.json", "--out", "o"],
            "--batch-size",
            "--generation-batch-size",
            "generation_batch_size",
            4,
        ),
        (
            ["train", "decoder", "--squad", "s.json", "--out", "o"],
            "--max-examples",
            "--max-train-examples",
            "max_train_examples",
            7,
        ),
        (["train", "encoder", "--beir", "b"], "--output", "--out", "out", "runs/e"),
        (
            ["bench", "retrieval", "--beir", "b"],
            "--cache-dir",
            "--embedding-cache",
            "cache_dir",
            "c",
        ),
    ],
)
def test_deprecated_names_still_work_and_say_the_new_one(
    command: list[str],
    old: str,
    new: str,
    dest: str,
    value: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*command, old, str(value)]
    args = cli._build_parser(argv).parse_args(argv)
    assert getattr(args, dest) == value
    assert f"warning: {old} is deprecated; use {new}" in capsys.readouterr().err
    argv = [*command, new, str(value)]
    assert getattr(cli._build_parser(argv).parse_args(argv), dest) == value
    assert capsys.readouterr().err == ""


def test_lr_is_a_short_name_of_learning_rate() -> None:
    for command in (
        ["train", "encoder", "--beir", "b", "--out", "o"],
        ["train", "decoder", "--qa", "q", "--out", "o"],
    ):
        argv = [*command, "--lr", "2e-5"]
        assert cli._build_parser(argv).parse_args(argv).learning_rate == 2e-5
