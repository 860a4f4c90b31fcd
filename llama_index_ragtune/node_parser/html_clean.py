"""Which HTML elements are boilerplate, dropped with their content before conversion.

Always dropped (by default): what is never read as page text (``script``, ``style``,
``noscript``, ``template``, ``head``), graphics and embeds (``svg``, ``canvas``,
``iframe``, ``object``, ``embed``), form controls (``button``, ``select``,
``textarea``, ``input``; a ``button`` that holds all of the text of a heading, ARIA
heading, ``dt`` or ``summary`` is kept: the title of an accordion or disclosure section,
``<h3><button>Question</button></h3>``),
``nav``, elements with a chrome ARIA role (navigation,
banner, contentinfo, complementary, search, menu, menubar, toolbar), and hidden
elements (``hidden`` except ``hidden="until-found"``, ``aria-hidden="true"``,
inline ``display: none`` / ``visibility: hidden`` or ``collapse``, the last declaration
winning as in CSS; kept with the parser's
``drop_hidden=False``, and a warning names a page that loses much text this way,
such as a saved FAQ page with collapsed answers). A visible ``svg`` leaves its
accessible name (:func:`svg_name`: its ``aria-label`` or ``<title>``) in its place,
as an image leaves its alt text; its ``<text>`` labels (a chart's ticks, a
diagram's boxes, in no reading order) are dropped with it.

Dropped only where they are page chrome, following the HTML accessibility
mappings (HTML-AAM), so that article content is kept:

- ``header`` / ``footer``: the page's banner and footer (a banner's ``h1`` is kept when
  it is the page's only one and no logo or home link: the page's title), i.e. not inside an
  ``article``, ``aside``, ``main``, ``nav``, ``section`` or an element with role
  ``article``, ``complementary``, ``main``, ``navigation`` or ``region`` (inside one
  they are that part's title block or notes), nor inside a sectioning root of the
  HTML standard (``blockquote``, ``details``, ``dialog``, ``fieldset``, ``figure``,
  ``td``, ``th``: a quote's attribution, a figure's credit) or a list item (``li``,
  ``dt``, ``dd``: an item's title);
- ``aside``: a page sidebar, i.e. not inside an ``article``, ``aside``, ``nav``
  or ``section``; an aside that is a footnote or note is always kept: ``role="note"``
  or a ``doc-*`` role such as ``doc-footnote``/``doc-endnotes``, a class naming
  footnotes/endnotes (as Sphinx and Pandoc write them), or a class word (split at
  ``-``/``_``) naming a note or admonition: ``note(s)``, ``sidenote``, ``callout``,
  ``admonition``, ``tip``, ``hint``, ``important``, ``warning``, ``caution``,
  ``attention``, ``danger`` (``note``, ``callout-tip``, ``markdown-alert-warning``);
- ``form``: dropped unless it holds content (a heading ``h1``-``h6``, ``main``,
  ``article``, ``section``, ``table`` or ``role="main"`` inside it, as on ASP.NET
  pages built as one big form) or is inside a heading (its text is the heading's title,
  as lxml reads it too); its controls are dropped either way.

A ``title`` is never page text (a stray one in the body neither), except an SVG
element's (:func:`svg_name`). A ``head`` is dropped with its content while it holds only metadata (``title``,
``meta``, ``link``, ``base``, ``style``, ``script``, ``noscript``, ``template``).
``html.parser`` does not end an unclosed ``head`` at the page's first content, as
browsers and lxml do, so there the head can hold the whole page (``<head><title>T
</title><body>...``): a head that holds anything else is kept and only its metadata
is dropped.

These rules never empty a whole page: :data:`NEVER_TEXT_TAGS` lists what is
never page text, and :class:`~.html_blocks.HTMLConverter` parses a page again
with only those and ``nav`` dropped when the full rules leave (almost) none
of its text, with a warning naming the document.

Example::

    from bs4 import BeautifulSoup
    from llama_index_ragtune.node_parser.html_clean import BoilerplatePolicy

    soup = BeautifulSoup("<aside>Ads</aside><section><p>Text<aside>Footnote</aside></section>",
                         "html.parser")
    BoilerplatePolicy().drop(soup)
    soup.get_text(" ")     # 'Text Footnote'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from llama_index_ragtune.node_parser.html_parser_repairs import TAG_OPEN
from llama_index_ragtune.node_parser.html_text import text_types

DEFAULT_BOILERPLATE_TAGS = (
    "script", "style", "noscript", "template", "head", "nav", "aside", "form",
    "header", "footer", "iframe", "svg", "canvas", "object", "embed",
    "button", "select", "textarea", "input",
)  # fmt: skip
DEFAULT_BOILERPLATE_ROLES = (
    "navigation", "banner", "contentinfo", "complementary", "search",
    "menu", "menubar", "toolbar",
)  # fmt: skip
#: header/footer inside these are content (HTML-AAM: not banner/contentinfo; the HTML
#: standard scopes a footer to its nearest sectioning content or sectioning root).
_HEADER_SCOPES = frozenset({
    "article", "aside", "main", "nav", "section",
    "blockquote", "details", "dialog", "fieldset", "figure", "td", "th",
    "li", "dt", "dd",
})  # fmt: skip
#: ... and inside an element with one of these roles (HTML-AAM).
_HEADER_SCOPE_ROLES = frozenset({"article", "complementary", "main", "navigation", "region"})
#: an aside inside these is content (HTML-AAM: not complementary).
_ASIDE_SCOPES = frozenset({"article", "aside", "nav", "section"})
#: a form holding one of these is content (the page's body), not a form control group.
_FORM_CONTENT = ("main", "article", "section", "table", "h1", "h2", "h3", "h4", "h5", "h6")
#: Boilerplate tags that never hold page text.
NEVER_TEXT_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "iframe", "svg", "canvas",
     "object", "embed", "button", "select", "textarea", "input"}
)  # fmt: skip
#: What a ``head`` holds (the HTML standard's metadata content); see :func:`_holds_body`.
_HEAD_METADATA = frozenset(
    {"base", "link", "meta", "noscript", "script", "style", "template", "title"}
)
#: SVG elements that may hold a ``<title>`` naming them.
_SVG_CONTAINERS = frozenset({
    "svg", "g", "symbol", "defs", "use", "image", "switch", "a", "text", "tspan", "textpath",
    "rect", "circle", "ellipse", "line", "path", "polygon", "polyline", "marker", "pattern",
    "mask", "clippath", "lineargradient", "radialgradient", "foreignobject", "view",
})  # fmt: skip
_WORD = re.compile(r"[^\W_]+")
_NOTE_CLASS = re.compile(r"footnote|endnote", re.I)
#: Words of a class naming a note or an admonition (docutils' admonition kinds among them).
_NOTE_WORDS = frozenset({
    "note", "notes", "sidenote", "marginnote", "callout", "admonition", "tip", "tips", "hint",
    "important", "warning", "caution", "attention", "danger",
})  # fmt: skip
_CLASS_WORD = re.compile(r"[-_]+")
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.S)
_IMPORTANT = re.compile(r"!\s*important\s*$", re.I)
#: Elements whose text titles what follows: a button holding all of it is that title.
_TITLE_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "dt", "summary"})


def _tokens(value) -> set[str]:
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    return set(str(value or "").lower().split())


def _holds_body(head) -> bool:
    """True when ``head`` holds more than metadata: page content that ``html.parser`` left in
    an unclosed ``head`` (browsers and lxml end the head at the first content)."""
    texts = text_types()
    for child in head.contents:
        name = getattr(child, "name", None)
        if name is not None and name not in _HEAD_METADATA:
            return True
        if type(child) in texts and child.strip():
            return True
    return False


def _is_head_metadata(tag) -> bool:
    """A metadata element (a ``title``, say) directly inside a ``head``."""
    parent = tag.parent
    return (tag.name or "").lower() in _HEAD_METADATA and (
        parent is not None and (parent.name or "").lower() == "head"
    )


def _is_title_outside_svg(tag) -> bool:
    """A ``title`` that no SVG element holds: the document's title (a ``title`` in the body
    too: browsers never show it), not an SVG element's name (read by :func:`svg_name`)."""
    if (tag.name or "").lower() != "title":
        return False
    parent = tag.parent
    return parent is None or (parent.name or "").lower() not in _SVG_CONTAINERS


