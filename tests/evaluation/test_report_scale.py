"""The report of 10,000 systems: a page people can open (the best systems charted and
tabled, a note on the rest), every system still in the Markdown."""

from __future__ import annotations

import random
import subprocess

from headless_chromium import chromium  # tests/evaluation
from test_dashboard import CHROMIUM_FLAGS, _parse  # tests/evaluation

from llama_index_ragtune.evaluation.dashboard import MAX_SHOWN_SYSTEMS, write_report
from llama_index_ragtune.evaluation.results import EvaluationResults


def _many_systems(count: int, queries: int = 20) -> EvaluationResults:
    rng = random.Random(0)
    results = EvaluationResults(
        title="many systems",
        dataset_name="grid",
        queries={"test": queries},
        bundle_version="v1",
        created="2026-01-01T00:00:00+00:00",
    )
    results.add_retrieval("bm25", "before", {"ndcg@10": 0.5}, [1.0] * queries)
    for i in range(count):
        score = 0.999 if i == count // 2 else rng.uniform(0.1, 0.9)
        results.add_retrieval(
            f"grid-{i:05d}",
            "after",
            {"ndcg@10": score},
            [rng.uniform(1, 9) for _ in range(queries)],
        )
    return results


def test_ten_thousand_systems_give_a_page_of_the_best_ones_and_a_note(tmp_path):
    # Every system was a bar, a box of dots and a table column, each name 8 times: 41 MB
    # for 10,000 systems (a 10,000-column table no browser makes readable).
    results = _many_systems(10_000)
    paths = write_report(results, tmp_path)
    html = paths.html.read_text(encoding="utf-8")
    assert len(html) < 400_000  # was about 4,100 characters a system
    assert "grid-05000" in html and "bm25" in html  # the best one, and its baseline
    assert f"Showing the {MAX_SHOWN_SYSTEMS} best of 10,001 systems by ndcg@10" in html
    assert "the other 9,960 are in report.md" in html
    shown = sum(f"grid-{i:05d}" in html for i in range(10_000))
    assert shown == MAX_SHOWN_SYSTEMS
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert all(f"grid-{i:05d}" in markdown for i in range(0, 10_000, 997))  # nothing lost


def test_the_page_grows_with_the_shown_systems_not_with_all_of_them(tmp_path):
    small = write_report(_many_systems(200), tmp_path / "a").html.stat().st_size
    large = write_report(_many_systems(4_000), tmp_path / "b").html.stat().st_size
    assert large < small * 1.05


def test_a_few_systems_are_all_shown_without_a_note(tmp_path):
    html = write_report(_many_systems(5), tmp_path).html.read_text(encoding="utf-8")
    assert all(f"grid-{i:05d}" in html for i in range(5)) and "Showing the" not in html


def test_the_page_of_ten_thousand_systems_renders_in_headless_chromium(tmp_path):
    browser = chromium()
    paths = write_report(_many_systems(10_000), tmp_path / "report")
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", paths.html.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    page = _parse(dom.stdout)
    tags = [tag for tag, _ in page.tags]
    assert "footer" in tags and tags.count("svg") >= 2  # parsed to the end, charts drawn
    assert [line for line in dom.stderr.splitlines() if ":CONSOLE" in line] == []
