"""Committed benchmark results name no absolute path of the machine they ran on.

Every JSON / Markdown file under ``benchmarks/results/`` that git tracks or would
track (ignored model folders and caches are left out) is scanned for an
absolute path: ``/work``, ``/tmp``, ``/root``, ``/home`` or a Windows drive
(``C:\\``). The writers record paths relative to the working directory
(``benchmarks._paths.display_path``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks._paths import display_path, display_value

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
ABSOLUTE = re.compile(r"(?<![\w.~-])(/(?:work|tmp|root|home)(?=[/\"'`\s]|$)|[A-Za-z]:\\\\?)")


def _result_files() -> list[Path]:
    """Result files git tracks or would track; every file when this is not a git checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", str(RESULTS)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        files = list(RESULTS.rglob("*"))
    return sorted(p for p in files if p.suffix in (".json", ".md") and p.is_file())


FILES = _result_files()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RESULTS)) for p in FILES])
def test_result_file_names_no_absolute_path(path: Path) -> None:
    hits = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        hits += [
            f"line {number}: ...{line[max(0, m.start() - 30) : m.end() + 30]}..."
            for m in ABSOLUTE.finditer(line)
        ]
    assert not hits, (
        f"{path.relative_to(ROOT)} names absolute paths of the machine it ran on; rerun the "
        "command that writes it (results record paths relative to the working directory):\n"
        + "\n".join(hits[:5])
    )


def test_there_are_results_to_scan() -> None:
    assert any(p.suffix == ".json" for p in FILES)


@pytest.mark.parametrize(
    "text",
    [
        '"out": "/tmp/bench/retr"',
        "--embedding-cache /tmp/enc_work/embcache;",
        '"base_model": "/root/.cache/llama-index-ragtune/models/x"',
        "`/work/main/llama_index_ragtune/cli.py bench tuning`",
        "/home/user/data",
        r'"path": "C:\\Users\\me\\scifact"',
    ],
)
def test_the_scan_finds_absolute_paths(text: str) -> None:
    assert ABSOLUTE.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "--beir ../shared/data/scifact --out benchmarks/results/retrieval",
        "../../tmp/bench/retr",
        "runs/work/x",
        "score 0.5 / 1.0; a/b",
        "https://github.com/llama-index-ragtune/home",
    ],
)
def test_the_scan_leaves_relative_paths_alone(text: str) -> None:
    assert not ABSOLUTE.search(text)


def test_display_path_writes_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "runs" / "x") == "runs/x"
    assert display_path("runs/x") == "runs/x"
    assert not display_path("/tmp/elsewhere").startswith("/")
    assert display_value(3) == 3
    assert display_value(str(tmp_path / "a")) == "a"
    nested = {"policy": {"scorer": str(tmp_path / "head"), "threshold": 0.5}, "runs": [tmp_path]}
    assert display_value(nested) == {"policy": {"scorer": "head", "threshold": 0.5}, "runs": ["."]}