def _is_title_holder(tag) -> bool:
    """A heading (``h1``..``h6`` or ARIA ``role="heading"``), definition term or summary."""
    if (tag.name or "").lower() in _TITLE_TAGS:
        return True
    roles = str(tag.get("role") or "").split()
    return bool(roles) and roles[0].lower() == "heading"


def _is_button_title(tag, heading, titles: dict[int, bool]) -> bool:
    """A ``button`` in ``heading`` (a title holder, :func:`_is_title_holder`) whose buttons
    hold all of its words: its title (the accordion pattern of WAI-ARIA and Bootstrap), not
    a form control. ``titles`` caches the answer per heading: one with many buttons is read
    once."""
    if heading is None or (tag.name or "").lower() != "button":
        return False
    key = id(heading)
    if key not in titles:
        inside = sum(len(_WORD.findall(b.get_text(" "))) for b in heading.find_all("button"))
        titles[key] = 0 < len(_WORD.findall(heading.get_text(" "))) <= inside
    return titles[key]


#: A link to a site's home page (``/``, ``/index.html``, ``https://host/``).
_ROOT_LINK = re.compile(
    r"\s*(?:(?:[a-z][a-z0-9+.-]*:)?//[^/\s]+/?|\.?/|(?=index))(?:index\.\w+)?\s*", re.I
)


