"""Round s41: what the reports and the feedback store write and read, under hostile input.

Real files, real named pipes and links, a real SQLite feedback store; the HTML report is
parsed with ``html.parser`` (the Chromium checks of the page are in ``test_dashboard.py``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from html.parser import HTMLParser

import pytest

from llama_index_ragtune.evaluation import GenerationReport, RetrievalReport, dashboard
from llama_index_ragtune.evaluation.dashboard import render_html, write_report
from llama_index_ragtune.evaluation.dashboard_markdown import markdown_page, render_markdown
from llama_index_ragtune.evaluation.report import QueryResult
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.evaluation.results_reading import EvaluationFileError
from llama_index_ragtune.evaluation.svg_charts import (
    Series,
    calibration_diagram,
    latency_boxes,
    metric_bars,
    timing_bars,
)
from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.feedback.sql import MAX_LISTED_VERSIONS

MARKUP = '"><script>alert(1)</script><a href="http://evil.example">x</a><!--'


def _finishes(call, seconds: float = 20.0):
    """Run ``call`` in a thread; the exception it raised (None if none). Fails if it blocks."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            call()
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call blocked"
    return outcome["error"]


def _retrieval_report() -> RetrievalReport:
    rows = [
        QueryResult("q1", {"recall@10": 1.0}, ["d1"], 2.0, [0.9]),
        QueryResult("q2", {"recall@10": 0.0}, ["d9"], 4.0, [0.1]),
    ]
    return RetrievalReport(rows=rows, k_values=(10,), metrics=("recall",), name="base")


# ---------------------------------------------------------------- special files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_evaluation_json_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "evaluation.json"
    os.mkfifo(fifo)
    error = _finishes(lambda: EvaluationResults.load(fifo))  # was: blocked forever
    assert isinstance(error, EvaluationFileError)
    assert "named pipe" in str(error) and str(fifo) in str(error)


def test_evaluation_json_device_is_refused_not_read(tmp_path):
    error = _finishes(lambda: EvaluationResults.load("/dev/zero"))  # was 256 MiB of zeros read
    assert isinstance(error, EvaluationFileError)
    assert "character device" in str(error)
    folder = tmp_path / "evaluation.json"
    folder.mkdir()
    with pytest.raises(EvaluationFileError, match="a folder"):
        EvaluationResults.load(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_saved_report_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    for cls in (RetrievalReport, GenerationReport):
        error = _finishes(lambda cls=cls: cls.from_json(fifo))  # was: blocked forever
        assert isinstance(error, EvaluationFileError) and "named pipe" in str(error)


# ---------------------------------------------------------------- saved reports


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda d: {**d, "k_values": "abc"}, "k_values", "non-empty list"),  # was ('a','b','c')
        (lambda d: {**d, "k_values": [0]}, "k_values[0]", ">= 1"),
        (lambda d: {**d, "metrics": [1]}, "metrics[0]", "expected a string"),
        (lambda d: [d], None, "JSON object"),  # was TypeError: list indices
        (
            lambda d: {**d, "queries": [{**d["queries"][0], "evil": 1}]},
            "queries[0].evil",
            "unknown field",
        ),  # was TypeError from QueryResult
        (
            lambda d: {**d, "queries": [{**d["queries"][0], "metrics": "x"}]},
            "queries[0].metrics",
            "expected an object",
        ),  # was AttributeError
        (
            lambda d: {**d, "queries": [{**d["queries"][0], "metrics": {}}]},
            "queries[0].metrics",
            "missing 'recall@10'",
        ),  # was a KeyError at the first aggregate
        (
            lambda d: {**d, "queries": [{**d["queries"][0], "latency_ms": "fast"}]},
            "queries[0].latency_ms",
            "finite number",
        ),
        (
            lambda d: {**d, "queries": [{**d["queries"][0], "retrieved": "d1"}]},
            "queries[0].retrieved",
            "list of strings",
        ),
    ],
)
def test_saved_retrieval_report_of_another_shape_names_file_and_field(tmp_path, edit, field, words):
    path = tmp_path / "report.json"
    data = json.loads(_retrieval_report().to_json())
    path.write_text(json.dumps(edit(data)), encoding="utf-8")
    with pytest.raises(EvaluationFileError) as info:
        RetrievalReport.from_json(path)
    assert str(path) in str(info.value) and words in str(info.value)
    assert info.value.field == field


