"""``ragtune bench hostile`` end to end at tiny sizes: the files, the rows, the ratio column.

No timing threshold: the timings themselves are what the benchmark reports.
"""

from __future__ import annotations

import json
import math
import re

from benchmarks import hostile_inputs

#: an absolute path of this machine (as in test_results_paths.py)
ABSOLUTE = re.compile(r"(?<![\w.~-])(/(?:work|tmp|root|home)(?=[/\"'`\s]|$)|[A-Za-z]:\\\\?)")


def test_hostile_inputs_benchmark_writes_its_table(tmp_path, capsys):
    out = tmp_path / "results"
    assert hostile_inputs.main(["--scale", "0.01", "--repeats", "1", "--out", str(out)]) == 0

    results = json.loads((out / "hostile_inputs.json").read_text(encoding="utf-8"))
    markdown = (out / "hostile_inputs.md").read_text(encoding="utf-8")
    rows = results["rows"]
    assert [(r["operation"], r["case"]) for r in rows] == [
        (c.operation, c.name) for c in hostile_inputs.CASES
    ]
    assert {r["operation"] for r in rows} >= {
        "check_quotes",
        "uncited_claims",
        "claim_spans",
        "fill_metadata",
        "StructuredHTMLNodeParser",
        "render_markdown",
        "render_html (report)",
        "split_sentences",
        "RetrievalDataset.from_pairs",
        "load_grounded_qa",
    }
    for row, case in zip(rows, hostile_inputs.CASES, strict=True):
        assert row["n"] == max(10, round(case.n * 0.01))
        assert row["seconds_n"] >= 0 and row["seconds_2n"] >= 0
        assert isinstance(row["ratio"], float) and math.isfinite(row["ratio"])
        assert row["ratio"] > 0, row
    assert results["setup"] == {"scale": 0.01, "repeats": 1}
    assert not ABSOLUTE.search(json.dumps(results)) and not ABSOLUTE.search(markdown)
    assert results["command"].startswith("python -m benchmarks.hostile_inputs --out ")

    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(rows)  # header, rule, one line per case
    for line in table[2:]:
        ratio = float(line.rstrip(" |").rsplit("|", 1)[1])
        assert ratio > 0, line
    printed = capsys.readouterr().out
    assert "| claim_spans | many claims and quotes |" in printed


def test_hostile_inputs_is_a_bench_command(tmp_path):
    from llama_index_ragtune import cli

    assert cli.COMMANDS["bench"]["hostile"][0] == "benchmarks.hostile_inputs"
    args = hostile_inputs.build_parser().parse_args([])
    assert (args.out, args.repeats, args.scale) == ("benchmarks/results", 5, 1.0)
