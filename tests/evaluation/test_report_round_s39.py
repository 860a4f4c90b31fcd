"""Hostile-input battery (round s39) on evaluation results and reports: files in another
encoding, empty, cut off or over the size cap; memory while loading a million-value file;
thousands of metric names; a report written over its own input or half written; chart
labels that run past the chart's edge (measured in headless Chromium)."""

import json
import re
import sys
import tracemalloc

import pytest
from dashboard_fixture import sample_results
from headless_chromium import chromium, data_attribute, measured_dom  # tests/evaluation

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation.dashboard import render_html, write_report
from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
from llama_index_ragtune.evaluation.results import EvaluationFileError, EvaluationResults


# ---------------------------------------------------------------------- reading the file
@pytest.mark.parametrize(
    ("encode", "message"),
    [
        (
            lambda t: t.encode("utf-16"),
            r"the file is UTF-16-encoded, not UTF-8; re-save it as UTF-8",
        ),
        (
            lambda t: t.encode("utf-16-le"),
            r"the file is UTF-16-encoded, not UTF-8.*iconv -f UTF-16LE",
        ),
        (lambda t: t.encode("utf-32"), r"the file is UTF-32-encoded, not UTF-8"),
        (
            lambda t: t.replace("Retail", "Retäil").encode("latin-1"),
            r"not valid UTF-8 \(byte 0xe4 at line 4, column 16\); re-save it as UTF-8",
        ),
        (lambda t: b"", r"the file is empty; expected the evaluation JSON"),
        (lambda t: b" \n\t\n", r"the file is empty"),
        (
            lambda t: t[: len(t) // 2].encode(),
            r"not valid JSON \(line \d+, column \d+: .*\); the file ends before the JSON does: "
            r"it was cut off while it was written",
        ),
        (
            lambda t: t[: t.index('"title": "') + 14].encode(),  # ends inside a string
            r"not valid JSON \(line 4, column \d+: Unterminated string .*\); the file ends "
            r"before the JSON does",
        ),
        (
            lambda t: (t + t).encode(),
            r"not valid JSON .*Extra data\); more text follows the JSON document "
            r"\(two files written into one",
        ),
    ],
)
def test_a_file_not_in_utf8_empty_or_cut_off_says_so(tmp_path, capsys, encode, message):
    path = tmp_path / "evaluation.json"
    path.write_bytes(encode(sample_results().to_json()))
    with pytest.raises(EvaluationFileError, match=rf"evaluation\.json: {message}"):
        EvaluationResults.load(path)
    assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err)
    assert not (tmp_path / "r").exists()


def test_a_mistake_inside_the_file_is_not_called_a_cut_off(tmp_path):
    path = tmp_path / "evaluation.json"
    path.write_text(sample_results().to_json().replace('"title"', "'title'", 1), "utf-8")
    with pytest.raises(EvaluationFileError) as info:
        EvaluationResults.load(path)
    assert "not valid JSON (line" in str(info.value) and "cut off" not in str(info.value)


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    from llama_index_ragtune.evaluation.results_reading import MAX_EVALUATION_BYTES

    huge = tmp_path / "evaluation.json"
    with huge.open("wb") as handle:  # sparse: over the cap without writing it
        handle.truncate(MAX_EVALUATION_BYTES + 1)
    tracemalloc.start()
    try:
        with pytest.raises(EvaluationFileError, match=r"over the 268,435,456-byte cap"):
            EvaluationResults.load(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # refused from its size, not read
    path = sample_results().save(tmp_path / "small.json")
    with pytest.raises(EvaluationFileError, match="over the 100-byte cap"):
        EvaluationResults.load(path, max_bytes=100)
    assert EvaluationResults.load(path, max_bytes=None).to_json() == path.read_text()[:-1]


def test_loading_a_million_value_file_takes_memory_in_proportion_to_it(tmp_path):
    """Every value was walked with a path string built for it (to look for a lone
    surrogate): 41 times the file's size in memory, 15 s and 1.3 GB for 5 million latencies."""
    n = 200_000
    data = json.loads(sample_results(n_test=3).to_json())
    data["retrieval"][0]["latency_ms"] = [round(1 + i % 997 / 7, 3) for i in range(n)]
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    tracemalloc.start()
    try:
        loaded = EvaluationResults.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(loaded.retrieval[0].latency_ms) == n
    assert peak < 20 * path.stat().st_size, (peak, path.stat().st_size)
    # a lone surrogate is still found and named, however large the file
    data["retrieval"][1]["latency_ms"] = [1.0] * n
    data["generation"][0]["name"] = "\ud800"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EvaluationFileError, match=r"field 'generation\[0\]\.name'.*surrogate"):
        EvaluationResults.load(path)


