"""Round s42: the evaluation report and dashboard under hostile input.

Markdown cells render literally (emphasis, strikethrough, math, headings, list markers),
the public renderers validate like ``write_report``, absurd numbers stay short, huge
reports stay small pages, refusal calibration is no longer quadratic, blank names and
self-holding dicts are refused by name. Real renderers throughout: markdown-it for
CommonMark + GFM tables / strikethrough, headless Chromium for the page.
"""

from __future__ import annotations

import html
import random
import re
import time

import pytest
from headless_chromium import chromium, data_attribute, measured_dom  # tests/evaluation

from llama_index_ragtune.evaluation import GenerationReport, RetrievalReport
from llama_index_ragtune.evaluation.dashboard import (
    MAX_CHART_METRICS,
    MAX_SHOWN_DECISIONS,
    MAX_SHOWN_METRICS,
    MAX_SHOWN_STEPS,
    render_html,
    write_report,
)
from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
from llama_index_ragtune.evaluation.refusal_calibration import (
    choose_refusal_threshold,
    refusal_auc,
)
from llama_index_ragtune.evaluation.report import (
    QueryResult,
    compare_reports,
    markdown_cell,
    reports_table,
)
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.evaluation.results_reading import EvaluationFileError
from llama_index_ragtune.evaluation.svg_charts import Series, latency_boxes

HOSTILE_LABELS = [
    "__init__",
    "*bold*",
    "**strong**",
    "~~gone~~",
    "~gone~",
    "`code`",
    "a*b*c",
    "_x_",
    "x__y__z",
    "$x^2$",
    "# heading",
    "Run #",
    "- item",
    "+ item",
    "1. item",
    "2) item",
    "---",
    "- - -",
    "> quote",
    "[link](http://evil.example)",
    "![img](http://evil.example/x.png)",
    "<b>raw</b>",
    "a | b",
    "back\\slash\\",
    "&amp;",
    "[ref]: http://evil.example",
    "😀_a_😀",
]