def _is_site_name(heading) -> bool:
    """A heading that names the site, not the page: it holds no text but image alt text (a
    logo), or a link to the site's home page."""
    if not heading.get_text(strip=True):
        return True
    return any(
        isinstance(link.get("href"), str) and _ROOT_LINK.fullmatch(link["href"])
        for link in heading.find_all("a")
    )


def _is_note(tag) -> bool:
    """A footnote or note by its role or class (see the module docstring)."""
    roles = _tokens(tag.get("role"))
    if "note" in roles or any(role.startswith("doc-") for role in roles):
        return True
    return any(
        _NOTE_CLASS.search(cls) or not _NOTE_WORDS.isdisjoint(_CLASS_WORD.split(cls))
        for cls in _tokens(tag.get("class"))
    )


class BoilerplatePolicy:
    """Decides which elements are boilerplate (see the module docstring for the rules).

    Example::

        policy = BoilerplatePolicy(tags=["nav", "footer"], roles=["navigation"])
        soup = BeautifulSoup("<nav>Menu</nav><p>Kept</p><footer>(c) 2025</footer>", "html.parser")
        policy.drop(soup)                    # 2 elements dropped
        soup.get_text()                      # 'Kept'
    """

    def __init__(
        self,
        tags: Iterable[str] = DEFAULT_BOILERPLATE_TAGS,
        roles: Iterable[str] = DEFAULT_BOILERPLATE_ROLES,
        hidden: bool = True,
    ):
        self.tags = frozenset(t.lower() for t in tags)
        self.roles = frozenset(r.lower() for r in roles)
        self.hidden = hidden

    def lenient(self) -> BoilerplatePolicy:
        """This policy with only the never-text tags (:data:`NEVER_TEXT_TAGS`) and ``nav``
        kept: no page chrome, role or hidden rules (the fallback when the full rules
        empty a page)."""
        return BoilerplatePolicy(self.tags & (NEVER_TEXT_TAGS | {"nav"}), (), hidden=False)

    def _verdict(
        self, tag, header_scoped: bool, aside_scoped: bool, holds_content, heading=None
    ) -> bool:
        if self._chrome(tag, header_scoped, aside_scoped, holds_content, heading):
            return True
        return self.hidden and is_hidden(tag)

    def _chrome(
        self, tag, header_scoped: bool, aside_scoped: bool, holds_content, heading=None, titles=None
    ) -> bool:
        """Boilerplate by its tag or role (the hidden rule aside); ``heading`` is the
        ``h1``..``h6`` element ``tag`` is in, if any (``titles``: see :func:`_is_button_title`)."""
        name = (tag.name or "").lower()
        if name in self.tags:
            if name in ("header", "footer"):
                if not header_scoped:
                    return True
            elif name == "aside":
                if not (aside_scoped or _is_note(tag)):
                    return True
            elif name == "form":
                if heading is None and not holds_content(tag):  # in a heading: its title
                    return True
            elif name == "head":
                if not _holds_body(tag):
                    return True
            elif not _is_button_title(tag, heading, {} if titles is None else titles):
                return True
        if "head" in self.tags and (_is_head_metadata(tag) or _is_title_outside_svg(tag)):
            return True  # in a head kept for its content; a title in the body
        return bool(_tokens(tag.get("role")) & self.roles)

    @staticmethod
    def _scopes(tag, header_scoped: bool, aside_scoped: bool) -> tuple[bool, bool]:
        name = (tag.name or "").lower()
        roles = _tokens(tag.get("role"))
        return (
            header_scoped or name in _HEADER_SCOPES or bool(roles & _HEADER_SCOPE_ROLES),
            aside_scoped or name in _ASIDE_SCOPES or "article" in roles,
        )

    def is_boilerplate(self, tag) -> bool:
        """True when ``tag`` is boilerplate where it stands in its tree.

        Example::

            soup = BeautifulSoup("<main><aside>Sidebar</aside></main>", "html.parser")
            BoilerplatePolicy().is_boilerplate(soup.aside)     # True
        """
        header_scoped = aside_scoped = False
        heading = None
        for parent in reversed(list(tag.parents)):
            header_scoped, aside_scoped = self._scopes(parent, header_scoped, aside_scoped)
            if heading is None and _is_title_holder(parent):
                heading = parent

        def holds_content(form) -> bool:
            return form.find(_FORM_CONTENT) is not None or form.find(role="main") is not None

        return self._verdict(tag, header_scoped, aside_scoped, holds_content, heading)

    def _keep_page_title(self, soup) -> None:
        """Move the page's only ``h1`` (with its ``hgroup``) out of the page banner holding it
        (a ``header`` or ``role="banner"`` dropped as boilerplate), to just before it: it is
        the page's title, ``<header><h1>Returns</h1></header>``. The rest of the banner is
        dropped as before, and so is an ``h1`` that is the site's name (only an image, or a
        link to the site's root: ``<h1><a href="/">Acme</a></h1>``). One search, linear."""
        h1s = soup.find_all("h1", limit=2)
        if len(h1s) != 1 or _is_site_name(h1s[0]):
            return
        title, banner = h1s[0], None
        for parent in title.parents:  # the outermost header or banner holding it
            if parent.name == "hgroup" and banner is None:
                title = parent
            elif parent.name == "header" or "banner" in _tokens(parent.get("role")):
                banner = parent
        if banner is not None and not is_hidden(banner) and self.is_boilerplate(banner):
            banner.insert_before(title)

    def drop(self, soup, removed: list | None = None, hidden: list | None = None) -> int:
        """Remove every boilerplate element from ``soup`` in place; return how many were removed.

        One iterative pass over the tree (any nesting depth, linear time). ``removed``,
        when given, receives ``(description, words of text)`` of each removed element
        that may hold page text (not those in :data:`NEVER_TEXT_TAGS`); ``hidden``
        receives the same for those removed only for being hidden (collapsed FAQ
        answers and tabs of a saved page look so).

        Example::

            soup = BeautifulSoup("<header>Site</header><article><header>Title</header></article>",
                                 "html.parser")
            BoilerplatePolicy().drop(soup), soup.get_text()     # (1, 'Title')
        """
        import bs4

        self._keep_page_title(soup)
        holders: set[int] | None = None

        def holds_content(form) -> bool:
            nonlocal holders
            if holders is None:  # ancestors of content markers, marked once for the page
                holders = set()
                markers = soup.find_all(_FORM_CONTENT) + soup.find_all(role="main")
                for marker in markers:
                    parent = marker.parent
                    while parent is not None and id(parent) not in holders:
                        holders.add(id(parent))
                        parent = parent.parent
            return id(form) in holders

        # (tag, its index in its parent's contents, removed only for being hidden). A
        # parent's children are listed once, in order, so removing in reverse keeps every
        # index valid; bs4 would otherwise look each one up among its siblings (quadratic
        # for thousands of dropped siblings).
        doomed = []
        titles: dict[int, bool] = {}  # per heading holding buttons: are they its title?
        stack = [(soup, False, False, None)]  # and the heading the node is in
        while stack:
            node, header_scoped, aside_scoped, heading = stack.pop()
            for index, child in enumerate(node.contents):
                if not isinstance(child, bs4.Tag):
                    continue
                chrome = self._chrome(
                    child, header_scoped, aside_scoped, holds_content, heading, titles
                )
                if chrome:
                    doomed.append((child, index, False))
                elif self.hidden and is_hidden(child):
                    doomed.append((child, index, True))
                else:
                    scopes = self._scopes(child, header_scoped, aside_scoped)
                    if heading is None and _is_title_holder(child):
                        stack.append((child, *scopes, child))
                    else:
                        stack.append((child, *scopes, heading))
        for tag, _, only_hidden in doomed:
            never_text = (
                tag.name in NEVER_TEXT_TAGS or _is_head_metadata(tag) or _is_title_outside_svg(tag)
            )
            if not never_text and (removed is not None or hidden is not None):
                entry = (describe(tag), len(_WORD.findall(tag.get_text(" "))))
                if removed is not None:
                    removed.append(entry)
                if hidden is not None and only_hidden:
                    hidden.append(entry)
        for tag, index, _ in reversed(doomed):
            parent = tag.parent
            name = svg_name(tag) if tag.name == "svg" else ""
            if name and not (_tokens(tag.get("role")) & self.roles or is_hidden(tag)):
                parent.insert(index + 1, bs4.NavigableString(f" {name} "))
            tag.extract(_self_index=index)
            tag.decompose()
        return len(doomed)