def test_latencies_out_of_bounds_are_still_named_after_the_fast_check():
    data = json.loads(sample_results(n_test=3).to_json())
    for bad, message in ((1e999, "got inf"), (-0.5, ">= 0, got -0.5"), (True, "boolean")):
        data["reranking"][1]["latency_ms"] = [1.0, 2.0, bad]
        with pytest.raises(
            EvaluationFileError, match=rf"reranking\[1\]\.latency_ms\[2\].*{message}"
        ):
            EvaluationResults.from_dict(json.loads(json.dumps(data)))
    data["reranking"][1]["latency_ms"] = [1, 2.5, 0]  # whole numbers are read as floats
    assert EvaluationResults.from_dict(data).reranking[1].latency_ms == [1.0, 2.5, 0.0]


# ---------------------------------------------------------------------- rendering at scale
class CountedName(str):
    """A metric name that counts how often it is compared for equality."""

    comparisons = 0

    def __eq__(self, other):
        CountedName.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_thousands_of_metric_names_are_found_in_one_step_each():
    """Each name was looked up in a list of the names before it: 4,000 metrics took 2.3 s,
    16,000 about 40 s."""
    k = 3000
    results = sample_results(n_test=3)
    for system in results.retrieval:
        system.metrics = {CountedName(f"metric_{i}"): 0.5 for i in range(k)}
    CountedName.comparisons = 0
    render_html(results)
    render_markdown(results)
    assert CountedName.comparisons < 40 * k, CountedName.comparisons


def test_saving_thousands_of_systems_rewrites_the_text_once():
    """Each per-query list was put back with a ``replace`` over the whole indented text:
    4,000 systems took 5.4 s, 10,000 about 35 s."""
    results = EvaluationResults("t", "d", {"test": 2}, "v1", created="2026-01-01T00:00:00Z")
    for i in range(1500):
        results.add_generation(
            f"g{i}", "after", {"answer_rate": 0.5}, [1.0, 2.0], [0.1, 0.9], [0, 1]
        )
    whole_text_rewrites = 0

    def count(frame, event, arg):
        nonlocal whole_text_rewrites
        if event == "c_call" and getattr(arg, "__name__", "") == "replace":
            target = getattr(arg, "__self__", None)
            whole_text_rewrites += isinstance(target, str) and len(target) > 100_000

    sys.setprofile(count)
    try:
        text = results.to_json()
    finally:
        sys.setprofile(None)
    assert whole_text_rewrites <= 1, whole_text_rewrites
    assert '"latency_ms": [1.0, 2.0],' in text and '"should_refuse": [0, 1]' in text
    assert EvaluationResults.from_dict(json.loads(text)).to_json() == text


# ---------------------------------------------------------------------- writing the report
def test_ragtune_report_does_not_write_over_its_own_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    source = out / "report.md"
    text = sample_results().to_json()
    source.write_text(text, encoding="utf-8")
    link = tmp_path / "evaluation.json"
    link.symlink_to(source)
    for args in (
        [str(source), "--out", str(out)],
        [str(source)],  # the default --out: the JSON's folder
        [str(link), "--out", str(out)],  # through a link: the file it names would go
    ):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert "is the report.md the report writes into" in err and err.count("\n") == 1
    assert source.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert main(["report", str(link), "--out", str(tmp_path / "elsewhere")]) == 0


