"""The evaluation report's stylesheet, inlined into the page (no external CSS or fonts).

System font stack, light cards, tabular numbers; the SVG charts of
:mod:`llama_index_ragtune.evaluation.svg_charts` are styled through the classes below.

Example::

    from llama_index_ragtune.evaluation.dashboard_style import PAGE_CSS

    html = f"<style>{PAGE_CSS}</style>"
"""

from __future__ import annotations

__all__ = ["PAGE_CSS"]

PAGE_CSS = """
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f4f6fa;--card:#fff;
--good:#047857;--bad:#b91c1c;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
"Liberation Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:32px 28px 48px;overflow-wrap:break-word}
header{padding-bottom:18px;border-bottom:1px solid var(--line)}
.eyebrow{margin:0;font-size:12px;font-weight:700;letter-spacing:.08em;
text-transform:uppercase;color:var(--accent)}
h1{margin:4px 0 6px;font-size:30px;line-height:1.2;letter-spacing:-.01em}
h2{margin:0 0 4px;font-size:21px}
h3{margin:22px 0 8px;font-size:16px}
.meta{margin:0;color:var(--muted)}
.meta b{color:var(--ink)}
.notes{margin:10px 0 0;padding:10px 14px;border-left:3px solid var(--accent);
background:#fff;border-radius:0 8px 8px 0;white-space:pre-wrap}
nav{display:flex;flex-wrap:wrap;gap:8px;margin-top:16px}
nav a{padding:4px 12px;border-radius:999px;background:#e7edfb;color:#1e40af;
font-size:13px;text-decoration:none}
section{margin-top:34px}
.lede{margin:0 0 14px;color:var(--muted)}
.lede b{color:var(--ink);font-weight:600}
.kpi-caption{margin:0 0 10px;color:var(--muted)}
.kpi-caption b{color:var(--ink)}
.kpis{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:14px}
.kpi{padding:16px 18px;background:var(--card);border:1px solid var(--line);
border-radius:12px;box-shadow:0 1px 2px rgba(15,23,42,.05)}
.kpi-title{font-size:13px;font-weight:600;color:var(--muted)}
.kpi-value{margin:2px 0;font-size:32px;font-weight:700;letter-spacing:-.02em;
font-variant-numeric:tabular-nums}
.kpi-compare{font-size:13px;color:var(--muted)}
.kpi-hint{margin-top:4px;font-size:12px;color:#94a3b8}
figure{margin:0}
.card{margin:0 0 14px;padding:16px;background:var(--card);border:1px solid var(--line);
border-radius:12px}
figcaption{margin-bottom:8px;font-size:14px;line-height:1.4}
.calib-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px}
.chart{display:block;width:100%;height:auto}
.chart text{font-size:12px;fill:#334155}
.chart .axis{font-size:11px;fill:#64748b}
.chart .axis-title{font-size:12px;fill:#475569}
.chart .grid{stroke:#e8edf3;stroke-width:1}
.chart .label{font-weight:600;fill:#0f172a}
.chart .legend{fill:#334155}
.chart .value{fill:#0f172a;font-variant-numeric:tabular-nums}
.chart .note{font-size:11px;fill:#64748b}
.chart .muted{fill:#94a3b8}
.chart .delta{font-size:11px;font-weight:600}
.chart .delta.good{fill:var(--good)}
.chart .delta.bad{fill:var(--bad)}
.chart .delta.muted{fill:#64748b}
.chart .dot{fill-opacity:.35}
.chart .whisker{stroke-width:1.5}
.chart .frame{fill:none;stroke:#cbd5e1}
.chart .axis-line{stroke:#cbd5e1}
.chart .diagonal{stroke:#94a3b8;stroke-width:1.5;stroke-dasharray:5 4}
.chart .curve{fill:none;stroke-width:2}
.chart .count{font-size:10.5px;fill:#334155}
.chart .threshold{stroke:#dc2626;stroke-width:2;stroke-dasharray:6 3}
.chart .threshold-label{font-size:12px;font-weight:600;fill:#dc2626}
.table-wrap{overflow-x:auto;margin:0 0 14px;background:var(--card);
border:1px solid var(--line);border-radius:12px}
table{width:100%;border-collapse:collapse;font-size:14px}
th,td{padding:8px 12px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{font-size:11.5px;font-weight:700;letter-spacing:.04em;text-transform:uppercase;
color:var(--muted);background:#f8fafc}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr:last-child td{border-bottom:0}
.stage{display:inline-block;margin-left:4px;padding:1px 8px;border-radius:999px;
background:#eef2f7;color:#475569;font-size:11.5px;font-weight:500}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;
font-weight:700;white-space:nowrap}
.badge.promoted{background:#d1fae5;color:#065f46}
.badge.kept{background:#fef3c7;color:#92400e}
.delta{font-weight:600;font-variant-numeric:tabular-nums}
.delta.good{color:var(--good)}
.delta.bad{color:var(--bad)}
.delta.muted{color:var(--muted)}
.delta.small{font-size:12px;font-weight:600}
th .sys{text-transform:none;letter-spacing:0;font-size:13px;color:var(--ink)}
td:first-child,th .sys,.reason{overflow-wrap:anywhere;white-space:normal}
.muted{color:var(--muted)}
.reason{color:#334155}
footer{margin-top:40px;padding-top:14px;border-top:1px solid var(--line);
font-size:12px;color:var(--muted)}
@media (max-width:820px){.kpis{grid-template-columns:repeat(2,minmax(0,1fr))}}
@media print{body{background:#fff}.card,.kpi,.table-wrap{break-inside:avoid}}
"""