#: Never-text elements that may still hold a page's words (a script-free fallback, a
#: client-side template) which a browser running scripts never shows: named when a page
#: gives no other text (see :func:`unshown_text`).
UNSHOWN_TEXT_TAGS = frozenset({"noscript", "template"})


def unshown_text(soup) -> list[tuple[str, int]]:
    """``(description, words)`` of each outermost ``<noscript>`` / ``<template>`` in ``soup``
    that holds words: one iterative walk (linear, any nesting depth).

    Example::

        unshown_text(BeautifulSoup("<noscript><p>Refunds in 30 days</p></noscript>",
                                   "html.parser"))     # [('<noscript>', 4)]
    """
    import bs4

    found = []
    stack = [soup]
    while stack:
        for child in stack.pop().contents:
            if not isinstance(child, bs4.Tag):
                continue
            if child.name in UNSHOWN_TEXT_TAGS:
                words = len(_WORD.findall(child.get_text(" ")))
                if words:
                    found.append((describe(child), words))
            else:
                stack.append(child)
    return found


def _element(name: str) -> tuple[str, re.Pattern, re.Pattern]:
    return (
        f"<{name}>",
        re.compile(rf"<{name}(?=[\s>/])", re.I),
        re.compile(rf"</{name}(?=[\s>/])", re.I),
    )


