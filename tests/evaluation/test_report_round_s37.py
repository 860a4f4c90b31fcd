"""Hostile-input battery (round s37) on the evaluation reports: bidi controls in names,
Markdown tables of the retrieval / generation reports, strict report JSON, and long
unbroken names in the HTML page (measured in headless Chromium)."""

import html
import json
import re

import pytest
from dashboard_fixture import sample_results
from headless_chromium import chromium, data_attribute, measured_dom  # tests/evaluation

from llama_index_ragtune.evaluation.dashboard import render_html, write_report
from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
from llama_index_ragtune.evaluation.generation_report import GenerationReport
from llama_index_ragtune.evaluation.report import (
    QueryResult,
    RetrievalReport,
    compare_reports,
    markdown_cell,
    reports_table,
)
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.evaluation.svg_charts import isolate_bidi

RLO, FSI, PDI = "\u202e", "\u2068", "\u2069"
EMBEDDINGS = {"\u202a", "\u202b", "\u202d", "\u202e"}  # LRE, RLE, LRO, RLO
ISOLATES = {"\u2066", "\u2067", "\u2068"}  # LRI, RLI, FSI


def _open_at_boundaries(text: str, boundaries: str) -> list[int]:
    """Offsets of ``boundaries`` characters reached while a bidi embedding or override is
    still open (it would reorder the text after the string that opened it)."""
    stack: list[str] = []
    leaks = []
    for offset, ch in enumerate(text):
        if ch in EMBEDDINGS:
            stack.append("E")
        elif ch == "\u202c" and stack and stack[-1] == "E":  # PDF
            stack.pop()
        elif ch in ISOLATES:
            stack.append("I")
        elif ch == PDI and "I" in stack:
            while stack.pop() != "I":
                pass
        elif ch in boundaries and stack:
            leaks.append(offset)
        elif ch == "\n":
            stack.clear()  # a paragraph ends every embedding
    return leaks


def _hostile_bidi_results() -> EvaluationResults:
    results = EvaluationResults(
        title=f"Report {RLO}evil",
        dataset_name=f"shop{RLO}",
        queries={f"test{RLO}": 40},
        bundle_version=f"v1{RLO}",
        created="2026-01-01T00:00:00+00:00",
        notes=f"note {RLO}reversed",
    )
    results.add_retrieval(f"hyb{RLO}rid", "before", {f"ndcg{RLO}@10": 0.5}, [1.0, 2.0])
    results.add_retrieval(f"hyb{RLO}rid", f"after{RLO}", {f"ndcg{RLO}@10": 0.6}, [1.0, 3.0])
    results.add_retrieval("plain", "after", {"odd_score": 7.0, f"x{RLO}": 3.0}, [2.0])
    for stage in ("before", "after"):
        results.add_generation(
            f"g{PDI}{RLO}",  # a stray PDI first: it must not close the isolate early
            stage,
            {"answer_rate": 0.8},
            [500.0, 900.0],
            [0.2, 0.7],
            [0, 1],
            0.5,
            f"pol{RLO}",
        )
    results.add_decision("encoder", True, f"ndcg{RLO}@10", 0.5, 0.6, 0.005, f"why{RLO} 0.6 > 0.5")
    results.timings = {f"step{RLO}": 2.0, "other": 1.0}
    return results


def test_a_bidi_override_in_any_string_stays_inside_it_in_html_and_svg():
    html = render_html(_hostile_bidi_results(), source=f"eval{RLO}.json")
    assert html.count(RLO) > 20  # the strings are shown (not dropped) ...
    assert _open_at_boundaries(html, '<"') == []  # ... and closed before any markup


def test_a_bidi_override_in_any_string_stays_inside_its_markdown_cell():
    markdown = render_markdown(_hostile_bidi_results())
    assert markdown.count(RLO) > 10
    assert _open_at_boundaries(markdown.replace("\\|", ""), "|\n") == []


def test_a_character_reference_in_a_name_stays_text_in_markdown():
    results = _hostile_bidi_results()
    results.generation[1].name = "g&#x202e;"  # a renderer decodes it into U+202E
    results.generation[1].refusal.policy = "R&amp;D"
    markdown = render_markdown(results)
    assert "g&amp;#x202e;" in markdown and "R&amp;amp;D" in markdown
    shown = html.unescape(markdown)  # what a Markdown renderer displays
    assert "g&#x202e;" in shown and "R&amp;D" in shown
    assert _open_at_boundaries(shown.replace("\\|", ""), "|\n:") == []


