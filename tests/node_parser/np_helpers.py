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

# Written independently of the parser: what a reader of the page does not see as content.
_INVISIBLE = ["script", "style", "noscript", "template", "head", "svg", "iframe", "object", "embed"]
_BOILERPLATE = ["nav", "aside", "form", "header", "footer", "button", "select", "textarea", "input"]
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


def whitespace_tokens(text: str) -> list[str]:
    return text.split()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def visible_html_strings(markup: str) -> list[str]:
    """The text strings a reader sees on the page, without navigation/header/footer boilerplate."""
    soup = BeautifulSoup(markup, "lxml")
    for tag in soup(_INVISIBLE + _BOILERPLATE):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": _BOILERPLATE_ROLES}):
        if not tag.decomposed:
            tag.decompose()
    for tag in soup.find_all(attrs={"aria-hidden": "true"}):
        if not tag.decomposed:
            tag.decompose()
    return [str(s) for s in soup.find_all(string=True) if type(s) is NavigableString]


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