#: ``(name, opener, closer)`` of what hides everything up to its end (raw text, a comment,
#: and elements whose content a browser does not show: a form field's text, a title, the
#: fallback of an iframe, noscript or canvas, a template).
_UNCLOSED = (
    ("<!--", re.compile(r"<!--(?!-?>)"), re.compile(r"--!?>")),  # "<!-->" is a whole comment
    *map(_element, ("script", "style", "textarea", "title", "iframe", "noscript")),
    *map(_element, ("template", "canvas")),
)
#: Boilerplate elements a browser shows but the parser drops with their content, and that
#: hold no blocks when valid: never closed, they take the rest of the page with them (see
#: :func:`dropped_by_unclosed`).
_SHOWN_BOILERPLATE = ("button", "select", "object")
#: What such an element holds only when it swallowed the page.
_BLOCKS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "table", "ul", "ol", "dl", "pre", "blockquote")
#: The opening of a comment or of an element whose content is text, not markup.
_RAW_TEXT_OPEN = re.compile(
    r"<!--|<(plaintext|xmp|textarea|title|script|style|iframe|noembed|noframes)(?=[\s>/])", re.I
)
#: The ``<name`` of a start or end tag.
_TAG_NAME = re.compile(r"</?[A-Za-z][^\s/>]{0,30}")
#: A tag, for counting the words around tags (``[^<>]``: a run of ``<`` costs linear time).
_TAG = re.compile(r"<[^<>]*>")
#: Markup of content: what an unclosed comment or script swallowing it hides is a page.
_CONTENT_TAG = re.compile(
    r"<(?:p|h[1-6]|div|li|dd|td|th|tr|table|section|article|main|body|blockquote|pre)\b", re.I
)


