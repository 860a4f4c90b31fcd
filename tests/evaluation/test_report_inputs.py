"""Evaluation JSON with text no UTF-8 file can hold: rejected by ``load`` / ``save`` and
``ragtune report``, naming the field, before anything is written."""

from __future__ import annotations

import json

import pytest
from dashboard_fixture import sample_results

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation.results import EvaluationFileError, EvaluationResults


def _write(tmp_path, edit) -> object:
    data = sample_results().to_dict()
    edit(data)
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # ensure_ascii: "\ud800" as an escape
    assert "\\ud" in path.read_text()
    return path


def _set(keys, value):
    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _rename_metric(data):
    metrics = data["retrieval"][0]["metrics"]
    metrics["ndcg\udc00@10"] = metrics.pop(next(iter(metrics)))


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (_set(["title"], "\ud800 Retail"), "title", "lone surrogate \\ud800"),
        (_set(["notes"], "ok \udfff"), "notes", "lone surrogate \\udfff"),
        (_set(["dataset", "name"], "retail\udc80"), "dataset.name", "\\udc80"),
        (
            _set(["generation", 1, "refusal", "policy"], "\ud83d"),
            "generation[1].refusal.policy",
            "",
        ),
        (_set(["decisions", 0, "reason"], "\udbff"), "decisions[0].reason", ""),
        (_rename_metric, "retrieval[0].metrics", "the key 'ndcg\\udc00@10'"),
        (_set(["dataset", "queries", "te\udc00st"], 4), "dataset.queries", "the key"),
    ],
)
def test_lone_surrogates_are_named_by_load_and_report(tmp_path, capsys, edit, field, message):
    path = _write(tmp_path, edit)
    with pytest.raises(EvaluationFileError) as caught:
        EvaluationResults.load(path)
    assert caught.value.field == field
    assert f"field '{field}': " in str(caught.value) and message in str(caught.value)
    assert "invalid character (a lone surrogate" in str(caught.value)
    str(caught.value).encode("utf-8")  # the message itself can be printed

    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ragtune report: error: {path}: field '{field}'")
    assert not out.exists()


def test_a_valid_surrogate_pair_is_text_and_reports(tmp_path):
    path = _write(tmp_path, _set(["title"], "Retail \U0001f600 \\ud800 literal"))
    assert EvaluationResults.load(path).title == "Retail \U0001f600 \\ud800 literal"
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "\U0001f600" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_save_refuses_a_lone_surrogate_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "evaluation.json"
    results = sample_results()
    results.save(path)
    before = path.read_bytes()
    results.generation[0].name = "tuned \ud800"
    with pytest.raises(EvaluationFileError, match=r"field 'generation\[0\]\.name'"):
        results.save(path)
    assert path.read_bytes() == before
