"""Hostile-input costs: how the time of each once-quadratic path grows with its input.

Answers, pages and reports built to be expensive - unclosed quotation marks, thousands
of quotes after one citation, thousands of claims next to thousands of citations or
quotes, a ``<pre>`` of one long backtick run, an evaluation of 10,000 systems - each cost
time quadratic in their size before they were fixed. The unit tests check these paths by
their results and by operation counts; the wall-clock cost lives here.

Each case is timed at a size ``n`` and at ``2n`` (the median of ``--repeats`` runs, after
one untimed run at a tenth of ``n``); the growth ratio ``seconds(2n) / seconds(n)`` is
about 2 for linear work and about 4 for quadratic work. ``--scale`` multiplies every
``n`` (``0.01`` for a quick check; ratios of very short timings are noisy).

Cases (``n`` at ``--scale 1``):

* ``check_quotes``, ``n`` unclosed ``\u201c`` marks (30,000);
* ``check_quotes``, one citation, ``10 n`` spaces, then ``n`` quotes (3,000);
* ``uncited_claims``, ``n`` citations then ``n`` claims (10,000);
* ``claim_spans``, ``n`` quotes then ``n`` claims (10,000);
* ``fill_metadata`` of an answer of ``n`` quoted, cited claims (3,000);
* ``StructuredHTMLNodeParser`` on a ``<pre>`` of ``n`` backticks, lxml and html.parser
  (100,000);
* the Markdown and HTML parsers on one line of ``n`` words (100,000; about 690 KB);
* ``render_markdown`` and ``render_html`` of an evaluation of ``n`` systems (10,000).

Example::

    ragtune bench hostile --out benchmarks/results
    python -m benchmarks.hostile_inputs --scale 0.1 --repeats 5 --out runs/hostile-quick
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._paths import display_path
from benchmarks.load import _cores, _load
from llama_index_ragtune.commands.options import bounded

DEFAULT_OUT = "benchmarks/results"
STEM = "hostile_inputs"
SOURCES = ["Paris is the capital of France.", "Rome is the capital of Italy.", "x y z"]


@dataclass
class Case:
    """One hostile input: ``prepare(n)`` builds it (untimed) and returns the call to time."""

    name: str
    operation: str
    input: str
    n: int
    prepare: Callable[[int], Callable[[], Any]]


# ------------------------------------------------------------------------- the cases


def _unclosed_quotes(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.grounding import check_quotes

    answer = "\u201c" * n
    return lambda: check_quotes(answer, SOURCES)


def _quotes_after_one_citation(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.grounding import check_quotes

    answer = "[1] " + " " * (10 * n) + '"a b c"' * n
    return lambda: check_quotes(answer, SOURCES)


def _claims_and_citations(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.query_engine.post_check import uncited_claims

    answer = "[1]" * n + " A." * n
    return lambda: uncited_claims(answer, 1)


def _claims_and_quotes(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.query_engine.post_check import claim_spans

    answer = '"a" ' * n + " A." * n
    return lambda: claim_spans(answer)


def _long_cited_answer(n: int) -> Callable[[], Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    from llama_index_ragtune.grounding import parse_answer
    from llama_index_ragtune.query_engine.response_metadata import base_metadata, fill_metadata

    nodes = [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=f"Fact {i}."), score=1.0) for i in range(3)
    ]
    answer = parse_answer('A: "x y z w" [1]. ' * n, len(nodes))
    texts = [node.node.text for node in nodes]
    # fill_metadata writes into the dict: a fresh one per call (a copy, not the timed work)
    return lambda: fill_metadata(base_metadata("q", nodes), nodes, answer, texts)


def _backtick_pre(features: str) -> Callable[[int], Callable[[], Any]]:
    def prepare(n: int) -> Callable[[], Any]:
        from llama_index.core import Document

        from llama_index_ragtune.node_parser import StructuredHTMLNodeParser

        parser = StructuredHTMLNodeParser(
            tokenizer=str.split, chunk_size=64, count_metadata=False, parser_features=features
        )
        document = Document(text="<pre>" + "`" * n + "</pre><p>after</p>", id_="page")
        return lambda: parser.get_nodes_from_documents([document])

    return prepare


def _single_line(kind: str) -> Callable[[int], Callable[[], Any]]:
    def prepare(n: int) -> Callable[[], Any]:
        from llama_index.core import Document

        from llama_index_ragtune import node_parser

        parser_class = getattr(node_parser, f"Structured{kind}NodeParser")
        parser = parser_class(tokenizer=str.split, chunk_size=254, count_metadata=False)
        document = Document(text=" ".join(f"w{i}" for i in range(n)), id_="line")
        return lambda: parser.get_nodes_from_documents([document])

    return prepare


def _systems(n: int) -> Any:
    from llama_index_ragtune.evaluation.results import EvaluationResults

    results = EvaluationResults(
        title="hostile", dataset_name="synthetic", queries={"test": 2}, bundle_version="v"
    )
    for i in range(n):
        stage = "before" if i % 2 else "after"
        results.add_retrieval(f"s{i}", stage, {"ndcg@10": 0.5}, [1.0, 2.0])
    return results


def _markdown_report(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown

    results = _systems(n)
    return lambda: render_markdown(results)


def _html_report(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.evaluation.dashboard import render_html

    results = _systems(n)
    return lambda: render_html(results)


def _abbreviations(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.data.sentences import split_sentences

    text = "See fig. 2 and " * n + "the end."
    return lambda: split_sentences(text)


def _copies_of_a_passage(n: int) -> Callable[[], Any]:
    from llama_index_ragtune.data.schema import RetrievalDataset

    corpus = {f"page-{i}": "Returns are accepted within 14 days." for i in range(n)}
    pairs = [("How long do I have to return an item?", list(corpus))]
    return lambda: RetrievalDataset.from_pairs(pairs, corpus)


def _qa_line_of_sources(n: int) -> Callable[[], Any]:
    import json
    import tempfile

    from llama_index_ragtune.data.qa_jsonl import load_grounded_qa

    sources = [{"id": f"s{i}", "text": f"Passage {i} about returns."} for i in range(n)]
    line = {"question": "Returns?", "sources": sources, "gold": ["s0"], "answer": "Passage 0"}
    folder = tempfile.TemporaryDirectory(prefix="ragtune-hostile-")  # removed with the call
    path = Path(folder.name) / "qa.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")

    def call() -> Any:
        assert folder.name  # the call keeps the folder alive
        return load_grounded_qa(path)

    return call


CASES = [
    Case("unclosed quotation marks", "check_quotes", "n unclosed \u201c", 30_000, _unclosed_quotes),
    Case(
        "many quotes after one citation",
        "check_quotes",
        "[1], 10n spaces, n quotes",
        3_000,
        _quotes_after_one_citation,
    ),
    Case(
        "many claims and citations",
        "uncited_claims",
        "n citations, n claims",
        10_000,
        _claims_and_citations,
    ),
    Case("many claims and quotes", "claim_spans", "n quotes, n claims", 10_000, _claims_and_quotes),
    Case(
        "long cited answer",
        "fill_metadata",
        "n quoted, cited claims",
        3_000,
        _long_cited_answer,
    ),
    Case(
        "`<pre>` of a backtick run (lxml)",
        "StructuredHTMLNodeParser",
        "n backticks",
        100_000,
        _backtick_pre("lxml"),
    ),
    Case(
        "`<pre>` of a backtick run (html.parser)",
        "StructuredHTMLNodeParser",
        "n backticks",
        100_000,
        _backtick_pre("html.parser"),
    ),
    Case(
        "one line of words",
        "StructuredMarkdownNodeParser",
        "n words",
        100_000,
        _single_line("Markdown"),
    ),
    Case("one line of words", "StructuredHTMLNodeParser", "n words", 100_000, _single_line("HTML")),
    Case("many abbreviations", "split_sentences", 'n times "fig. 2"', 20_000, _abbreviations),
    Case(
        "one question over copies of a passage",
        "RetrievalDataset.from_pairs",
        "n copies",
        40_000,
        _copies_of_a_passage,
    ),
    Case(
        "one QA line of many sources", "load_grounded_qa", "n sources", 8_000, _qa_line_of_sources
    ),
    Case("evaluation of many systems", "render_markdown", "n systems", 10_000, _markdown_report),
    Case("evaluation of many systems", "render_html (report)", "n systems", 10_000, _html_report),
]


# ------------------------------------------------------------------------- timing


def _median_seconds(call: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(case: Case, scale: float, repeats: int) -> dict[str, Any]:
    """``case`` timed at ``n`` and ``2n``: seconds at each (median) and their ratio."""
    n = max(10, round(case.n * scale))
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the parser warns of the cut backtick run, every time
    try:
        case.prepare(max(1, n // 10))()  # warm-up: imports, caches, the parser's first page
        small = _median_seconds(case.prepare(n), repeats)
        large = _median_seconds(case.prepare(2 * n), repeats)
    finally:
        logging.disable(previous)
    return {
        "case": case.name,
        "operation": case.operation,
        "input": case.input,
        "n": n,
        "seconds_n": round(small, 6),
        "seconds_2n": round(large, 6),
        # a timing under the clock's resolution reads as one tick, never as zero
        "ratio": round(max(large, 1e-9) / max(small, 1e-9), 2),
    }


def _row_line(row: dict[str, Any]) -> str:
    return (
        f"{row['operation']:<26} {row['case']:<40} n={row['n']:<7} "
        f"{row['seconds_n']:>9.4f} s  {row['seconds_2n']:>9.4f} s  x{row['ratio']:.2f}"
    )


def benchmark(args: argparse.Namespace, prog: str = "ragtune bench hostile") -> dict[str, Any]:
    load_before = _load()
    rows = []
    for case in CASES:
        row = measure(case, args.scale, args.repeats)
        print(_row_line(row), flush=True)
        rows.append(row)
    return {
        "benchmark": "hostile_inputs",
        "setup": {"scale": args.scale, "repeats": args.repeats},
        "rows": rows,
        "command": command_line(args, prog),
        "machine": {
            "cores": _cores(),
            "load_before": load_before,
            "load_after": _load(),
            "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%d %H:%M"),
        },
    }


# ------------------------------------------------------------------------- output


def render_markdown(results: dict[str, Any]) -> str:
    setup = results["setup"]
    lines = [
        "# Hostile inputs: time at n and 2n",
        "",
        f"Median of {setup['repeats']} runs at each size (scale {setup['scale']:g}). The ratio "
        "is seconds(2n) / seconds(n): about 2 for linear work, about 4 for quadratic work.",
        "",
        "| operation | case | input | n | seconds (n) | seconds (2n) | ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['operation']} | {row['case']} | {row['input']} | {row['n']:,} "
            f"| {row['seconds_n']:.4f} | {row['seconds_2n']:.4f} | {row['ratio']:.2f} |"
        )
    machine = results["machine"]
    lines += [
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine['cores']} cores, load average {machine['load_before']} before, "
        f"{machine['load_after']} after, Python {machine['python']}",
    ]
    return "\n".join(lines) + "\n"


def command_line(args: argparse.Namespace, prog: str = "ragtune bench hostile") -> str:
    """The command that reproduces this run (paths relative to the working directory)."""
    parts = [prog]
    defaults = vars(build_parser().parse_args([]))
    for name, value in vars(args).items():
        if name not in defaults or value == defaults[name]:
            continue
        if name == "out":
            value = display_path(value)
        parts.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hostile_inputs", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``ragtune bench hostile`` and ``python -m benchmarks.hostile_inputs``)."""
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    parser.add_argument(
        "--repeats",
        type=bounded(int, 1),
        default=5,
        help="timed runs per size; the median is kept (5)",
    )
    parser.add_argument(
        "--scale",
        type=bounded(float, 0, above=True),
        default=1.0,
        help="multiplies every case's size n (1.0)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv), prog="python -m benchmarks.hostile_inputs")


def run(args: argparse.Namespace, prog: str = "ragtune bench hostile") -> int:
    """Run the benchmark for parsed ``args`` (``ragtune bench hostile`` calls this); ``prog``
    is how the recorded command starts."""
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if not (args.scale > 0 and args.scale < float("inf")):
        raise SystemExit(f"--scale must be a finite number > 0, got {args.scale}")
    results = benchmark(args, prog)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{STEM}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(results)
    (out / f"{STEM}.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    print(f"wrote {out / (STEM + '.json')} and {out / (STEM + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