def _last_unclosed(markup: str, opener: re.Pattern, closer: re.Pattern):
    """The last match of ``opener`` in ``markup`` when no ``closer`` follows it, else None."""
    last = None
    for last in opener.finditer(markup):  # noqa: B007 - the last one is wanted
        pass
    if last is None or closer.search(markup, last.end()):
        return None
    return last


def dropped_by_unclosed(markup: str, soup, tags: Iterable[str]) -> tuple[str, int, int] | None:
    """``(name, offset, words)`` when a ``button``, ``select`` or ``object`` of the boilerplate
    ``tags`` opened at ``offset`` in ``markup`` is never closed and so holds, in ``soup``
    (``markup`` parsed), headings, paragraphs, tables or lists (``words`` words), which a
    browser shows and the parser drops with it; the first such one, else None. Linear.

    Example::

        page = "<p>Hi</p><button>Buy <h2>Fees</h2><p>None</p>"
        dropped_by_unclosed(page, BeautifulSoup(page, "lxml"), ["button"])
        # ('<button>', 9, 3)
    """
    found = None
    wanted = {tag.lower() for tag in tags}
    for name in _SHOWN_BOILERPLATE:
        if name not in wanted:
            continue
        _, opener, closer = _element(name)
        last = _last_unclosed(markup, opener, closer)
        if last is None or (found is not None and last.start() >= found[1]):
            continue
        words = max(
            (
                len(_WORD.findall(element.get_text(" ")))
                for element in soup.find_all(name)
                if element.find(_BLOCKS) is not None
            ),
            default=0,
        )
        if words:
            found = (f"<{name}>", last.start(), words)
    return found


def swallowed_by_unclosed(markup: str) -> tuple[str, int, int] | None:
    """``(name, offset, words)`` when a comment, ``<script>``, ``<style>``, ``<textarea>``,
    ``<title>``, ``<iframe>``, ``<noscript>``, ``<template>`` or ``<canvas>`` opened at
    ``offset`` is never closed and so hides, as in a browser, the content markup after
    it (``words`` words), or a tag is (a ``<`` and a letter with no ``>`` after it, a
    cut-off page: it hides the text after it); the first such one, else ``None``.
    Linear: only the last opener of each kind can be the unclosed one.

    Example::

        swallowed_by_unclosed("<!-- draft <h1>Refunds</h1><p>Within 30 days</p>")
        # ('<!--', 0, 5)
    """
    found = None
    for name, opener, closer in _UNCLOSED:
        last = _last_unclosed(markup, opener, closer)
        if last is None:
            continue
        body = last.end() if name == "<!--" else markup.find(">", last.end()) + 1
        tail = markup[body or last.end() :]
        if _CONTENT_TAG.search(tail) and (found is None or last.start() < found[1]):
            found = (name, last.start(), len(_WORD.findall(_TAG.sub(" ", tail))))
    tag = TAG_OPEN.search(markup, markup.rfind(">") + 1)  # no ">" after it: never closed
    if (
        tag is not None
        and not _in_raw_text(markup, tag.start())
        and (found is None or tag.start() < found[1])
    ):
        name = _TAG_NAME.match(markup, tag.start()).group()
        found = (f"{name} tag", tag.start(), len(_WORD.findall(markup, tag.start() + len(name))))
    return found