def test_saved_report_with_huge_numbers_repeated_keys_or_deep_nesting_is_refused(tmp_path):
    text = _retrieval_report().to_json()
    path = tmp_path / "report.json"
    cases = {
        "1e999": text.replace('"latency_ms": 2.0', '"latency_ms": 1e999'),  # was inf, accepted
        "digits": text.replace('"latency_ms": 2.0', '"latency_ms": ' + "9" * 5000),
        "appears twice": text.replace('"name": "base"', '"name": "base", "name": "other"'),
        "nested too deeply": "[" * 100_000 + "]" * 100_000,  # was RecursionError
    }
    for words, content in cases.items():
        path.write_text(content, encoding="utf-8")
        with pytest.raises(EvaluationFileError) as info:
            RetrievalReport.from_json(path)
        message = str(info.value)
        assert str(path) in message, words
        assert words in message or "finite number" in message, (words, message)


def test_saved_reports_still_round_trip(tmp_path):
    report = _retrieval_report()
    report.to_json(tmp_path / "r.json")
    again = RetrievalReport.from_json(tmp_path / "r.json")
    assert again.to_dict() == report.to_dict()
    rows = [
        {"answerable": True, "refused": False, "uncited": False, "f1": 1.0, "id": "a"},
        {"answerable": False, "refused": True, "f1": None, "refusal_signals": {"decoder": 0.9}},
    ]
    generation = GenerationReport(rows=rows, name="gen", metric_keys=("f1",))
    generation.to_json(tmp_path / "g.json")
    assert GenerationReport.from_json(tmp_path / "g.json").to_dict() == generation.to_dict()


def test_saved_generation_report_of_another_shape_names_the_row(tmp_path):
    path = tmp_path / "g.json"
    bad = {
        "rows": [{"answerable": True, "refused": False}],  # an answer without "uncited"
        "metric_keys": ["f1"],
    }
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(EvaluationFileError, match=r"rows\[0\]\.uncited"):
        GenerationReport.from_json(path)  # was KeyError: 'uncited' at the aggregate
    bad = {"rows": [{"answerable": "yes", "refused": False, "uncited": False}]}
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(EvaluationFileError, match=r"rows\[0\]\.answerable"):
        GenerationReport.from_json(path)  # "yes" was read as truthy
    bad = {"rows": [{"answerable": True, "refused": True, "f1": "1"}], "metric_keys": ["f1"]}
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(EvaluationFileError, match=r"rows\[0\]\.f1"):
        GenerationReport.from_json(path)


