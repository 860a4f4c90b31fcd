"""Render an HTML data table as a Markdown table, with bounded output.

A table is rendered as Markdown (header row, ``| --- |`` delimiter, one line
per body row, trailing empty cells left out) unless it is a layout table:
``role="presentation"``/``"none"``, a table holding another table or a heading in a
``<td>`` (:func:`layout_tables`), or a table of a single column. Layout tables are
returned as None; their content is then converted like any other block content.

Spans are read and clamped as browsers do (``colspan`` 1-1000, ``rowspan`` up to
the rows left in its row group, ``rowspan="0"`` to the end of the group; a value
that is no number, negative, or in other scripts' digits counts 1, ``"2px"`` 2). The text
of a spanning cell is copied into every slot it covers, so each row reads on
its own when the table is split; as long as the rendered table stays within
``MAX_GROWTH`` times the size of its cells (plus a small constant). Beyond
that, covered slots stay empty, and when even that is too large the spans are
ignored (each cell takes one column): a hostile ``colspan="1000"`` cannot turn
a small page into megabytes of node text.

A cell's backslashes, character references and pipes are escaped, so Markdown reads it back
as written. Text directly inside ``<table>``/``<tr>`` (outside any cell) is kept as a
paragraph before the table, where browsers show it; the caption likewise.

Example::

    from bs4 import BeautifulSoup
    from llama_index_ragtune.node_parser.html_tables import render_table

    soup = BeautifulSoup("<table><tr><th>Item</th><th>Days</th></tr>"
                         "<tr><td colspan=2>None</td></tr></table>", "html.parser")
    render_table(soup.table, is_layout_table=lambda tag: False).text
    # '| Item | Days |\\n| --- | --- |\\n| None | None |'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llama_index_ragtune.node_parser.html_text import _bs4, flat_text, html_integer
from llama_index_ragtune.node_parser.markdown_escape import escape_inline_syntax

MAX_COLSPAN = 1000  # the HTML standard's own clamp
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
MAX_ROWSPAN = 65534
#: The rendered table may be at most this many times the size of its cells (+ _SLACK chars).
MAX_GROWTH = 3
_SLACK = 256
_CELLS = frozenset({"td", "th"})
_GROUPS = frozenset({"thead", "tbody", "tfoot"})


@dataclass
class RenderedTable:
    """A data table as Markdown: ``before`` paragraphs (caption, stray text), then ``text``.

    ``text[:head]`` is the header and delimiter rows; ``units`` are the body rows.
    ``text`` is empty when the table has no cells with text.
    """

    before: list[str] = field(default_factory=list)
    text: str = ""
    head: int = 0
    units: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Row:
    cells: list[tuple[str, int, int]]  # (text, colspan, rowspan)
    group: int
    header: bool
    all_th: bool


def _implied_rows(row, group: int, header: bool, new_group: Callable[[], int]) -> list[tuple]:
    """``row`` and the rows nested in it, each ``(parts, group, header)``; ``parts`` are
    ``("cell", cell, children)`` and ``("stray", node)`` in document order.

    ``html.parser`` does not imply end tags: after an unclosed ``<td>`` (or ``<tr>``,
    legal HTML) the next cells, rows and row groups of the table are nested in it. This
    puts them back side by side, as browsers and lxml read them; ``new_group()`` numbers a
    nested ``thead``/``tbody``/``tfoot``. Iterative (any nesting depth), linear time.
    """
    tag_type = _bs4().Tag
    rows: list[tuple] = [([], group, header)]
    cell_children: list = []
    stack = [(iter(row.contents), False)]  # (children, inside a cell)
    while stack:
        children, in_cell = stack[-1]
        for child in children:
            name = child.name if isinstance(child, tag_type) else None
            if name in _CELLS:
                cell_children = []
                rows[-1][0].append(("cell", child, cell_children))
            elif name == "tr":
                rows.append(([], group, header))
            elif name in _GROUPS:
                group, header = new_group(), name == "thead"
            elif in_cell:
                cell_children.append(child)
                continue
            else:  # outside any cell: shown before the table
                rows[-1][0].append(("stray", child))
                continue
            # what follows a nested cell or row once it ends is outside any cell, as in
            # browsers (``<td>a<td>b</td> c``: c is stray)
            stack[-1] = (children, False)
            stack.append((iter(child.contents), name in _CELLS))
            break
        else:
            stack.pop()
    return rows


def _span(value, limit: int, zero_means_rest: bool) -> int:
    """A ``colspan``/``rowspan`` value as browsers read it (:func:`.html_text.html_integer`:
    ``"2px"`` is 2, ``"1e9"`` is 1, ``"٣"`` and negatives are 1), clamped to 1-``limit``."""
    number = html_integer(value, default=1)
    if number < 0:
        return 1
    if number == 0 and zero_means_rest:  # rowspan="0": to the end of the row group
        return max(limit, 1)
    return max(1, min(number, max(limit, 1)))


def _cell_text(children) -> str:
    """A cell's text as Markdown reads it back: its backslashes and references escaped
    (:func:`.markdown_escape.escape_inline_syntax`), then its pipes (GFM's ``\\|``)."""
    return escape_inline_syntax(flat_text(children)).replace("|", "\\|")


class _Stray:
    """Runs of content outside any cell; a run ends at a row, a cell or a new parent."""

    def __init__(self):
        self.runs: list[list] = []
        self.open = False

    def add(self, node) -> None:
        if not (self.open and self.runs[-1][-1].parent is node.parent):
            self.runs.append([])
        self.runs[-1].append(node)
        self.open = True

    def cut(self) -> None:
        self.open = False

    def texts(self) -> list[str]:
        texts = (flat_text(run) for run in self.runs)
        joined = " ".join(text for text in texts if text)
        return [joined] if joined else []


def _collect(table) -> tuple[list[_Row], list[str], list[str]]:
    """The rows (cells with clamped spans), the caption texts and the stray texts of ``table``."""
    tag_type = _bs4().Tag
    raw_rows: list[tuple] = []  # (parts, group, header), see _implied_rows
    captions: list[str] = []
    stray = _Stray()
    group = 0

    def new_group() -> int:
        nonlocal group
        group += 2  # a number of its own, apart from rows outside any group
        return group - 1

    for child in table.contents:
        if not isinstance(child, tag_type):
            stray.add(child)
            continue
        stray.cut()
        if child.name == "caption":
            captions.append(flat_text(child.contents))
        elif child.name in _GROUPS:
            group_id, header = new_group(), child.name == "thead"
            for row in child.contents:
                if isinstance(row, tag_type) and row.name == "tr":
                    raw_rows += _implied_rows(row, group_id, header, new_group)
                    stray.cut()
                else:
                    stray.add(row)
        elif child.name == "tr":
            raw_rows += _implied_rows(child, group, False, new_group)
        else:  # colgroup/col (no text normally), or misplaced content: kept as text
            stray.add(child)
    left_in_group = [0] * len(raw_rows)
    for index in range(len(raw_rows) - 1, -1, -1):
        same = index + 1 < len(raw_rows) and raw_rows[index + 1][1] == raw_rows[index][1]
        left_in_group[index] = 1 + (left_in_group[index + 1] if same else 0)
    rows = []
    for index, (parts, group_id, header) in enumerate(raw_rows):
        cells, names = [], []
        stray.cut()
        for kind, node, *children in parts:
            if kind == "stray":
                stray.add(node)
                continue
            stray.cut()
            names.append(node.name)
            colspan = _span(node.get("colspan"), MAX_COLSPAN, zero_means_rest=False)
            limit = min(left_in_group[index], MAX_ROWSPAN)
            rowspan = _span(node.get("rowspan"), limit, zero_means_rest=True)
            cells.append((_cell_text(children[0]), colspan, rowspan))
        rows.append(_Row(cells, group_id, header, bool(names) and set(names) == {"th"}))
    return rows, captions, stray.texts()


def _grid(rows: list[_Row], spans: bool, copies: bool, limit: int) -> list[list[str]] | None:
    """Rows of slot texts (ragged), or None when the rendered size would pass ``limit``."""
    grid: list[list[str]] = []
    pending: dict[int, list] = {}  # column -> [text, rows still covered, group]
    size = width = 0
    for row in rows:
        line: list[str] = []
        for col in [c for c, (_, _, g) in pending.items() if g != row.group]:
            del pending[col]
        last = max(pending, default=-1)  # spans from rows above reach this column at most
        cells = iter(row.cells)
        cell = next(cells, None)
        col = 0
        while cell is not None or col <= last:
            if col in pending:
                entry = pending[col]
                line.append(entry[0] if copies else "")
                entry[1] -= 1
                if entry[1] <= 0:
                    del pending[col]
            elif cell is not None:
                text, colspan, rowspan = cell if spans else (cell[0], 1, 1)
                cell = next(cells, None)
                for k in range(colspan):
                    line.append(text if k == 0 or copies else "")
                    size += len(line[-1]) + 3
                    if rowspan > 1:
                        pending[col + k] = [text, rowspan - 1, row.group]
                    if size > limit:
                        return None
                col += colspan - 1
                size -= len(line[-1]) + 3  # counted once more below
            else:
                line.append("")
            col += 1
            size += len(line[-1]) + 3
            if size > limit:
                return None
        width = max(width, len(line))
        if size + 12 * width > limit:
            return None
        grid.append(line)
    return grid


def _holders(elements) -> set[int]:
    """The ids of the elements that hold any of ``elements`` (each ancestor visited once)."""
    holders: set[int] = set()
    for element in elements:
        parent = element.parent
        while parent is not None and id(parent) not in holders:
            holders.add(id(parent))
            parent = parent.parent
    return holders


def layout_tables(soup) -> set[int]:
    """The ids of the tables that lay out the page rather than hold data: those holding
    another table or a heading in a ``<td>`` (a section per cell: its heading must stay a
    heading, not become cell text). ``role="presentation"`` and one-column tables are
    found by :func:`render_table`.

    Example::

        soup = BeautifulSoup("<table><tr><td><h2>Returns</h2></td><td><h2>Shipping</h2>"
                             "</td></tr></table>", "html.parser")
        id(soup.table) in layout_tables(soup)     # True
    """
    tables = soup.find_all("table")
    with_tables = _holders(tables)
    with_headings = _holders(soup.find_all(_HEADINGS))
    layout = {id(t) for t in tables if id(t) in with_tables}
    for table in tables:  # a table not in layout holds no table: its cells are its own
        if (
            id(table) in with_headings
            and id(table) not in layout
            and any(id(cell) in with_headings for cell in table.find_all("td"))
        ):
            layout.add(id(table))
    return layout


def render_table(table, is_layout_table: Callable[[object], bool]) -> RenderedTable | None:
    """``table`` as Markdown, or None for a layout table (see the module docstring).

    ``is_layout_table(tag)`` tells whether a table lays out the page by what it holds
    (another table, a heading in a cell).

    Example::

        soup = BeautifulSoup("<table role=presentation><tr><td>a</td><td>b</td></tr></table>",
                             "html.parser")
        render_table(soup.table, is_layout_table=lambda tag: False)     # None (layout)
    """
    if str(table.get("role", "")).lower() in ("presentation", "none") or is_layout_table(table):
        return None
    rows, captions, stray = _collect(table)
    base = sum(len(text) + 3 for row in rows for text, _, _ in row.cells)
    limit = MAX_GROWTH * base + _SLACK
    grid = None
    for spans, copies in ((True, True), (True, False), (False, False)):
        grid = _grid(rows, spans, copies, limit if spans else float("inf"))
        if grid is not None:
            break
    width = max((len(line) for line in grid), default=0)
    if width <= 1:
        return None
    header_count = 0
    while header_count < len(rows) and rows[header_count].header:
        header_count += 1
    if header_count == 0:
        while header_count < len(rows) - 1 and rows[header_count].all_th:
            header_count += 1
    header = [
        " ".join(dict.fromkeys(r[c] for r in grid[:header_count] if c < len(r) and r[c]))
        for c in range(width)
    ]
    body = []
    for line in grid[header_count:]:
        while line and not line[-1]:
            line = line[:-1]
        if line:
            body.append(_row_line(line))
    out = RenderedTable(before=[*stray, *(c for c in captions if c)])
    if not any(header) and not body:
        return out
    head = f"{_row_line(header)}\n{_row_line(['---'] * width)}"
    out.text = head + ("\n" + "\n".join(body) if body else "")
    out.head = min(len(head) + 1, len(out.text))
    offset = len(head) + 1
    for line in body:
        out.units.append((offset, offset + len(line)))
        offset += len(line) + 1
    return out


def _row_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
