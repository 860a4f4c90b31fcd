"""``python -m benchmarks.refusal_cap`` in a small setting: every rule measured, files written."""

from __future__ import annotations

import json

from benchmarks import refusal_cap


def test_every_rule_is_measured_on_both_sets_and_written(tmp_path, monkeypatch, squad_path):
    monkeypatch.chdir(tmp_path)
    argv = ["--squad", str(squad_path), "--squad-articles", "1", "--squad-questions", "80"]
    argv += ["--dev-size", "40", "--splits", "30", "--out", "results"]

    result = refusal_cap.main(argv)

    written = json.loads((tmp_path / "results" / "refusal_cap.json").read_text())
    assert written == json.loads(json.dumps(result))
    rows = written["rows"]
    assert [(r["data"], r["confidence"]) for r in rows] == [
        (data, confidence)
        for data in ("demo help centres", "SQuAD 2.0")
        for confidence in refusal_cap.RULES
    ]
    demo = [r for r in rows if r["data"] == "demo help centres"]
    assert demo[0]["questions"] == 304 and 0 < demo[0]["to_refuse"] < 304
    for row in rows:
        assert row["splits"] > 0
        assert 0 <= row["over_refusal_mean"] <= row["over_refusal_p90"] <= 1
        assert 0 <= row["cap_broken_share"] <= 1 and 0 <= row["balanced_accuracy"] <= 1
    # a cap that must hold on new questions refuses no more than one fitted on the dev ones
    for plain, bounded in zip(rows[0::3], rows[2::3], strict=True):
        assert bounded["over_refusal_mean"] <= plain["over_refusal_mean"]
    # results name no path of the machine they ran on
    assert not any(part.startswith("/") for part in written["command"].split())
    assert str(tmp_path) not in json.dumps(written)
    table = (tmp_path / "results" / "refusal_cap.md").read_text()
    assert table.count("\n| demo help centres |") == 3 and "on new ones, 95%" in table