def test_report_to_json_replaces_a_planted_link_and_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n", encoding="utf-8")
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    _retrieval_report().to_json(link)  # was: the report written into victim.txt
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    assert not link.is_symlink()
    assert RetrievalReport.from_json(link).name == "base"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_report_to_json_over_a_named_pipe_does_not_block(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    report = _retrieval_report()
    assert _finishes(lambda: report.to_json(fifo)) is None  # was: blocked until a reader came
    assert RetrievalReport.from_json(fifo).to_dict() == report.to_dict()


# ---------------------------------------------------------------- HTML / SVG


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    page = _Page()
    page.feed(html)
    page.close()
    return page.tags


def _check_no_markup_from_data(html: str) -> None:
    for tag, attrs in _tags(html):
        assert tag not in ("script", "img", "iframe", "object", "embed", "link", "base")
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith("#"), (tag, href)


def test_color_with_markup_is_refused_in_every_chart():
    with pytest.raises(ValueError, match="Series 'a'.*color"):
        Series("a", MARKUP, {"m": 0.5})  # was written into fill="..." unescaped
    series = Series("a", "#2563eb", {"m": 0.5})
    with pytest.raises(ValueError, match="color"):
        series.color = 'red" onload="alert(1)'  # set afterwards: checked as well
    with pytest.raises(ValueError, match="timing_bars"):
        timing_bars({"step": 1.0}, "t", color=MARKUP)
    with pytest.raises(ValueError, match="calibration_diagram"):
        calibration_diagram([], 0.5, "t", color=MARKUP)
    # good colours draw as before: #rgb widened, a CSS name in bars, hex in box plots
    assert Series("a", "#25e", {}).color == "#2255ee"
    svg = metric_bars([Series("a", "teal", {"m": 0.5})], ["m"], "t")
    assert 'fill="teal"' in svg
    _check_no_markup_from_data(svg)
    with pytest.raises(ValueError, match="give it as '#rrggbb'"):
        latency_boxes([Series("a", "teal", [1.0, 2.0])], "t")  # was int('', 16) ValueError
    assert "<circle" in latency_boxes([Series("a", "#059669", [1.0, 2.0])], "t")


def test_report_query_counts_given_as_text_are_escaped(tmp_path):
    results = EvaluationResults(
        title="t", dataset_name="d", queries={"test": MARKUP}, bundle_version="v1"
    )
    # the public renderers validate (round s42); the pages behind them still escape it
    for render in (render_html, render_markdown):
        with pytest.raises(EvaluationFileError, match="dataset.queries.test"):
            render(results)
    html = dashboard._page(results, None)
    _check_no_markup_from_data(html)  # was a live <a href="http://evil.example"> link
    assert "&lt;script&gt;" in html
    markdown = markdown_page(results)
    assert "<a href" not in markdown and "<script>" not in markdown
    with pytest.raises(EvaluationFileError, match="dataset.queries.test"):
        write_report(results, tmp_path / "report")  # written reports validate first
    assert not (tmp_path / "report" / "report.html").exists()


def test_report_of_hostile_strings_everywhere_holds_no_markup(tmp_path):
    results = EvaluationResults(
        title=MARKUP, dataset_name=MARKUP, queries={MARKUP: 2}, bundle_version=MARKUP, notes=MARKUP
    )
    results.add_retrieval(MARKUP, MARKUP, {MARKUP: 0.5, "ndcg@10": 0.4}, latency_ms=[1.0, 2.0])
    results.add_retrieval(MARKUP, "after", {MARKUP: 0.6, "ndcg@10": 0.5}, latency_ms=[1.0, 3.0])
    results.add_generation(
        MARKUP,
        MARKUP,
        {"answer_rate": 0.5},
        latency_ms=[1.0, 2.0],
        refusal_probabilities=[0.2, 0.9],
        should_refuse=[0, 1],
        refusal_threshold=0.5,
        refusal_policy=MARKUP,
    )
    results.add_decision("encoder", True, MARKUP, 0.1, 0.2, 0.0, MARKUP)
    results.timings[MARKUP] = 1.0
    paths = write_report(results, tmp_path / "report", source=MARKUP)
    html = paths.html.read_text(encoding="utf-8")
    _check_no_markup_from_data(html)
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "<script>" not in markdown and "<a href" not in markdown and "<!--" not in markdown


# ---------------------------------------------------------------- feedback store


def _store_with_versions(path, versions):
    store = FeedbackStore(path)
    for i, version in enumerate(versions):
        store.record(f"question {i}", answer="an answer", bundle_version=version)
    return store


def test_bundle_version_filter_longer_than_sqlite_parameter_cap(tmp_path):
    store = _store_with_versions(tmp_path / "fb.sqlite", ["v1", "v2", "v3", "v1"])
    # SQLite before 3.32 takes at most 999 parameters in a statement (what many distributions
    # still ship); the store's own connection is set to that cap here
    store._connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    asked = [f"x{i}" for i in range(1500)] + ["v1", "v3", "v1"]
    assert len(asked) > MAX_LISTED_VERSIONS
    records = list(store.records(bundle_version=asked))  # was "too many SQL variables"
    assert sorted(r.bundle_version for r in records) == ["v1", "v1", "v3"]
    assert store.count(bundle_version=asked) == 3
    assert store.stats(bundle_version=asked).bundle_versions == {"v1": 2, "v3": 1}
    # a short list still selects exactly (one ? per version)
    assert store.count(bundle_version=["v2"]) == 1
    # the versions are parameters, not SQL: quotes and JSON-looking text match literally
    odd = _store_with_versions(tmp_path / "odd.sqlite", ['v"1', "v') OR 1=1 --", "v%", "v_"])
    asked = [f"y{i}" for i in range(MAX_LISTED_VERSIONS)] + ["v%", "v') OR 1=1 --"]
    found = sorted(r.bundle_version for r in odd.records(bundle_version=asked))
    assert found == sorted(["v%", "v') OR 1=1 --"])
    assert odd.count(bundle_version=["v_"]) == 1 and odd.count(bundle_version="v") == 0


def test_export_error_names_a_long_version_filter_briefly(tmp_path):
    store = _store_with_versions(tmp_path / "fb.sqlite", ["v1"])
    asked = [f"v{i}" for i in range(20_000)]
    with pytest.raises(ValueError, match="has a positive") as info:
        store.to_retrieval_dataset(bundle_version=asked)  # nothing rated: no positive
    message = str(info.value)
    assert "and 19,995 more" in message
    assert len(message) < 2_000  # was 189,211 characters, every version listed


def test_metadata_holding_a_huge_integer_keeps_its_other_keys(tmp_path, caplog):
    path = tmp_path / "fb.sqlite"
    store = FeedbackStore(path)
    record_id = store.record("question", answer="an answer", metadata={"user": "ann"})
    store.close()
    digits = "9" * 5000
    with sqlite3.connect(path) as conn:  # another tool's write
        conn.execute(
            "UPDATE records SET metadata = ? WHERE id = ?",
            (f'{{"user": "ann", "n": {digits}, "m": -{digits}, "k": 7}}', record_id),
        )
    conn.close()
    store = FeedbackStore(path)
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.feedback.sql"):
        metadata = store.get(record_id).metadata
    # was {} (the whole object dropped, "not a JSON object")
    assert metadata == {"user": "ann", "n": digits, "m": "-" + digits, "k": 7}
    assert "2 integer(s) of more than 4,300 digits" in caplog.text
    assert json.dumps(store.get(record_id).to_dict())  # still exportable
    store.close()


# ---------------------------------------------------------------- file paths


def test_evaluation_paths_expand_home_and_refuse_empty_or_nul(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    results = EvaluationResults(
        title="t", dataset_name="d", queries={"test": 1}, bundle_version="v1"
    )
    saved = results.save("~/runs/evaluation.json")  # was a folder named "~" in the cwd
    assert saved == tmp_path / "home" / "runs" / "evaluation.json" and saved.is_file()
    assert not (tmp_path / "~").exists()
    assert EvaluationResults.load("~/runs/evaluation.json").title == "t"
    report = _retrieval_report()
    report.to_json("~/runs/report.json")
    assert RetrievalReport.from_json("~/runs/report.json").name == "base"
    paths = write_report(results, "~/runs/report")
    assert paths.html.parent == tmp_path / "home" / "runs" / "report"
    calls = {
        "EvaluationResults.save": lambda p: results.save(p),
        "EvaluationResults.load": lambda p: EvaluationResults.load(p),
        "RetrievalReport.to_json": lambda p: report.to_json(p),
        "RetrievalReport.from_json": lambda p: RetrievalReport.from_json(p),
        "write_report": lambda p: write_report(results, p),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name}: the path is empty"):
            call("")  # was '.' (the current folder) written over or read
        with pytest.raises(ValueError, match=f"{name}: .*NUL"):
            call("runs/a\0b.json")  # was "embedded null byte"
        if name != "RetrievalReport.to_json":  # to_json(None): the text, no file
            with pytest.raises(TypeError, match=name):
                call(None)
    assert sorted(os.listdir(tmp_path)) == ["home"]  # nothing written in the cwd


def test_write_report_into_a_file_names_it(tmp_path):
    results = EvaluationResults(
        title="t", dataset_name="d", queries={"test": 1}, bundle_version="v1"
    )
    taken = tmp_path / "report.html"
    taken.write_text("old", encoding="utf-8")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        write_report(results, taken)  # was FileExistsError "[Errno 17] File exists"
    assert taken.read_text(encoding="utf-8") == "old"