def _markdown_it():
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _shown(rendered: str) -> str:
    """The text a reader sees in rendered HTML."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_a_markdown_cell_renders_literally_in_a_cell_a_line_a_quote_and_bold(label):
    md = _markdown_it()
    cell = markdown_cell(label)
    contexts = {
        "cell": (f"| h |\n| --- |\n| {cell} |\n", {"table", "thead", "tbody", "tr", "th", "td"}),
        "line": (f"{cell}\n", {"p"}),
        "quote": (f"> {cell}\n", {"blockquote", "p"}),
        "bold": (f"**{cell}** — x\n", {"p", "strong"}),
    }
    for name, (source, allowed) in contexts.items():
        rendered = md.render(source)
        tags = set(re.findall(r"<(\w+)", rendered))
        assert tags <= allowed, (name, label, cell, rendered)  # no em, s, code, a, h1, li
        text = _shown(rendered)
        if name == "cell":
            text = text.removeprefix("h").strip()
        expected = label + (" — x" if name == "bold" else "")
        assert text == expected, (name, label, cell, rendered)


def test_good_names_and_numbers_stay_readable_in_markdown():
    for plain in ("answer_rate", "ndcg@10", "hybrid · after", "1.5", "+0.010", "-0.5", "C#"):
        assert markdown_cell(plain) == plain


def test_report_md_shows_hostile_names_as_written(tmp_path):
    md = _markdown_it()
    results = EvaluationResults(
        title="# __init__ results #",
        dataset_name="*shop*",
        queries={"~~test~~": 2},
        bundle_version="v1",
        notes="- 1. $x$ ~~struck~~ `code`",
    )
    results.add_retrieval("__init__", "before", {"ndcg@10": 0.5}, [1.0, 2.0])
    results.add_retrieval("__init__", "after", {"ndcg@10": 0.6, "*m*": 0.4}, [1.0, 2.0])
    results.add_decision("encoder", True, "ndcg@10", 0.5, 0.6, 0.01, "**forced** _by_ ~~me~~")
    results.timings["~~parse~~"] = 1.0
    rendered = md.render(write_report(results, tmp_path).markdown.read_text(encoding="utf-8"))
    for tag in ("em", "s", "code", "a", "li", "ol", "ul", "hr", "h2 id"):
        assert f"<{tag}>" not in rendered and f"<{tag} " not in rendered, tag
    shown = _shown(rendered)
    for text in ("# __init__ results #", "*shop*", "~~test~~ 2", "__init__ (before)", "*m*"):
        assert text in shown, text
    assert "- 1. $x$ ~~struck~~ `code`" in shown and "**forced** _by_ ~~me~~" in shown
    assert rendered.startswith("<h1>") and rendered.count("<h1>") == 1  # the title only


def test_retrieval_report_tables_stay_tables_after_escaping():
    md = _markdown_it()
    before = RetrievalReport(
        [QueryResult("q1", {"recall@10": 1.0}, ["d1"], 2.0)], (10,), ("recall",), name="__a__"
    )
    after = RetrievalReport(
        [QueryResult("q1", {"recall@10": 0.5}, ["d2"], 3.0)], (10,), ("recall",), name="*b*"
    )
    for table in (
        compare_reports(before, after),
        reports_table({"__a__": before}, keys=["recall@10"]),
        before.to_markdown(),
    ):
        rendered = md.render(table).replace("<strong>__a__</strong>", "")  # the footer's bold
        assert "<table>" in rendered and "<em>" not in rendered and "<strong>" not in rendered


# ------------------------------------------------------------------ the renderers validate
def _results() -> EvaluationResults:
    results = EvaluationResults(
        title="t", dataset_name="d", queries={"test": 2}, bundle_version="v1"
    )
    results.add_retrieval("hybrid", "before", {"ndcg@10": 0.5}, latency_ms=[1.0, 2.0])
    results.add_retrieval("hybrid", "after", {"ndcg@10": 0.6}, latency_ms=[1.0, 2.0])
    return results


def _break(change):
    results = _results()
    change(results)
    return results


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "title", 5), "title"),
        (lambda r: r.retrieval[0].metrics.update({"ndcg@10": float("nan")}), "metrics.ndcg@10"),
        (lambda r: r.retrieval[1].latency_ms.append(float("inf")), r"latency_ms\[2\]"),
        (lambda r: r.retrieval[0].latency_ms.append("3"), r"latency_ms\[2\]"),
        (lambda r: r.retrieval.append({"name": "x"}), r"retrieval\[2\]"),
        (lambda r: setattr(r, "queries", None), "dataset.queries"),
        (lambda r: setattr(r.retrieval[0], "metrics", None), r"retrieval\[0\].metrics"),
        (lambda r: r.retrieval[0].metrics.update({"ndcg@10": {1, 2}}), "metrics.ndcg@10"),
        (lambda r: r.timings.update({"parse": float("nan")}), "timings.parse"),
        (lambda r: setattr(r, "retrieval", None), "retrieval"),
        (lambda r: r.retrieval[0].metrics.update({"\u200b": 0.5}), r"retrieval\[0\].metrics"),
        (lambda r: setattr(r.retrieval[0], "name", "\u200b\u2060"), r"retrieval\[0\].name"),
    ],
)
def test_render_html_and_render_markdown_validate_like_write_report(change, field, tmp_path):
    for render in (render_html, render_markdown, lambda r: write_report(r, tmp_path / "out")):
        with pytest.raises(EvaluationFileError, match=field):
            render(_break(change))
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_renderers_read_a_dict_as_the_evaluation_json_and_refuse_other_types():
    data = _results().to_dict()
    assert render_html(data).count("<svg") >= 2 and "## Retrieval" in render_markdown(data)
    del data["dataset"]
    with pytest.raises(EvaluationFileError, match="dataset"):
        render_markdown(data)
    for bad in (None, "evaluation.json", [1]):
        with pytest.raises(TypeError, match="render_html: expected EvaluationResults"):
            render_html(bad)


def test_a_dict_holding_itself_is_refused_not_walked_forever():
    data = _results().to_dict()
    data["notes"] = data
    start = time.perf_counter()
    with pytest.raises(EvaluationFileError, match="notes"):
        render_html(data)
    assert time.perf_counter() - start < 5


def test_numpy_numbers_set_in_code_render_and_save(tmp_path):
    numpy = pytest.importorskip("numpy")
    results = _results()
    results.retrieval[0].metrics["ndcg@10"] = numpy.float32(0.5)
    results.retrieval[0].latency_ms = numpy.array([1.0, 2.0], dtype=numpy.float32)
    results.queries["test"] = numpy.int64(2)
    assert "0.500" in render_markdown(results)
    loaded = EvaluationResults.load(results.save(tmp_path / "e.json"))  # was a TypeError
    assert loaded.retrieval[0].metrics["ndcg@10"] == 0.5 and loaded.queries == {"test": 2}


# ------------------------------------------------------------------ absurd numbers, huge reports
def test_absurd_magnitudes_are_written_in_scientific_notation():
    results = _results()
    results.retrieval[0].metrics["custom_x"] = 1e300
    results.retrieval[1].metrics["custom_x"] = 5e299
    results.retrieval[1].latency_ms = [1e300, 2e300]
    results.add_decision("encoder", True, "custom_loss", 1e300, 1e299, 1e300, "x")
    results.timings["step"] = 1e300
    markdown = render_markdown(results)
    assert max(map(len, markdown.splitlines())) < 200  # were cells of 301 digits
    assert "1.000e+300" in markdown and "2.778e+296 h" in markdown and "e+297 s" in markdown
    page = render_html(results)
    assert not re.search(r"\d{40}", page)


def _many_metrics(metrics: int, systems: int) -> EvaluationResults:
    results = EvaluationResults(
        title="wide", dataset_name="d", queries={"test": 1}, bundle_version="v1"
    )
    for i in range(systems):
        values = {f"metric_{j}": 0.5 for j in range(metrics)}
        results.add_retrieval(f"s{i // 2}", ("before", "after")[i % 2], values, [1.0])
    return results


def test_thousands_of_metrics_make_a_page_of_the_first_ones_and_a_note():
    results = _many_metrics(3000, 40)  # was a 32 MB page
    page = render_html(results)
    assert len(page) < 2_000_000, len(page)
    assert f"The table shows the first {MAX_SHOWN_METRICS} of 3,000 metrics" in page
    assert f"metric_{MAX_SHOWN_METRICS - 1}<" in page and f"metric_{MAX_SHOWN_METRICS}<" not in page
    chart = page[page.index('<svg class="chart bars"') :]
    chart = chart[: chart.index("</svg>")]
    assert chart.count('class="label"') == MAX_CHART_METRICS
    assert "| metric_2999 |" in render_markdown(results)  # report.md keeps every metric


def test_many_steps_decisions_and_splits_stay_a_small_page():
    results = _results()
    results.timings = {f"step {i}": float(i % 7) for i in range(50_000)}
    for _ in range(5_000):
        results.add_decision("encoder", True, "ndcg@10", 0.5, 0.6, 0.01, "ok")
    results.queries = {f"split{i}": 1 for i in range(5_000)}
    page = render_html(results)
    assert len(page) < 500_000, len(page)  # was 21 MB and a chart 1.3 million px tall
    timings = page[page.index('<section id="timings"') :]
    assert timings.count("<rect") == MAX_SHOWN_STEPS
    assert f"{50_000 - MAX_SHOWN_STEPS + 1:,} other steps" in timings
    assert f"total {'41 h 39 min'}" in timings  # the total counts every step
    assert f"Showing the first {MAX_SHOWN_DECISIONS} of 5,000 decisions" in page
    assert "4,980 more splits" in page
    assert render_markdown(results).count("| encoder |") == 5_000


def test_refusal_calibration_is_not_quadratic_and_scores_as_before():
    rng = random.Random(0)
    for _ in range(200):  # against the pairwise definition, ties included
        n = rng.randint(2, 20)
        probs = [rng.choice([0.0, 0.5, 1.0, round(rng.random(), 1)]) for _ in range(n)]
        answerable = [rng.random() < 0.5 for _ in range(n)]
        pos = [p for p, a in zip(probs, answerable, strict=True) if not a]
        neg = [p for p, a in zip(probs, answerable, strict=True) if a]
        pairs = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
        expected = pairs / (len(pos) * len(neg)) if pos and neg else None
        assert refusal_auc(probs, answerable) == expected
    probs = [rng.random() for _ in range(60_000)]
    answerable = [rng.random() < 0.5 for _ in range(60_000)]
    start = time.perf_counter()
    assert 0.45 < refusal_auc(probs, answerable) < 0.55
    choose_refusal_threshold(probs, answerable)
    assert time.perf_counter() - start < 10  # pairwise: 900 million comparisons


def test_report_tables_show_dashes_for_undefined_values_and_check_their_arguments():
    def report(value, name):
        return RetrievalReport(
            [QueryResult("q1", {"recall@10": value}, ["d1"], 2.0)], (10,), ("recall",), name=name
        )

    table = compare_reports(report(1e-320, "a"), report(0.5, "b"))
    assert "inf" not in table and "| +0.5000 | — |" in table  # Δ% of a denormal base
    assert "nan" not in compare_reports(report(float("nan"), "a"), report(0.5, "b"))
    with pytest.raises(TypeError, match=r"keys=\['recall@10'\]"):
        reports_table({"a": report(0.5, "a")}, keys="recall@10")  # was a column per letter
    with pytest.raises(TypeError, match="compare_reports: keys"):
        compare_reports(report(0.5, "a"), report(0.5, "b"), keys="recall@10")
    for digits, error in ((None, TypeError), (10**6, ValueError), (-1, ValueError)):
        with pytest.raises(error, match="digits"):
            report(0.5, "a").to_markdown(digits=digits)
    rows = [{"answerable": True, "refused": False, "uncited": False, "f1": 1.0}]
    with pytest.raises(ValueError, match="GenerationReport.to_markdown: digits"):
        GenerationReport(rows=rows, metric_keys=("f1",)).to_markdown(digits=99)


def test_an_absurd_and_markdown_looking_page_fits_its_tables_in_headless_chromium(tmp_path):
    browser = chromium()
    results = _many_metrics(400, 4)
    results.retrieval[0].metrics["custom_x"] = 1e300
    results.retrieval[1].metrics["__init__ *x* ~~y~~"] = 123456789e290
    results.timings = {f"step {i}": 1e300 for i in range(400)}
    page = write_report(results, tmp_path / "report").html.read_text(encoding="utf-8")
    measure = (
        "<script>addEventListener('load',()=>{document.body.dataset.m=JSON.stringify({"
        "wrap:[...document.querySelectorAll('.table-wrap')].map(e=>e.scrollWidth-e.clientWidth),"
        "svg:Math.max(...[...document.querySelectorAll('svg')].map(e=>e.getBBox().height)),"
        "page:document.documentElement.scrollWidth-innerWidth})})</script>"
    )
    measured = data_attribute(measured_dom(browser, page, tmp_path, measure)[0], "m")
    assert max(measured["wrap"]) <= 2 and measured["page"] <= 2, measured
    assert measured["svg"] < 6000, measured  # the timings chart: 60 bars, not 400 (10,430 px)


def test_a_six_decade_latency_axis_keeps_its_labels_apart_and_inside():
    svg = latency_boxes([Series("a", "#2563eb", [1.0, 2.0, 1e300])], "t")
    labels = re.findall(r'<text class="axis" x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)">', svg)
    assert 2 <= len(labels) <= 8, labels  # were 19 labels of "5000.00 s", overlapping
    for x, anchor in labels:
        assert anchor == "end" or float(x) + 60 <= 1000  # the last one ends at the edge
    gaps = [float(b[0]) - float(a[0]) for a, b in zip(labels, labels[1:], strict=False)]
    assert min(gaps) > 100, gaps
