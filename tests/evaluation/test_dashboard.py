"""The evaluation report: a self-contained HTML page with SVG charts, a Markdown summary,
business proxies, escaping of hostile strings, ``ragtune report``, and a real headless
Chromium rendering the page (skipped when Debian's ``chromium`` is not installed)."""

import re
import subprocess
from html.parser import HTMLParser

import pytest
from dashboard_fixture import sample_results
from headless_chromium import chromium  # tests/evaluation

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation.dashboard import render_html, write_report
from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
from llama_index_ragtune.evaluation.report_summary import (
    business_proxies,
    headline,
    reference_indices,
)
from llama_index_ragtune.evaluation.results import (
    EvaluationFileError,
    RefusalScores,
    SystemResult,
)
from llama_index_ragtune.evaluation.svg_charts import PALETTE, percentile

HOSTILE = '<script>document.title="owned"</script>'
HOSTILE_IMG = "<img src=x onerror=alert(1)>"
# one bar chart + one latency chart per stage (3), two reliability diagrams, the timings
EXPECTED_CHARTS = 3 * 2 + 2 + 1


def hostile_results():
    """The fixture with attacker-controlled strings wherever the JSON holds free text."""
    results = sample_results()
    results.title = f"Report {HOSTILE}"
    results.notes = f"notes {HOSTILE_IMG} | pipe [link](javascript:alert(1))"
    results.retrieval[0].name = HOSTILE
    results.generation[1].metrics[f"{HOSTILE_IMG}@10"] = 0.5
    results.decisions[0].reason = f"because {HOSTILE}"
    results.timings[HOSTILE_IMG] = 1.0
    return results


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the page's visible text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


# ---------------------------------------------------------------- business proxies
def test_business_proxies_from_rates_latencies_and_refusal_scores():
    system = SystemResult("tuned", "after", {"refusal_rate": 0.25}, [900.0, 1000.0, 1100.0, 3000.0])
    proxies = business_proxies(system)
    assert proxies.answer_rate == 0.75 and proxies.refusal_rate == 0.25
    assert proxies.p50_ms == 1050.0
    assert proxies.p95_ms == pytest.approx(1100.0 + 0.85 * 1900.0)  # linear interpolation
    assert proxies.questions == 4
    # no rates in the metrics: refusals counted at the threshold
    scores = RefusalScores([0.1, 0.5, 0.7, 0.2], [0, 1, 1, 0], threshold=0.5)
    derived = business_proxies(SystemResult("base", "before", {}, [], scores))
    assert derived.refusal_rate == 0.5 and derived.answer_rate == 0.5
    assert derived.p50_ms is None and derived.questions == 4
    assert percentile([], 50) is None and percentile([7.0], 95) == 7.0


def test_tuned_systems_are_compared_with_their_own_baseline():
    systems = [
        SystemResult("bm25", "before", {}),
        SystemResult("hybrid", "before", {}),
        SystemResult("hybrid", "after", {}),
        SystemResult("hybrid + rerank", "after", {}),
    ]
    assert reference_indices(systems) == [None, None, 1, 0]
    assert headline(systems) == (systems[3], systems[0])
    unmarked = [SystemResult("a", "v1", {}), SystemResult("b", "v2", {})]
    assert reference_indices(unmarked) == [None, 0]


# ---------------------------------------------------------------- HTML
def test_html_is_self_contained_with_every_chart_and_table():
    html = render_html(sample_results(), source="evaluation.json")
    page = _parse(html)
    charts = [a for tag, a in page.tags if tag == "svg" and "chart" in a.get("class", "")]
    assert len(charts) == EXPECTED_CHARTS
    kinds = [a["class"].split()[1] for a in charts]
    assert kinds.count("bars") == 3 and kinds.count("latency") == 3
    assert kinds.count("calibration") == 2 and kinds.count("timings") == 1
    # nothing to fetch and nothing to run
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in page.tags if "src" in a or (a.get("href") or "#").startswith("h")]
    assert "default-src 'none'" in html
    text = " ".join(page.text)
    # headline business proxies of the tuned decoder, and the decisions
    tuned = business_proxies(sample_results().generation[1])
    assert f"{tuned.answer_rate:.1%}" in text and f"{tuned.refusal_rate:.1%}" in text
    assert "Time to answer · p95" in text and "kept champion" in text and "promoted" in text
    assert "refusal threshold 0.42" in text and "perfectly calibrated" in text
    assert "total 17 min 09 s" in text


def test_html_escapes_every_string_from_the_json():
    html = render_html(hostile_results(), source=HOSTILE)
    page = _parse(html)
    assert not [t for t, _ in page.tags if t in ("script", "img")]
    assert not [a for _, a in page.tags if any(k.startswith("on") for k in a)]
    assert "<script>" not in html and "<img" not in html
    text = "".join(page.text)
    assert HOSTILE in text and HOSTILE_IMG in text  # shown as text
    assert f"<title>Report {HOSTILE} · ragtune report</title>" not in html


