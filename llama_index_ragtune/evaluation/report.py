"""Retrieval reports: per-query rows, aggregates, Markdown tables and before/after comparison.

Example::

    from llama_index.core import SummaryIndex
    from llama_index.core.schema import TextNode
    from llama_index_ragtune.evaluation import RetrievalEvaluator, RetrievalReport, compare_reports

    nodes = [TextNode(id_="d1", text="Cats purr."), TextNode(id_="d2", text="Statins lower LDL.")]
    queries, qrels = {"q1": "what lowers LDL?"}, {"q1": {"d2": 1}}
    base = RetrievalEvaluator(SummaryIndex(nodes).as_retriever(), k_values=(1, 2), name="base")
    base_report = base.evaluate(queries, qrels, show_progress=False)
    base_report["ndcg@2"], base_report.latency["p50_ms"]     # (0.63..., ...)
    print(base_report.to_markdown())
    base_report.to_json("runs/base.json")
    tuned = RetrievalEvaluator(SummaryIndex(nodes[::-1]).as_retriever(), k_values=(1, 2), name="tuned")
    tuned_report = tuned.evaluate(queries, qrels, show_progress=False)
    print(compare_reports(RetrievalReport.from_json("runs/base.json"), tuned_report))
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import strict_json
from llama_index_ragtune.evaluation.chart_text import fixed, printable_text
from llama_index_ragtune.evaluation.file_paths import checked_path
from llama_index_ragtune.evaluation.report_reading import (
    check_retrieval_report,
    naming_file,
    read_report_json,
)
from llama_index_ragtune.evaluation.results_reading import (
    MAX_EVALUATION_BYTES,
    EvaluationFileError,
)
from llama_index_ragtune.evaluation.svg_charts import isolate_bidi

_MARKDOWN_SPECIAL = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        "[": "\\[",
        "]": "\\]",
        "`": "\\`",
        "*": "\\*",  # emphasis, also inside a word ("a*b*c")
        "~": "\\~",  # GFM strikethrough (and "~~~" fences)
        "$": "\\$",  # GitHub's inline math ("$x$")
    }
)
# "_" opens or closes emphasis only next to a space or punctuation ("__init__", "_x_"):
# one between two letters or digits ("answer_rate") is left readable.
_LOOSE_UNDERSCORE = re.compile(r"_(?![^\W_])|(?<![^\W_])_")
# "#" starting a word: a heading at the start of a line, a heading's closing sequence
# ("# Run #") at its end, an issue link on GitHub.
_WORD_HASH = re.compile(r"(?<!\S)#")
# what makes a line a block at its start: a list item ("- x", "+ x", "1. x", "1) x") or a
# thematic break ("---", "- - -"); "*", "#", ">" and "|" are escaped everywhere already
_LINE_START_BLOCK = re.compile(r"^(?:[-+](?=\s|$)|\d{1,9}[.)](?=\s|$)|-(?=(?:\s*-){2,}\s*$))")


def markdown_cell(value: Any) -> str:
    """``value`` as text shown literally in a Markdown table cell or line (CommonMark and
    GitHub Flavored Markdown): no raw HTML, character references (``&#x202e;``), links,
    code, emphasis or strikethrough (``__init__``, ``*x*``, ``~~x~~``), math (``$x$``),
    headings or list items at a line's start, column or line breaks, control characters
    (an ESC sequence ran in the terminal of whoever ``cat``-ed the report), and no bidi
    control reordering the rest of the line. Letters, digits, ``answer_rate``-style names
    and numbers stay as they are.

    Example::

        markdown_cell("bm25 | fast\\nv2")     # 'bm25 \\\\| fast v2'
        markdown_cell("__init__ *x*")         # '\\\\_\\\\_init\\\\_\\\\_ \\\\*x\\\\*'
    """
    text = printable_text(" ".join(str(value).split()))  # no ESC for a terminal to run
    text = text.translate(_MARKDOWN_SPECIAL)
    if "_" in text:
        text = _LOOSE_UNDERSCORE.sub(r"\\_", text)
    if "#" in text:
        text = _WORD_HASH.sub(r"\\#", text)
    text = _LINE_START_BLOCK.sub(_escape_block_start, text, count=1)
    return isolate_bidi(text)


def _escape_block_start(found: re.Match[str]) -> str:
    """The list or break marker at a line's start made literal: ``\\-``, ``1\\.``."""
    marker = found.group()
    return marker[:-1] + "\\" + marker[-1]


class ReportIO:
    """What every evaluation report shares: ``len``, ``report[key]``, JSON files and DataFrames.

    A report subclass provides ``rows``, ``aggregate``, ``to_dict``, ``from_dict``,
    ``to_markdown`` and ``_records`` (the per-row dicts of ``to_dataframe``).
    """

    rows: list

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> Any:
        return self.aggregate[key]  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return self.to_markdown()  # type: ignore[attr-defined]

    def to_json(self, path: str | Path | None = None, indent: int | None = 2) -> str:
        """The report as strict JSON (a NaN or infinite number as ``null``); also written to
        ``path`` (parent folders created) when given.

        The file is written to a temporary sibling and renamed into place: a crash or a
        full disk leaves the old file whole, and a symbolic link or named pipe standing at
        ``path`` is replaced, never written through (the file it led to is left as it was).
        """
        data = strict_json(self.to_dict())  # type: ignore[attr-defined]
        text = json.dumps(data, indent=indent, default=str, allow_nan=False)
        if path is not None:
            from llama_index_ragtune.retrievers.persistence import atomic_write_text

            path = checked_path(path, f"{type(self).__name__}.to_json")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path: str | Path, max_bytes: int | None = MAX_EVALUATION_BYTES) -> Any:
        """Load a report saved with ``to_json(path)``.

        Read as an evaluation JSON is (a plain file of at most ``max_bytes``, ``None``: no
        cap; UTF-8; no repeated key or integer of thousands of digits) and checked field by
        field: anything else is an ``EvaluationFileError`` naming the file and the field.
        """
        path = checked_path(path, f"{cls.__name__}.from_json")
        data = read_report_json(path, max_bytes=max_bytes)
        try:
            return cls.from_dict(data)  # type: ignore[attr-defined]
        except EvaluationFileError as exc:
            raise naming_file(exc, path) from None

    def to_dataframe(self) -> Any:
        """One row per evaluated query or example as a pandas DataFrame."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas ships with datasets
            raise ImportError("to_dataframe needs pandas: `pip install pandas`") from exc
        return pd.DataFrame(self._records())

    def _records(self) -> list[dict[str, Any]]:
        raise NotImplementedError


@dataclass
class QueryResult:
    """One evaluated query: its metrics, the retrieved doc ids (best first) and the latency.

    Example::

        QueryResult(qid="q1", metrics={"recall@10": 1.0}, retrieved=["d2", "d1"], latency_ms=3.2)
    """

    qid: str
    metrics: dict[str, float]
    retrieved: list[str]
    latency_ms: float
    scores: list[float | None] = field(default_factory=list)


@dataclass
class RetrievalReport(ReportIO):
    """Per-query results of a retrieval evaluation and their means.

    ``aggregate`` maps ``"metric@k"`` (e.g. ``"ndcg@10"``) to the mean over the
    evaluated queries (``report["ndcg@10"]`` reads it too); ``latency`` gives
    p50 / p95 / mean milliseconds per query.

    Example::

        report = RetrievalReport(
            rows=[QueryResult("q1", {"recall@10": 1.0}, ["d1"], 2.0),
                  QueryResult("q2", {"recall@10": 0.0}, ["d9"], 4.0)],
            k_values=(10,), metrics=("recall",),
        )
        report["recall@10"], report.latency["p50_ms"]     # (0.5, 3.0)
    """

    rows: list[QueryResult]
    k_values: tuple[int, ...] = (1, 3, 5, 10, 100)
    metrics: tuple[str, ...] = ("ndcg", "recall", "mrr", "hit", "precision")
    name: str | None = None
    skipped: list[str] = field(default_factory=list)

    def _nothing_to_report(self) -> ValueError:
        skipped = f" ({len(self.skipped)} skipped without qrels)" if self.skipped else ""
        return ValueError(
            f"retrieval report {self.name or '(unnamed)'!r} holds no evaluated query{skipped}: "
            "there is nothing to report; evaluate queries whose ids have qrels"
        )

    @property
    def aggregate(self) -> dict[str, float]:
        """Mean of every ``metric@k`` over the evaluated queries (``ValueError`` when there are none:
        a mean of no queries is no score, not 0)."""
        if not self.rows:
            raise self._nothing_to_report()
        keys = [f"{m}@{k}" for m in self.metrics for k in self.k_values]
        return {key: statistics.fmean(row.metrics[key] for row in self.rows) for key in keys}

    @property
    def latency(self) -> dict[str, float]:
        """Per-query latency in milliseconds: ``p50_ms``, ``p95_ms``, ``mean_ms`` (``ValueError``
        when no query was evaluated). An unknown latency (NaN: ``null`` in the JSON) is left
        out (sorting it put the percentiles anywhere); all unknown: NaN."""
        if not self.rows:
            raise self._nothing_to_report()
        values = sorted(row.latency_ms for row in self.rows if not math.isnan(row.latency_ms))
        if not values:
            return dict.fromkeys(("p50_ms", "p95_ms", "mean_ms"), math.nan)
        return {
            "p50_ms": _percentile(values, 50),
            "p95_ms": _percentile(values, 95),
            "mean_ms": statistics.fmean(values),
        }

    def per_query(self, key: str) -> dict[str, float]:
        """``{qid: value}`` of one ``metric@k`` for every evaluated query."""
        return {row.qid: row.metrics[key] for row in self.rows}

    # ------------------------------------------------------------------ export

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, aggregate, latency and every per-query row."""
        return {
            "name": self.name,
            "k_values": list(self.k_values),
            "metrics": list(self.metrics),
            "num_queries": len(self.rows),
            "aggregate": self.aggregate if self.rows else {},  # no queries: no means
            "latency": self.latency if self.rows else {},
            "skipped": list(self.skipped),
            "queries": [asdict(row) for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrievalReport:
        """Rebuild a report written by ``to_dict`` (``EvaluationFileError`` naming the
        field when ``data`` is not of that shape)."""
        check_retrieval_report(data)
        return cls(
            rows=[_query_result(row) for row in data["queries"]],
            k_values=tuple(data["k_values"]),
            metrics=tuple(data["metrics"]),
            name=data.get("name"),
            skipped=list(data.get("skipped", [])),
        )

    def _records(self) -> list[dict[str, Any]]:
        """qid, latency_ms and every ``metric@k`` of each query (the ``to_dataframe`` rows)."""
        return [{"qid": row.qid, "latency_ms": row.latency_ms, **row.metrics} for row in self.rows]

    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table: one row per metric, one column per cut-off, plus latency (for a
        report without queries, a line saying there is nothing to report)."""
        check_digits(digits, "RetrievalReport.to_markdown")
        if not self.rows:
            return str(self._nothing_to_report())
        agg = self.aggregate
        header = ["metric", *[f"@{k}" for k in self.k_values]]
        lines = [_row(header), _rule(len(header))]
        for metric in self.metrics:
            lines.append(
                _row([metric, *[_number(agg[f"{metric}@{k}"], digits) for k in self.k_values]])
            )
        lat = self.latency
        title = f"**{markdown_cell(self.name)}** — " if self.name else ""
        footer = (
            f"{title}{len(self.rows)} queries; latency p50 {_number(lat['p50_ms'], 1)} ms, "
            f"p95 {_number(lat['p95_ms'], 1)} ms"
        )
        return "\n".join([*lines, "", footer])


def compare_reports(
    before: RetrievalReport,
    after: RetrievalReport,
    keys: Sequence[str] | None = None,
    names: tuple[str, str] = ("before", "after"),
    digits: int = 4,
) -> str:
    """A before/after Markdown table with absolute and relative deltas.

    ``keys`` defaults to the ``metric@k`` keys both reports share. When both reports
    cover the same queries, a last line counts the queries that got better or worse
    on the first key.

    Example::

        print(compare_reports(base_report, tuned_report, keys=["ndcg@2", "mrr@2"]))
    """
    check_digits(digits, "compare_reports")
    keys = metric_key_list(keys, "compare_reports")
    left, right = before.aggregate, after.aggregate  # a report without queries raises
    if keys is None:
        keys = [key for key in left if key in right]
    missing = [key for key in keys if key not in left or key not in right]
    if missing:
        raise KeyError(
            f"metric(s) {missing} are not in both reports; available: {sorted(set(left) & set(right))}"
        )
    header = ["metric", before.name or names[0], after.name or names[1], "Δ", "Δ%"]
    lines = [_row(header), _rule(len(header))]
    for key in keys:
        delta = right[key] - left[key]
        rel = _percent(delta, left[key])
        lines.append(
            _row(
                [
                    key,
                    _number(left[key], digits),
                    _number(right[key], digits),
                    _number(delta, digits, sign=True),
                    rel,
                ]
            )
        )
    lat_b, lat_a = before.latency["p50_ms"], after.latency["p50_ms"]
    lines.append(
        _row(
            [
                "latency p50 (ms)",
                _number(lat_b, 1),
                _number(lat_a, 1),
                _number(lat_a - lat_b, 1, sign=True),
                "—",
            ]
        )
    )
    if keys and {r.qid for r in before.rows} == {r.qid for r in after.rows} and before.rows:
        first = keys[0]
        base, new = before.per_query(first), after.per_query(first)
        better = sum(1 for q in base if new[q] > base[q] + 1e-12)
        worse = sum(1 for q in base if new[q] < base[q] - 1e-12)
        lines += [
            "",
            f"{first}: {better} queries better, {worse} worse, {len(base) - better - worse} unchanged",
        ]
    return "\n".join(lines)


def reports_table(
    reports: Mapping[str, RetrievalReport],
    keys: Iterable[str] = ("ndcg@10", "recall@100", "mrr@10"),
    digits: int = 3,
) -> str:
    """One Markdown row per named report (e.g. BM25, dense, hybrid), with p50 latency.

    Example::

        print(reports_table({"base": base_report, "tuned": tuned_report}, keys=["ndcg@2"]))
    """
    check_digits(digits, "reports_table")
    keys = metric_key_list(keys, "reports_table") or []
    lines = [_row(["system", *keys, "p50 ms"]), _rule(len(keys) + 2)]
    for name, report in reports.items():
        if not report.rows:  # nothing to report: no number, not 0
            lines.append(_row([name, *["—"] * len(keys), "no queries"]))
            continue
        agg = report.aggregate
        cells = [_number(agg[key], digits) if key in agg else "—" for key in keys]
        lines.append(_row([name, *cells, _number(report.latency["p50_ms"], 1)]))
    return "\n".join(lines)


def _number(value: float, digits: int, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (scientific from 1e15 on); "—" when it is not a
    finite number (a null metric read back as NaN was shown "nan", a 1e-320 baseline
    gave a Δ% of "+inf%")."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return fixed(value, digits, sign)


def _percent(delta: float, base: float) -> str:
    """``delta`` as a signed percentage of ``base``; "—" for a zero base or no finite share."""
    share = 100 * delta / base if base else math.nan
    return "—" if not math.isfinite(share) else fixed(share, 1, sign=True) + "%"


def check_digits(digits: Any, where: str) -> int:
    """``digits`` for a table's numbers: a whole number from 0 to 17, else a ``TypeError`` /
    ``ValueError`` naming ``where`` (``digits=10**6`` wrote a megabyte per cell, ``None``
    failed with "Invalid format specifier").

    Example::

        check_digits(3, "to_markdown")    # 3
    """
    if not isinstance(digits, int) or isinstance(digits, bool):
        raise TypeError(f"{where}: digits must be a whole number, got {digits!r}")
    if not 0 <= digits <= 17:
        raise ValueError(f"{where}: digits must be from 0 to 17, got {digits}")
    return digits


def metric_key_list(keys: Any, where: str) -> list[str] | None:
    """``keys`` as a list of metric names (None stays None); a bare string is a
    ``TypeError`` naming ``where`` (``keys="ndcg@10"`` gave one column per letter).

    Example::

        metric_key_list(("ndcg@10",), "reports_table")   # ['ndcg@10']
    """
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"{where}: keys must be a list of metric names; write keys=[{keys!r}]")
    return list(keys)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(map(markdown_cell, cells)) + " |"


def _rule(columns: int) -> str:
    """The line under a table's header (not a cell: ``markdown_cell`` escapes "---")."""
    return "|" + " --- |" * columns


def _query_result(row: Mapping[str, Any]) -> QueryResult:
    """A ``QueryResult`` from its JSON; a ``null`` metric or latency (strict JSON's NaN) is NaN."""
    nan = float("nan")
    fields = dict(row)
    fields["metrics"] = {k: nan if v is None else v for k, v in row["metrics"].items()}
    if fields.get("latency_ms") is None:
        fields["latency_ms"] = nan
    return QueryResult(**fields)


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low))