def test_a_report_that_cannot_be_written_whole_leaves_both_old_files(tmp_path, capsys):
    out = tmp_path / "report"
    (out / "report.md").mkdir(parents=True)  # the second file cannot be put in place
    (out / "report.html").write_text("old page", encoding="utf-8")
    with pytest.raises(IsADirectoryError):
        write_report(sample_results(), out)
    assert (out / "report.html").read_text(encoding="utf-8") == "old page"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]  # no temp
    source = sample_results().save(tmp_path / "evaluation.json")
    assert main(["report", str(source), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write the report to {out / 'report.md'}: a folder is where" in err
    assert (out / "report.html").read_text(encoding="utf-8") == "old page"


# ---------------------------------------------------------------------- chart labels
def test_control_characters_in_labels_are_drawn_and_counted_as_characters():
    from llama_index_ragtune.evaluation.chart_text import drawn_text, fit_text, text_width

    assert drawn_text("hybrid\nafter\ttuned\x00") == "hybrid after tuned\ufffd"
    assert drawn_text("plain · 検索") == "plain · 検索"
    for label in ("s\n" * 500, "a\x00" * 300, "x\r\n\x1b" * 200):
        cut = fit_text(label, 552)
        assert cut == drawn_text(cut)  # nothing the estimate counts as no width
        assert text_width(cut) <= 552


def test_long_labels_are_held_to_their_room_whatever_the_font():
    from llama_index_ragtune.evaluation.chart_text import fit_label, text_width
    from llama_index_ragtune.evaluation.svg_charts import Series, metric_bars, timing_bars

    assert fit_label("ndcg@10", 234) == ("ndcg@10", "")
    cut, attributes = fit_label("M" * 60, 234)
    length = float(re.search(r'textLength="([\d.]+)"', attributes).group(1))
    assert length == pytest.approx(text_width(cut), abs=0.1) and length <= 234
    assert 'lengthAdjust="spacingAndGlyphs"' in attributes
    names = ["answer_groundedness_score_of_the_tuned_model_on_dev", "ndcg@10"]
    svg = metric_bars([Series("after", "#2563eb", {m: 0.5 for m in names})], names, "t")
    assert svg.count("textLength=") == 1  # the long name only
    assert "textLength=" in timing_bars({"W" * 80: 2.0, "index": 1.0}, "timings")


MEASURE = (
    "<script>addEventListener('load',()=>{const out=[];"
    "for(const s of document.querySelectorAll('svg.chart')){const v=s.viewBox.baseVal;"
    "for(const e of s.querySelectorAll('text,rect,line,circle,path')){"
    "if(e.closest('[transform]'))continue;const b=e.getBBox();"
    "if(![b.x,b.y,b.width,b.height].every(Number.isFinite)||b.x<v.x-2||b.y<v.y-2||"
    "b.x+b.width>v.x+v.width+2||b.y+b.height>v.y+v.height+2)"
    "out.push([s.getAttribute('aria-label').slice(0,40),e.tagName,Math.round(b.x),"
    "Math.round(b.width),(e.textContent||'').slice(0,20)])}}"
    "document.body.dataset.outside=JSON.stringify(out);"
    "document.body.dataset.charts=document.querySelectorAll('svg.chart').length})</script>"
)


def _edge_results() -> EvaluationResults:
    """Names of wide letters, control characters and ordinary long words; one question,
    none, one kind of question, identical probabilities, a zero timing."""
    results = sample_results(n_test=6)
    retrieval = results.retrieval
    retrieval[0].name = "W" * 300
    retrieval[1].stage = "s\n" * 300
    retrieval[2].metrics["MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM"] = 0.5
    retrieval[2].metrics["answer_groundedness_score_of_the_tuned_model_on_dev"] = 0.7
    retrieval[2].latency_ms = retrieval[2].latency_ms[:1]
    results.reranking[0].latency_ms = []
    before, after = results.generation
    before.name = "m\x00" * 120
    before.refusal.should_refuse = [1] * 6  # one kind of question only
    after.refusal.probabilities = [0.5] * 6
    results.timings = {"\x00" * 50: 3.0, "x" * 10_000: 1.0, "nothing": 0.0}
    return results


def test_every_chart_stays_inside_its_box_in_headless_chromium(tmp_path):
    browser = chromium()
    html = render_html(_edge_results())
    dom, stderr = measured_dom(browser, html, tmp_path, MEASURE, console=True)

    assert data_attribute(dom, "charts") == html.count('<svg class="chart')
    outside = data_attribute(dom, "outside")
    assert outside == []  # was: labels drawn up to 522 px past the chart's left edge
    assert [line for line in stderr.splitlines() if ":CONSOLE" in line] == []


# ---------------------------------------------------------------------- control characters
CONTROL = "\x1b]0;pwned\x07\x1b[2J\x00\x9b"  # set the title, clear the screen, NUL, C1 CSI


def _controls(text: str) -> list[str]:
    """Control characters other than tab, line feed, carriage return and form feed."""
    import unicodedata

    return [c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f"]


def test_control_characters_reach_neither_the_page_nor_the_summary():
    results = sample_results(n_test=4)
    results.title = f"Report {CONTROL}"
    results.notes = f"first line {CONTROL}\nsecond line"
    results.retrieval[0].name = f"bm25{CONTROL}"
    results.retrieval[1].stage = f"before{CONTROL}"
    results.retrieval[2].metrics[f"ndcg{CONTROL}@10"] = 0.5
    results.generation[0].refusal.policy = f"decoder{CONTROL}"
    results.decisions[0].reason = f"because{CONTROL}"
    results.timings[f"step{CONTROL}"] = 1.0
    html, markdown = render_html(results), render_markdown(results)
    assert _controls(html) == [] and _controls(markdown) == []
    assert "0;pwned\ufffd" in html and "0;pwned\ufffd" in markdown  # shown, not run
    assert "\nsecond line" in html  # the notes keep their line breaks (shown pre-wrapped)


def test_an_error_naming_a_key_shows_its_control_characters_as_escapes(tmp_path, capsys):
    data = json.loads(sample_results(n_test=3).to_json())
    data["retrieval"][0]["metrics"][f"x{CONTROL}\u202e"] = "high"
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert _controls(err) == [] and "\u202e" not in err
    assert r"metrics.x\x1b]0;pwned\x07\x1b[2J\x00\x9b\u202e': expected a finite number" in err