def test_markdown_has_the_tables_and_escapes_strings():
    md = render_markdown(sample_results())
    for heading in (
        "## Business proxies",
        "## Champion / challenger",
        "## Retrieval",
        "## Reranking",
        "## Generation",
        "## Refusal calibration",
        "## Timings",
    ):
        assert heading in md
    assert "| ndcg@10 | 0.584 | 0.642 | 0.731 (+0.089) |" in md
    assert "| fusion | kept champion | ndcg@10 | 0.731 | 0.733 | +0.002 | 0.005 |" in md
    assert "<svg" not in md
    hostile = render_markdown(hostile_results())
    assert "<script" not in hostile and "<img" not in hostile
    assert "\\[link\\](javascript:alert(1))" in hostile and "\\| pipe" in hostile
    for line in hostile.splitlines():  # every table row keeps its column count
        if line.startswith("| part |"):
            columns = line.count(" | ")
        if line.startswith("| encoder |"):
            assert line.replace("\\|", "").count(" | ") == columns


def test_write_report_validates_first_and_leaves_no_temp_files(tmp_path):
    paths = write_report(sample_results(), tmp_path / "report")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.html", "report.md"]
    old = paths.html.read_text(encoding="utf-8")
    broken = sample_results()
    broken.retrieval[1].metrics["ndcg@10"] = float("inf")
    with pytest.raises(EvaluationFileError, match=r"retrieval\[1\].metrics.ndcg@10"):
        write_report(broken, tmp_path / "report")
    assert paths.html.read_text(encoding="utf-8") == old


# ---------------------------------------------------------------- CLI
def test_ragtune_report_writes_both_files_and_prints_their_paths(tmp_path, capsys):
    source = sample_results().save(tmp_path / "evaluation.json")
    assert main(["report", str(source), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [str(tmp_path / "out" / "report.html"), str(tmp_path / "out" / "report.md")]
    assert "<svg" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert main(["report", str(source)]) == 0  # default: beside the JSON
    assert (tmp_path / "report.md").is_file()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "argument EVAL_JSON: file not found: {path}"),
        ("{not json", "{path}: not valid JSON (line 1, column 2"),
        ('{"format": ' + "9" * 5000 + "}", "{path}: not valid JSON (Exceeds the limit"),
        ("[" * 100_000 + "]" * 100_000, "{path}: not valid JSON (nested too deeply"),
        ('{"format": "ragtune-evaluation", "format_version": 1}', "{path}: field 'title': missing"),
    ],
)
def test_ragtune_report_bad_input_is_one_line_without_traceback(
    tmp_path, capsys, content, expected
):
    path = tmp_path / "evaluation.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"ragtune report: error: {expected.format(path=path)}")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- real Chromium
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def test_report_renders_in_headless_chromium_with_its_charts(tmp_path):
    browser = chromium()
    image = pytest.importorskip("PIL.Image")
    paths = write_report(hostile_results(), tmp_path / "report")
    url = paths.html.resolve().as_uri()
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True
    )
    page = _parse(dom.stdout)
    charts = [a for tag, a in page.tags if tag == "svg" and "chart" in a.get("class", "")]
    assert len(charts) == EXPECTED_CHARTS
    tags = [t for t, _ in page.tags]
    written = [t for t, _ in _parse(paths.html.read_text(encoding="utf-8")).tags]
    for mark in ("rect", "circle", "line", "path", "polyline", "text", "tspan", "title"):
        assert tags.count(mark) == written.count(mark) > 0, mark  # every mark survived parsing
    assert "footer" in tags  # parsed to the end
    assert "script" not in tags and "img" not in tags  # the hostile strings stayed text
    assert HOSTILE in "".join(page.text)
    # No console message: no SVG attribute error, no blocked (CSP) load, no script error.
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []

    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,2400", url],
        capture_output=True,
        timeout=60,
        check=True,
    )
    with image.open(shot) as png:
        assert png.size == (1280, 2400)
        pixels = png.convert("RGB")
        colors = pixels.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200  # text, cards and charts, not a blank page
    painted = {f"#{r:02x}{g:02x}{b:02x}" for _, (r, g, b) in colors}
    # the retrieval "hybrid · after" bars and the "BM25" hue are painted in the first screen
    assert PALETTE[1] in painted


def test_chart_geometry_is_finite():
    """No NaN / inf coordinates reach the SVG, even for a single query or equal latencies."""
    results = sample_results(n_test=1)
    for system in results.retrieval:
        system.latency_ms = [5.0]
    html = render_html(results)
    assert not re.search(r'="[^"]*(nan|inf)[^"]*"', html.lower())


def test_a_run_with_retrieval_only_renders_without_generation_sections():
    from llama_index_ragtune.evaluation import EvaluationResults, render_html, render_markdown

    results = EvaluationResults(
        title="bm25 only", dataset_name="d", queries={"test": 3}, bundle_version="v1"
    )
    results.add_retrieval("bm25", "before", {"ndcg@10": 0.5}, latency_ms=[1.0, 2.0, 4.0])
    html = render_html(results)
    page = _parse(html)
    kinds = [a["class"] for t, a in page.tags if t == "svg"]
    assert kinds == ["chart bars", "chart latency"]
    text = " ".join(page.text)
    assert "No generation results" in text and "No champion / challenger decisions" in text
    assert 'id="refusal"' not in html and 'id="timings"' not in html
    md = render_markdown(results)
    assert "## Business proxies" not in md and "| latency p50 | 2.0 ms |" in md
