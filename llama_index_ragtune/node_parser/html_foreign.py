"""HTML elements inside ``<svg>`` / ``<math>`` moved out, as the HTML standard's parser does.

In foreign content (SVG, MathML) a start tag of an HTML element such as ``<p>``, ``<div>``,
``<h1>``, ``<table>`` or ``<ul>`` ends the foreign elements open around it ("breaks out"):
the element and everything after it are page content. Neither lxml nor ``html.parser``
does this, so an inline icon left unclosed (``<svg class="icon"><path d="..."><h1>...``)
held the rest of the page, and was dropped with it (the parsers drop ``svg``), and a
``<th>`` inside an ``<svg>`` made lxml ignore ``</svg>`` and swallow what followed.
:func:`break_out_of_foreign_content` moves such elements, and what follows them, to just
after the outermost ``svg`` / ``math``. Inside an HTML integration point (``foreignObject``,
``desc``, ``title``, MathML token elements, ``annotation-xml``) HTML stays where it is.

Example::

    from bs4 import BeautifulSoup
    from llama_index_ragtune.node_parser.html_foreign import break_out_of_foreign_content

    soup = BeautifulSoup("<svg><path d='M0'><h1>Refunds</h1><p>Within 30 days.</p>", "lxml")
    break_out_of_foreign_content(soup)
    soup.svg.find("h1")         # None: the heading and paragraph follow the svg
"""

from __future__ import annotations

import re

#: Start tags that break out of foreign content (the HTML standard, "in foreign content").
BREAKOUT_TAGS = frozenset({
    "b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em",
    "embed", "h1", "h2", "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing",
    "menu", "meta", "nobr", "ol", "p", "pre", "ruby", "s", "small", "span", "strong", "strike",
    "sub", "sup", "table", "tt", "u", "ul", "var",
})  # fmt: skip
#: Elements whose content is HTML again (SVG and MathML integration points).
_INTEGRATION_POINTS = frozenset(
    {"foreignobject", "desc", "title", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"}
)
_FOREIGN_ROOTS = ("svg", "math")
#: Pages that may hold foreign content (a cheap test before walking the tree).
FOREIGN_START = re.compile(r"<(?:svg|math)[\s/>]", re.I)


def _breaks_out(tag) -> bool:
    name = tag.name.lower()
    if name == "font":
        return bool({"color", "face", "size"} & {key.lower() for key in tag.attrs or {}})
    return name in BREAKOUT_TAGS


def _first_breakout(root):
    """The first element in ``root`` (document order) that breaks out of it, or None."""
    from llama_index_ragtune.node_parser.html_text import _bs4

    tag_type = _bs4().Tag
    stack = [iter(root.contents)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif isinstance(child, tag_type):
            if _breaks_out(child):
                return child
            if child.name.lower() not in _INTEGRATION_POINTS:
                stack.append(iter(child.contents))
    return None


def _move_after(root, element, root_index: int) -> None:
    """Move ``element``, its later siblings and the later siblings of each of its ancestors
    inside ``root``, in document order, to just after ``root`` (``root_index``: its index in
    its parent). Linear: one index lookup for each run of siblings."""
    chain, node = [], element
    while node is not root:  # the element and its ancestors inside root
        chain.append(node)
        node = node.parent
    moved = []
    for level, node in enumerate(chain):
        sibling = node if level == 0 else node.next_sibling
        if sibling is not None:
            index = node.parent.index(sibling)
            while sibling is not None:
                following = sibling.next_sibling
                moved.append(sibling.extract(_self_index=index))  # the next one takes its place
                sibling = following
    if moved:
        root.parent.insert(root_index + 1, *moved)


def break_out_of_foreign_content(soup) -> None:
    """Move the HTML elements that break out of ``svg`` / ``math`` elements of ``soup`` (and
    what follows them there) to after the outermost such element, as browsers parse them.

    One walk over the tree in document order (linear: thousands of icons, each deep in the
    page, used to look up their ancestors one by one); what is moved out of an element
    comes next in the walk, so a ``svg`` among it is read as an outermost one."""
    from llama_index_ragtune.node_parser.html_text import _bs4

    tag_type = _bs4().Tag
    stack = [[soup, 0]]  # (element, index of its next child to visit)
    while stack:
        frame = stack[-1]
        parent, index = frame
        if index >= len(parent.contents):
            stack.pop()
            continue
        frame[1] = index + 1
        child = parent.contents[index]
        if not isinstance(child, tag_type):
            continue
        if child.name in _FOREIGN_ROOTS:  # outermost: the walk does not enter foreign content
            element = _first_breakout(child)
            if element is not None:  # everything after it leaves the root with it
                _move_after(child, element, index)
        else:
            stack.append([child, 0])
