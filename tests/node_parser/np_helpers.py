"""Helpers for the node parser tests: visible text of a document and "nothing lost" checks."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString

FIXTURES = Path(__file__).parent / "fixtures"
WORD = re.compile(r"[^\W_]+")

# Written independently of the parser, from the documented rules (html_clean's docstring):
# what a reader of the page does not see as content, or sees as page chrome.
_INVISIBLE = ["script", "style", "noscript", "template", "head", "svg", "iframe", "object", "embed"]
_ALWAYS = ["nav", "button", "select", "textarea", "input", "canvas"]
_BOILERPLATE_ROLES = [
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "search",
    "menu",
    "menubar",
    "toolbar",
]


_HEADER_SCOPES = [
    *("article", "aside", "main", "nav", "section"),
    *("blockquote", "details", "dialog", "fieldset", "figure", "td", "th"),
    *("li", "dt", "dd"),
]
_HEADER_SCOPE_ROLES = ["article", "complementary", "main", "navigation", "region"]
_NOTE_WORDS = {
    *("note", "notes", "sidenote", "callout", "admonition", "tip", "hint"),
    *("important", "warning", "caution", "attention", "danger"),
}


def _page_chrome(tag) -> bool:
    """header/footer outside sectioning content, sectioning roots and list items; aside
    outside article/aside/nav/section (unless it is a note, footnote or admonition); a form
    that does not hold the page's content."""
    if tag.name in ("header", "footer"):
        return (
            tag.find_parent(_HEADER_SCOPES) is None
            and tag.find_parent(role=_HEADER_SCOPE_ROLES) is None
        )
    if tag.name == "aside":
        roles = " ".join(tag.get("role", "").split()).lower()
        classes = " ".join(tag.get("class", [])).lower()
        class_words = set(re.split(r"[\s_-]+", classes))
        if (
            "note" in roles.split()
            or "doc-" in roles
            or "footnote" in classes
            or "endnote" in classes
            or class_words & _NOTE_WORDS
        ):
            return False
        return tag.find_parent(["article", "aside", "nav", "section"]) is None
    if tag.name == "form":
        markers = ["main", "article", "section", "table", "h1", "h2", "h3", "h4", "h5", "h6"]
        return tag.find(markers) is None and tag.find(role="main") is None
    return False


def whitespace_tokens(text: str) -> list[str]:
    return text.split()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def visible_html_strings(markup: str) -> list[str]:
    """The text strings (and image alt texts) a reader sees on the page, without boilerplate."""
    soup = BeautifulSoup(markup, "lxml")
    for tag in soup(_INVISIBLE + _ALWAYS):
        if not tag.decomposed:
            tag.decompose()
    for tag in [t for t in soup(["header", "footer", "aside", "form"]) if _page_chrome(t)]:
        if not tag.decomposed:
            tag.decompose()
    for tag in soup.find_all(attrs={"role": _BOILERPLATE_ROLES}):
        if not tag.decomposed:
            tag.decompose()
    for tag in soup.find_all(attrs={"aria-hidden": "true"}):
        if not tag.decomposed:
            tag.decompose()
    strings = [str(s) for s in soup.find_all(string=True) if type(s) is NavigableString]
    return strings + [img["alt"] for img in soup.find_all("img", alt=True)]


def markdown_visible_text(markdown: str) -> str:
    """The text of a Markdown document as rendered (CommonMark + GFM tables)."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    return BeautifulSoup(rendered, "lxml").get_text(" ")


def markdown_to_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def missing_words(visible: str, node_texts: Iterable[str]) -> list[str]:
    """Words of ``visible`` (with multiplicity) that no node accounts for."""
    texts = list(node_texts)
    have = Counter(w for t in texts for w in words(t)) | Counter(
        w for t in texts for w in words(html.unescape(t))
    )
    return sorted((Counter(words(visible)) - have).elements())


def missing_html_words(strings: Iterable[str], node_texts: Iterable[str]) -> list[str]:
    """Words of the page's visible strings that appear in no node, plus a multiset check on characters.

    HTML strings are concatenated by the layout (``<b>foo</b>bar`` reads "foobar"),
    so a word is looked up as a substring of the node texts; the character
    counts then make sure nothing was dropped in bulk.
    """
    texts = list(node_texts)
    joined = "\n".join(texts)
    lost = [w for s in strings for w in words(s) if w not in joined]
    need = Counter(ch for s in strings for ch in s if ch.isalnum())
    have = Counter(ch for ch in joined if ch.isalnum())
    short = need - have
    if short:
        lost.append(f"<characters short: {dict(short)}>")
    return lost
