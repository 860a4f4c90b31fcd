"""Named character references read as the HTML standard reads them, for ``html.parser``.

The HTML standard (and lxml) decode a named reference by the longest name of its table
that the text starts with: the legacy names (``amp``, ``copy``, ``not``, ...) need no
``;`` (``&copy 2024`` is "© 2024", ``&ampx`` is "&x", ``&notin`` is "¬in"), and a name
unknown with its ``;`` stays text as written (``&foo;``). In an attribute value a legacy
name without ``;`` followed by a letter, digit or ``=`` is not decoded (``?a=1&copy=2``
keeps its ``&copy=``). Python's ``html.parser`` with bs4 reads otherwise: it drops the ``;``
of an unknown name, decodes ``&notin`` as "∉", leaves ``&ampx`` and ``&copy-2024`` as
text, and decodes ``&copyx`` in an attribute. :func:`spell_named_references` writes every
named reference so that ``html.parser`` reads what the standard reads.

Example::

    from llama_index_ragtune.node_parser.html_entities import spell_named_references

    spell_named_references('<a title="&copyx">&copy 2024 &foo;</a>')
    # '<a title="&amp;copyx">&#xA9; 2024 &amp;foo;</a>'
"""

from __future__ import annotations

import re
from html.entities import html5

#: The names that are references without a ``;`` (the standard's legacy names).
_LEGACY = frozenset(name for name in html5 if not name.endswith(";"))
_LONGEST_LEGACY = max(map(len, _LEGACY))
_REFERENCE = re.compile(r"&([A-Za-z][A-Za-z0-9]*)(;?)")
#: A start tag's name, and an attribute of it (as ``html.parser`` reads them).
_TAG_OR_REFERENCE = re.compile(r"<[A-Za-z][^\t\n\r\f />]*|" + _REFERENCE.pattern)
_ATTRIBUTE = re.compile(
    r"""[\t\n\r\f /]*(?:[^\t\n\r\f />][^\t\n\r\f /=>]*)"""
    r"""(?:[\t\n\r\f ]*=[\t\n\r\f ]*("[^"]*"|'[^']*'|[^\t\n\r\f >]*))?"""
)
#: A whole start tag up to its '>' (one match: most tags hold no '&' and need no more work).
_START_TAG = re.compile(r"<[A-Za-z][^\t\n\r\f />]*(?:" + _ATTRIBUTE.pattern + ")*")


def _as_numeric(text: str) -> str:
    return "".join(f"&#x{ord(char):X};" for char in text)


def _spelled(match: re.Match, in_attribute: bool) -> str:
    """One reference as ``html.parser`` must get it: numeric references for what the
    standard decodes, ``&amp;`` for an ampersand it leaves as text."""
    name, semicolon = match.group(1), match.group(2)
    if semicolon and name + ";" in html5:
        return match.group(0)  # html.parser and bs4 read a known name with its ';'
    for end in range(min(len(name), _LONGEST_LEGACY), 1, -1):
        if name[:end] in _LEGACY:
            rest = name[end:] + semicolon
            after = rest[:1] or match.string[match.end() : match.end() + 1]
            if in_attribute and (after.isalnum() or after == "="):
                break
            return _as_numeric(html5[name[:end]]) + rest
    return "&amp;" + match.group(0)[1:]


def _spell_in_value(value: str) -> str:
    return _REFERENCE.sub(lambda match: _spelled(match, in_attribute=True), value)


def spell_named_references(markup: str) -> str:
    """``markup`` with each named character reference that ``html.parser`` would read
    otherwise than the HTML standard (see the module docstring) written as numeric
    references, or with its ``&`` as ``&amp;`` where the standard leaves it text; known
    references with their ``;`` are left as they are. Linear time.

    Example::

        spell_named_references("<p>AT&T &amp R&D &notin</p>")
        # '<p>AT&amp;T &#x26; R&amp;D &#xAC;in</p>'
    """
    if not isinstance(markup, str) or "&" not in markup:
        return markup
    parts: list[str] = []
    position = 0
    for match in _TAG_OR_REFERENCE.finditer(markup):
        if match.start() < position:
            continue  # inside a start tag already rewritten
        parts.append(markup[position : match.start()])
        if match.group(1) is not None:
            parts.append(_spelled(match, in_attribute=False))
            position = match.end()
            continue
        tag = _START_TAG.match(markup, match.start())
        if "&" not in tag.group(0):
            parts.append(tag.group(0))
            position = tag.end()
            continue
        position = match.end()
        parts.append(match.group(0))
        while True:  # the start tag's attributes, up to its '>'
            attribute = _ATTRIBUTE.match(markup, position)
            if attribute is None or attribute.end() == position:
                break
            value = attribute.group(1)
            if value and "&" in value:
                head = markup[position : attribute.start(1)]
                parts += [head, _spell_in_value(value)]
            else:
                parts.append(attribute.group(0))
            position = attribute.end()
    parts.append(markup[position:])
    return "".join(parts)