def _in_raw_text(markup: str, offset: int) -> bool:
    """Whether ``offset`` is inside a comment or the text of a raw text element (``xmp``,
    ``plaintext``, ``textarea``, ``script``, ...) left open before it, where a ``<`` starts
    no tag. Linear."""
    opener = None
    for opener in _RAW_TEXT_OPEN.finditer(markup, 0, offset):  # noqa: B007 - the last one
        pass
    if opener is None:
        return False
    name = opener.group(1)
    if name is None:  # a comment
        return markup.find("-->", opener.end(), offset) < 0
    if name.lower() == "plaintext":  # never ends
        return True
    return re.compile(f"</{name}", re.I).search(markup, opener.end(), offset) is None


def svg_name(svg) -> str:
    """The accessible name of an inline ``<svg>``, what a screen reader reads for it: its
    ``aria-label``, else the text of its ``<title>`` child ('' when it has neither, or
    ``role="presentation"``/``"none"``). Its ``<text>`` labels are not part of it.

    Example::

        svg_name(BeautifulSoup("<svg><title>Sales chart</title><text>Q1</text></svg>",
                               "html.parser").svg)     # 'Sales chart'
    """
    if _tokens(svg.get("role")) & {"presentation", "none"}:
        return ""
    label = svg.get("aria-label")
    if isinstance(label, str) and label.strip():
        return " ".join(label.split())
    title = svg.find("title", recursive=False)
    return " ".join(title.get_text(" ").split()) if title is not None else ""


def is_hidden(tag) -> bool:
    """True for an element hidden on the page: ``hidden`` (not ``"until-found"``),
    ``aria-hidden="true"`` (any case, spaces around), or an inline style whose last
    ``display`` is ``none`` or whose last ``visibility`` is ``hidden`` / ``collapse``.

    Example::

        is_hidden(BeautifulSoup('<div style="display:none">x</div>', "html.parser").div)  # True
    """
    attrs = tag.attrs or {}
    if "hidden" in attrs and str(attrs.get("hidden") or "").strip().lower() != "until-found":
        return True
    if str(attrs.get("aria-hidden", "")).strip().lower() == "true":
        return True
    style = attrs.get("style")
    return isinstance(style, str) and ":" in style and _style_hides(style)


def _style_hides(style: str) -> bool:
    """True when an inline ``style`` hides its element: its last ``display`` is ``none`` or
    its last ``visibility`` is ``hidden``/``collapse`` (CSS: a later declaration wins), read
    per declaration, so ``--display: none`` or ``max-display: none`` hide nothing."""
    values: dict[str, str] = {}
    for declaration in _CSS_COMMENT.sub(" ", style).split(";"):
        name, colon, value = declaration.partition(":")
        name = name.strip().lower()
        if colon and name in ("display", "visibility"):
            values[name] = _IMPORTANT.sub("", value).strip().lower()
    return values.get("display") == "none" or values.get("visibility") in ("hidden", "collapse")


def describe(tag) -> str:
    """A short start tag naming ``tag`` in a message, e.g. ``<form id="form1">``."""
    attrs = "".join(
        f' {key}="{" ".join(value) if isinstance(value, list) else value}"'[:60]
        for key, value in (tag.attrs or {}).items()
        if key in ("id", "class", "role", "style", "hidden", "aria-hidden")
    )
    return f"<{tag.name}{attrs}>"
