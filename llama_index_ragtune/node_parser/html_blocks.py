"""Convert HTML into the shared block model, rendering every block as Markdown.

Headings become ``## Title`` lines, lists ``-``/``1.`` items (nesting kept by
indentation), definition lists ``Term`` / ``: definition`` lines, tables
Markdown tables (``colspan``/``rowspan`` flattened into a rectangular grid by
repeating the spanning cell's text), ``pre`` fenced code and blockquotes
``>`` lines, so the HTML and Markdown parsers give the same text form.
Scripts, styles, navigation, page headers/footers, sidebars, forms and hidden
elements are dropped before conversion.

Example::

    from llama_index_ragtune.node_parser.html_blocks import HTMLConverter

    blocks = HTMLConverter().blocks("<h2>Returns</h2><ul><li>Apples</li><li>Pears</li></ul>")
    [b.kind for b in blocks]     # ['heading', 'list']
    blocks[1].text               # '- Apples\\n- Pears'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from llama_index_ragtune.node_parser.structure import Block

DEFAULT_BOILERPLATE_TAGS = (
    "script", "style", "noscript", "template", "head", "nav", "aside", "form",
    "header", "footer", "iframe", "svg", "canvas", "object", "embed",
    "button", "select", "textarea", "input",
)  # fmt: skip
DEFAULT_BOILERPLATE_ROLES = (
    "navigation", "banner", "contentinfo", "complementary", "search",
    "menu", "menubar", "toolbar",
)  # fmt: skip
#: ``header``/``footer`` inside these belong to the content (an article's title, say).
_CONTENT_ROOTS = ["article", "main"]

_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li",
    "main", "menu", "nav", "ol", "p", "pre", "search", "section", "summary", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "ul",
})  # fmt: skip
_BLOCK_TAG_LIST = sorted(_BLOCK_TAGS)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_LI = frozenset({"li"})
_DT_DD = frozenset({"dt", "dd"})
_CELLS = frozenset({"td", "th"})
_LIST_TAGS = ("ul", "ol", "menu", "dir")
_BR = "\u2028"
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0]+")
_PERMALINK_MARK = re.compile("\\s*[\u00b6\u00a7\U0001f517]+$")  # Sphinx/MkDocs "¶" anchors
_LANGUAGE = re.compile(r"^(?:language|lang|highlight)-([\w+#.-]+)$")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _bs4():
    try:
        import bs4
    except ImportError as err:  # pragma: no cover - bs4 is a hard dependency
        raise ImportError(
            "StructuredHTMLNodeParser needs beautifulsoup4: pip install beautifulsoup4 lxml"
        ) from err
    return bs4


def _normalize(raw: str) -> str:
    raw = raw.replace("\ufeff", "")  # a byte-order mark / zero-width no-break space is invisible
    lines = (_SPACES.sub(" ", line).strip() for line in raw.split(_BR))
    return "\n".join(line for line in lines if line)


def _join_units(parts: Sequence[str], sep: str = "\n") -> tuple[str, list[tuple[int, int]]]:
    units, offset = [], 0
    for part in parts:
        units.append((offset, offset + len(part)))
        offset += len(part) + len(sep)
    return sep.join(parts), units


def _indent_item(marker: str, body: str) -> str:
    lines = body.split("\n")
    pad = " " * (len(marker) + 1)
    rest = [pad + line if line else "" for line in lines[1:]]
    return "\n".join([f"{marker} {lines[0]}".rstrip(), *rest])


class HTMLConverter:
    """Walks a parsed HTML tree and emits :class:`Block` objects (without source offsets).

    Example::

        converter = HTMLConverter("html.parser", boilerplate_tags=["nav"], boilerplate_roles=[])
        [b.text for b in converter.blocks("<nav>Home</nav><p>Kept <b>bold</b></p>")]
        # ['Kept bold']
    """

    def __init__(
        self,
        features: str = "lxml",
        boilerplate_tags: Iterable[str] = DEFAULT_BOILERPLATE_TAGS,
        boilerplate_roles: Iterable[str] = DEFAULT_BOILERPLATE_ROLES,
    ):
        self.features = features
        self.boilerplate_tags = {t.lower() for t in boilerplate_tags}
        self.boilerplate_roles = {r.lower() for r in boilerplate_roles}
        bs4 = _bs4()
        self._string, self._tag = bs4.NavigableString, bs4.Tag

    # ---------------------------------------------------------- entry point

    def parse(self, html: str):
        """The BeautifulSoup tree of ``html`` (``html.parser`` when the chosen builder is missing)."""
        bs4 = _bs4()
        try:
            return bs4.BeautifulSoup(html, self.features)
        except bs4.FeatureNotFound:
            return bs4.BeautifulSoup(html, "html.parser")

    def blocks(self, html: str) -> list[Block]:
        """The page's content blocks, boilerplate dropped, each rendered as Markdown."""
        soup = self.parse(html)
        self.drop_boilerplate(soup)
        return self._flow(soup.children)

    def is_boilerplate(self, tag) -> bool:
        """True for a boilerplate element (by tag, ARIA role, or hidden) to drop with its content."""
        name = (tag.name or "").lower()
        if name in ("header", "footer") and name in self.boilerplate_tags:
            return tag.find_parent(_CONTENT_ROOTS) is None
        if name in self.boilerplate_tags:
            return True
        attrs = tag.attrs or {}
        role = str(attrs.get("role", "")).lower()
        if role and set(role.split()) & self.boilerplate_roles:
            return True
        if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
            return True
        return bool(_HIDDEN_STYLE.search(str(attrs.get("style", ""))))

    def drop_boilerplate(self, soup) -> None:
        """Remove every boilerplate element from ``soup`` in place."""
        for tag in [t for t in soup.find_all(True) if self.is_boilerplate(t)]:
            if not tag.decomposed:
                tag.decompose()

    # ------------------------------------------------------------- inline

    def _is_text(self, node) -> bool:
        return type(node) is self._string

    def _inline_raw(self, tag) -> str:
        parts = []
        for node in tag.descendants:
            if self._is_text(node):
                parts.append(str(node))
            elif isinstance(node, self._tag) and node.name == "br":
                parts.append(_BR)
        return "".join(parts)

    def _is_inline(self, tag) -> bool:
        return tag.name not in _BLOCK_TAGS and tag.find(_BLOCK_TAG_LIST) is None

    # --------------------------------------------------------------- flow

    def _flow(self, children: Iterable) -> list[Block]:
        """Blocks for a run of sibling nodes; loose text between block elements becomes paragraphs."""
        blocks: list[Block] = []
        buffer: list[str] = []

        def flush() -> None:
            text = _normalize("".join(buffer))
            buffer.clear()
            if text:
                blocks.append(Block("paragraph", text))

        for child in list(children):
            if self._is_text(child):
                buffer.append(str(child))
            elif not isinstance(child, self._tag):
                continue
            elif child.name == "br":
                buffer.append(_BR)
            elif self._is_inline(child):
                buffer.append(self._inline_raw(child))
            else:
                flush()
                blocks.extend(self._block(child))
        flush()
        return blocks

    def _flow_text(self, tag, sep: str = "\n") -> str:
        children = tag.children if isinstance(tag, self._tag) else tag
        return sep.join(block.text for block in self._flow(children))

    def _split_implied(self, tag, names: frozenset) -> list[tuple[object, list]]:
        """``(element, children)`` for ``tag`` and the ``names`` elements nested directly in it.

        With ``html.parser`` an unclosed ``<li>``/``<dt>``/``<dd>``/``<td>`` swallows
        its following siblings; this puts them back side by side.
        """
        out: list[tuple[object, list]] = [(tag, [])]
        for child in tag.children:
            if isinstance(child, self._tag) and child.name in names:
                out.extend(self._split_implied(child, names))
            else:
                out[-1][1].append(child)
        return out

    def _block(self, tag) -> list[Block]:
        name = tag.name
        if name in _HEADINGS:
            title = " ".join(_normalize(self._inline_raw(tag)).split())
            title = _PERMALINK_MARK.sub("", title).strip()
            if not title:
                return []
            level = _HEADINGS[name]
            return [Block("heading", f"{'#' * level} {title}", level=level, title=title)]
        if name in _LIST_TAGS:
            return self._list(tag)
        if name == "dl":
            return self._definition_list(tag)
        if name == "table":
            return self._table(tag)
        if name == "pre":
            return self._code(tag)
        if name == "blockquote":
            body = "\n\n".join(block.text for block in self._flow(tag.children))
            if not body:
                return []
            lines = (f"> {line}" if line.strip() else ">" for line in body.split("\n"))
            return [Block("blockquote", "\n".join(lines))]
        if name == "hr":
            return []
        return self._flow(tag.children)

    # ------------------------------------------------------------- lists

    def _list(self, tag) -> list[Block]:
        ordered = tag.name == "ol"
        try:
            number = int(tag.get("start", 1))
        except (TypeError, ValueError):
            number = 1
        items: list[str] = []
        for child in tag.children:
            if isinstance(child, self._tag) and child.name == "li":
                for _, children in self._split_implied(child, _LI):
                    marker = f"{number}." if ordered else "-"
                    number += 1
                    body = self._flow_text(children)
                    if body:
                        items.append(_indent_item(marker, body))
                continue
            # Stray content directly in the list (text, or a nested list outside any <li>).
            stray = "\n".join(b.text for b in self._flow([child]))
            if not stray:
                continue
            indented = "\n".join("  " + line if line else "" for line in stray.split("\n"))
            if items:
                items[-1] = f"{items[-1]}\n{indented}"
            else:
                items.append(stray)
        if not items:
            return []
        text, units = _join_units(items)
        return [Block("list", text, units=units)]

    def _definition_list(self, tag) -> list[Block]:
        groups: list[list[str]] = []
        last = None
        entries: list[tuple[object, list]] = []
        for child in tag.children:  # <div> may wrap dt/dd groups
            grouped = (
                child.children if isinstance(child, self._tag) and child.name == "div" else [child]
            )
            for node in grouped:
                if isinstance(node, self._tag) and node.name in _DT_DD:
                    entries.extend(self._split_implied(node, _DT_DD))
                else:
                    entries.append((None, [node]))
        for element, children in entries:
            name = element.name if element is not None else None
            if name == "dt":
                text = self._flow_text(children, " ")
                if last != "dt" or not groups:
                    groups.append([])
                if text:
                    groups[-1].append(text)
            else:
                body = self._flow_text(children)
                if not body:
                    continue
                if not groups:
                    groups.append([])
                groups[-1].append(_indent_item(":", body) if name == "dd" else body)
            last = name if name in _DT_DD else last
        parts = ["\n".join(group) for group in groups if group]
        if not parts:
            return []
        text, units = _join_units(parts)
        return [Block("definition_list", text, units=units)]

    # ------------------------------------------------------------- tables

    def _rows(self, table) -> list[tuple[object, bool]]:
        rows = []
        for child in table.children:
            if not isinstance(child, self._tag):
                continue
            if child.name in ("thead", "tbody", "tfoot"):
                for row in child.children:
                    if isinstance(row, self._tag) and row.name == "tr":
                        rows.append((row, child.name == "thead"))
            elif child.name == "tr":
                rows.append((child, False))
        return rows

    def _cell_text(self, children) -> str:
        return " ".join(self._flow_text(children, " ").split()).replace("|", "\\|")

    def _grid(self, rows) -> list[list[str]]:
        grid: list[list[str]] = []
        pending: dict[int, list] = {}  # column -> [text, rows still covered]
        for index, (row, _) in enumerate(rows):
            cells = [
                (cell, children)
                for c in row.children
                if isinstance(c, self._tag) and c.name in _CELLS
                for cell, children in self._split_implied(c, _CELLS)
            ]
            line: list[str] = []
            col = i = 0
            while i < len(cells) or any(c >= col for c in pending):
                if col in pending:
                    text, left = pending[col]
                    line.append(text)
                    if left <= 1:
                        del pending[col]
                    else:
                        pending[col][1] = left - 1
                    col += 1
                    continue
                if i >= len(cells):
                    line.append("")
                    col += 1
                    continue
                cell, children = cells[i]
                i += 1
                text = self._cell_text(children)
                colspan = _span(cell.get("colspan"), 1000, zero_means_rest=False)
                rowspan = _span(cell.get("rowspan"), len(rows) - index, zero_means_rest=True)
                for _ in range(colspan):
                    line.append(text)
                    if rowspan > 1:
                        pending[col] = [text, rowspan - 1]
                    col += 1
            grid.append(line)
        width = max((len(line) for line in grid), default=0)
        return [line + [""] * (width - len(line)) for line in grid]

    def _table(self, table) -> list[Block]:
        out: list[Block] = []
        caption = table.find("caption", recursive=False)
        if caption is not None:
            out.extend(self._flow(caption.children))
        rows = self._rows(table)
        nested = any(row.find("table") is not None for row, _ in rows)
        grid = self._grid(rows)
        width = len(grid[0]) if grid else 0
        role = str(table.get("role", "")).lower()
        if nested or width <= 1 or role in ("presentation", "none"):  # a layout table
            children = [c for c in table.children if c is not caption]
            return out + self._flow(children)
        header_count = 0
        while header_count < len(rows) and rows[header_count][1]:
            header_count += 1
        if header_count == 0:
            while (
                header_count < len(rows) - 1
                and all(
                    c.name == "th"
                    for c in rows[header_count][0].children
                    if isinstance(c, self._tag) and c.name in ("td", "th")
                )
                and rows[header_count][0].find(["td", "th"], recursive=False) is not None
            ):
                header_count += 1
        header = [
            " ".join(dict.fromkeys(r[c] for r in grid[:header_count] if r[c])) for c in range(width)
        ]
        body = [r for r in grid[header_count:] if any(r)]
        if not any(header) and not body:
            return out
        header_line = _row_line(header)
        delimiter = _row_line(["---"] * width)
        lines = [_row_line(r) for r in body]
        head = f"{header_line}\n{delimiter}"
        text = head + ("\n" + "\n".join(lines) if lines else "")
        offset = len(head) + 1
        units = []
        for line in lines:
            units.append((offset, offset + len(line)))
            offset += len(line) + 1
        out.append(Block("table", text, units=units, head=min(len(head) + 1, len(text))))
        return out

    # --------------------------------------------------------------- code

    def _code(self, pre) -> list[Block]:
        code = pre.get_text().strip("\n").rstrip()
        if not code.strip():
            return []
        language = ""
        candidates = [pre, pre.find("code"), pre.parent, pre.parent.parent if pre.parent else None]
        for tag in candidates:
            for cls in (tag.get("class") or []) if isinstance(tag, self._tag) else []:
                match = _LANGUAGE.match(cls)
                if match:
                    language = match.group(1)
                    break
            if language:
                break
        fence = "```"
        while fence in code:
            fence += "`"
        opening = f"{fence}{language}"
        text = f"{opening}\n{code}\n{fence}"
        head, tail = len(opening) + 1, len(text) - len(fence)
        units = []
        offset = head
        for line in code.split("\n"):
            if line.strip():
                units.append((offset, offset + len(line.rstrip())))
            offset += len(line) + 1
        return [Block("code", text, units=units, head=head, tail=tail)]


def _span(value, limit: int, zero_means_rest: bool) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return 1
    if number == 0 and zero_means_rest:  # rowspan="0": to the end of the table
        return max(limit, 1)
    return max(1, min(number, max(limit, 1)))


def _row_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