def test_isolate_bidi_leaves_plain_text_alone_and_closes_what_a_name_opens():
    assert isolate_bidi("hybrid · after") == "hybrid · after"
    assert FSI not in render_html(sample_results())  # a report without bidi text is unchanged
    assert isolate_bidi("\u05e9\u05dc\u05d5\u05dd") == FSI + "\u05e9\u05dc\u05d5\u05dd" + PDI
    assert isolate_bidi(f"{PDI}{RLO}x") == f"{FSI}{RLO}x{PDI}"  # the stray PDI dropped
    assert isolate_bidi("\u2067a") == FSI + "\u2067a" + PDI + PDI  # an open RLI closed too


def _columns(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line)) - 1


@pytest.mark.parametrize("name", ["bm25 | fast", "two\nlines", "a\u2028b", "<script>x</script>"])
def test_retrieval_report_tables_keep_their_columns_with_any_name(name):
    before = RetrievalReport(
        [QueryResult("q1", {"recall@10": 1.0}, ["d1"], 2.0)], (10,), ("recall",), name=name
    )
    after = RetrievalReport(
        [QueryResult("q1", {"recall@10": 0.5}, ["d2"], 3.0)], (10,), ("recall",), name="t"
    )
    for table, width in (
        (reports_table({name: before}, keys=["recall@10"]), 3),
        (compare_reports(before, after), 5),
        (before.to_markdown(), 2),
    ):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert rows and all(_columns(line) == width for line in rows), table
        assert "<script>" not in table
    footer = before.to_markdown().splitlines()[-1]
    assert footer.startswith(f"**{markdown_cell(name)}**") and "\n" not in markdown_cell(name)


def test_generation_report_tables_keep_their_columns_with_any_name():
    rows = [
        {"answerable": True, "refused": False, "uncited": False, "f1": 1.0, "refusal_signals": {}},
        {"answerable": False, "refused": True, "uncited": False, "f1": 0.5, "refusal_signals": {}},
    ]
    for row, score in zip(rows, (0.2, 0.9), strict=True):
        row["refusal_signals"]["sig | nal\n<i>x</i>"] = score
    before = GenerationReport(rows=rows, metric_keys=("f1",), name="base | v1\nx")
    after = GenerationReport(rows=rows, metric_keys=("f1",), name="<b>tuned</b>")
    assert any(key.startswith("refusal_auc_sig") for key in before.aggregate)
    for table, width in ((before.compare(after), 4), (before.to_markdown(), 2)):
        lines = [line for line in table.splitlines() if line.startswith("|")]
        assert lines and all(_columns(line) == width for line in lines), table
        assert "<b>" not in table and "<i>" not in table


def _refuse_constant(name: str) -> float:
    raise ValueError(f"not strict JSON: {name}")


def test_retrieval_report_json_is_strict_and_reads_its_nulls_back(tmp_path):
    nan = float("nan")
    report = RetrievalReport(
        [
            QueryResult("q1", {"recall@10": 1.0}, ["d1", "d2"], nan, scores=[nan, 0.5]),
            QueryResult("q2", {"recall@10": 0.0}, ["d3"], 4.0, scores=[float("inf")]),
        ],
        (10,),
        ("recall",),
        name="nan scores",
    )
    text = report.to_json(tmp_path / "report.json")
    data = json.loads(text, parse_constant=_refuse_constant)  # no NaN / Infinity tokens
    assert data["queries"][0]["latency_ms"] is None
    assert data["queries"][0]["scores"] == [None, 0.5]
    loaded = RetrievalReport.from_json(tmp_path / "report.json")
    assert loaded["recall@10"] == 0.5
    assert loaded.rows[0].latency_ms != loaded.rows[0].latency_ms  # NaN again, not a crash
    assert loaded.rows[0].scores == [None, 0.5]
    nulled = json.loads(text)
    nulled["queries"][1]["metrics"]["recall@10"] = None
    assert RetrievalReport.from_dict(nulled).rows[1].metrics["recall@10"] != 0.0


MEASURE = (
    "<script>addEventListener('load',()=>{document.body.dataset.overflow=JSON.stringify("
    "[...document.querySelectorAll('.table-wrap')].map(e=>e.scrollWidth-e.clientWidth))})"
    "</script>"
)


def test_long_unbroken_names_do_not_widen_the_tables_past_the_page(tmp_path):
    browser = chromium()
    results = sample_results(n_test=5)
    long = "W" * 300
    results.add_retrieval(long, "after", {"ndcg@10": 0.5, long: 0.9}, [1.0])
    results.add_decision("decoder", False, "answer_f1", 0.5, 0.4, 0.01, "R" * 400)
    html = write_report(results, tmp_path / "report").html.read_text(encoding="utf-8")
    dom = measured_dom(browser, html, tmp_path, MEASURE)[0]
    overflow = data_attribute(dom, "overflow")
    assert len(overflow) >= 4 and max(overflow) <= 2, overflow  # was 7,994 px of scrolling
