"""MathML (``<math>``) read as one line of text.

A formula's text nodes glued together read as nonsense: ``<msup><mi>x</mi><mn>2</mn>
</msup>`` with its TeX annotation gives "x2x^2". :func:`replace_math` puts one readable
form in place of each ``<math>`` element: the TeX source of an ``<annotation>`` in TeX
(as MathJax, KaTeX, pandoc and Wikipedia write it) when there is one, else its ``alttext``,
else the presentation tokens (``mi``, ``mn``, ``mo``, ...) separated by spaces; the other
annotations (``annotation-xml``, content MathML) are not text.

Example::

    from bs4 import BeautifulSoup
    from llama_index_ragtune.node_parser.html_math import replace_math

    soup = BeautifulSoup('<p>Area <math><mi>r</mi><mo>+</mo><mn>1</mn></math></p>', "html.parser")
    replace_math(soup)
    soup.p.get_text()     # 'Area  r + 1 '
"""

from __future__ import annotations

from llama_index_ragtune.node_parser.html_text import _bs4, events, text_types

#: ``encoding`` values of an ``<annotation>`` that holds TeX or LaTeX source.
TEX_ENCODINGS = frozenset({
    "application/x-tex", "text/x-tex", "application/x-latex", "text/x-latex", "text/latex",
    "text/tex", "tex", "latex",
})  # fmt: skip
#: Annotations that are not the formula's presentation text.
_ANNOTATIONS = frozenset({"annotation", "annotation-xml"})


def math_text(math) -> str:
    """The readable form of a ``<math>`` element (see the module docstring), on one line.

    Example::

        soup = BeautifulSoup('<math><semantics><msup><mi>x</mi><mn>2</mn></msup>'
                             '<annotation encoding="application/x-tex">x^2</annotation>'
                             '</semantics></math>', "html.parser")
        math_text(soup.math)     # 'x^2'
    """
    for annotation in math.find_all("annotation"):
        encoding = str(annotation.get("encoding", "")).strip().lower()
        if encoding in TEX_ENCODINGS and annotation.get_text().strip():
            return " ".join(annotation.get_text().split())
    alttext = math.get("alttext")
    if isinstance(alttext, str) and alttext.strip():
        return " ".join(alttext.split())
    tag_type, texts = _bs4().Tag, text_types()
    tokens: list[str] = []
    skipping = 0  # inside an annotation
    for entering, node in events(math.contents):
        if isinstance(node, tag_type):
            if node.name in _ANNOTATIONS:
                skipping += 1 if entering else -1
        elif not skipping and type(node) in texts and node.strip():
            tokens.append(node.strip())
    return " ".join(" ".join(tokens).split())


def replace_math(soup) -> int:
    """Replace, in place, each ``<math>`` element of ``soup`` by its :func:`math_text`
    (set off by spaces); return how many were replaced. Linear in the page (each formula
    replaced at the index the walk found it at, not looked up among its siblings).

    Example::

        soup = BeautifulSoup("<p>a<math><mi>x</mi><mo>=</mo><mn>1</mn></math>b</p>", "lxml")
        replace_math(soup), soup.p.get_text()     # (1, 'a x = 1 b')
    """
    bs4 = _bs4()
    found = []  # (formula, its parent, its index there); formulas inside one are not visited
    stack = [soup]
    while stack:
        node = stack.pop()
        for index, child in enumerate(node.contents):
            if not isinstance(child, bs4.Tag):
                continue
            if child.name == "math":
                found.append((child, node, index))
            else:
                stack.append(child)
    for math, parent, index in found:  # one child replaced by one: the other indices hold
        text = math_text(math)
        math.extract(_self_index=index)
        parent.insert(index, bs4.NavigableString(f" {text} " if text else " "))
        math.decompose()
    return len(found)
