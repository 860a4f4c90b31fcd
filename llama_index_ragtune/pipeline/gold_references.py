"""Gold references and filters of a queries file resolved against the parsed nodes.

A reference is ``{"doc_id", "section"}`` (the document's nodes at or below that
``section_path``), ``{"doc_id"}`` (any node of the document) or ``{"node_id"}``; ids
match in Unicode NFC and with ``\\`` / ``./`` spellings (``pipeline.sources.path_key``).
Anything unknown is a ``DataError`` that names the line and lists what is there; a
bare string naming both a document and a node (a file ``faq.md#1`` beside node 1 of
``faq.md``) is ambiguous. Lookups are indexed: a file of many questions over one
large document, or each with its own filter, resolves in time linear in its lines.
"""

from __future__ import annotations

import json
import reprlib
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.sources import path_key

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 6
_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """``repr(value)`` clipped for an error message (``'xxx...xxx'``, ``[1, 2, ...]``): a
    1 MiB value in a queries line is named, not printed whole.

    Example::

        shown("x" * 10_000)   # "'xxxxxx...xxxxxx'" (about 120 characters)
    """
    return _REPR.repr(value)


def clipped(text: str, limit: int = 120) -> str:
    """``text`` with its middle cut out ("...") when longer than ``limit``, for messages that
    show an already escaped text (``ascii(value)``).

    Example::

        clipped("a" * 500, 10)   # 'aaaaa...aaaaa'
    """
    half = limit // 2
    return text if len(text) <= limit else f"{text[:half]}...{text[-half:]}"


def _typed(value: Any) -> tuple[type, Any]:
    """A filter value with its JSON type: ``1``, ``1.0`` and ``true`` are equal in Python but
    select different nodes (a filter compares the value and its type)."""
    return (type(value), value)


_SEPARATOR = " > "
"""Between the headings of a ``section_path``: a section holds the paths it starts with up
to one."""


class _NodeIndex:
    """Lookups from documents and sections to node ids, and node metadata."""

    def __init__(self, nodes: Sequence[BaseNode], skipped: Collection[str] = ()) -> None:
        self.skipped = set(skipped)
        self.meta = {n.node_id: dict(n.metadata) for n in nodes}
        self.by_doc: dict[str, list[str]] = {}
        for n in nodes:
            self.by_doc.setdefault(n.ref_doc_id or n.node_id, []).append(n.node_id)
        self.keys = {k for m in self.meta.values() for k in m}
        self._selects: dict[tuple[tuple[str, tuple[type, Any]], ...], bool] = {}
        # {(key, (type, value)): node ids}: a filter is a lookup, not a scan of every node
        self._with_value: dict[tuple[str, tuple[type, Any]], set[str]] = {}
        for node_id, meta in self.meta.items():
            for k, v in meta.items():
                if isinstance(v, (str, int, float, bool)):
                    self._with_value.setdefault((k, _typed(v)), set()).add(node_id)
        # {document: {section: node ids at or below it}}, built when a question first names
        # the document: one large document named by many questions is read once
        self._sections: dict[str, dict[str, list[str]]] = {}
        # Other spellings of document and node ids: a file name from macOS is decomposed
        # (NFD) while an id typed in the queries file is composed, and a path may be written
        # with "\\" or "./"; an id already in that form wins, else an alias shared by two
        # ids is ambiguous (None)
        self._aliases: dict[str, str | None] = {}
        for name in [*self.by_doc, *self.meta]:
            key = path_key(name)
            if name == key or self._aliases.get(key) == key:
                self._aliases[key] = key
            else:
                self._aliases[key] = name if self._aliases.get(key, name) == name else None

    def _known(self, name: str, known: Collection[str]) -> str:
        """``name``, or the one id of ``known`` with the same :func:`path_key`."""
        if name in known:
            return name
        alias = self._aliases.get(path_key(name))
        return alias if alias is not None and alias in known else name

    def check_filters(self, filters: dict[str, Any], where: dict[str, Any]) -> None:
        """``DataError`` when no node passes every filter: the question would be asked of an
        empty corpus (a typo in a store name, ``5`` for ``"5"``), so it could only be refused."""
        key = tuple(sorted(((k, _typed(v)) for k, v in filters.items()), key=lambda kv: kv[0]))
        if key not in self._selects:
            sets = sorted((self._with_value.get(item, set()) for item in key), key=len)
            self._selects[key] = bool(sets) and bool(sets[0].intersection(*sets[1:]))
        if self._selects[key]:
            return
        for name, (_, value) in key:
            seen = {repr(m[name]): m[name] for m in self.meta.values() if name in m}
            if repr(value) not in seen:
                raise DataError(
                    f"no node has {name} = {shown(value)}, so the question would be asked of "
                    "no document",
                    hint=f"its values are {shown([seen[r] for r in sorted(seen)[:8]])} (same "
                    "spelling and JSON type)",
                    **where,
                )
        raise DataError(f"no node passes all of the filters {shown(filters)}", **where)

    def failed_filters(self, node_id: str, filters: Mapping[str, Any]) -> dict[str, Any]:
        """The filters of ``filters`` that node ``node_id`` does not pass (value and JSON type
        compared, as :meth:`check_filters` does: ``1`` does not pass ``true``)."""
        meta = self.meta[node_id]
        return {
            k: v
            for k, v in filters.items()
            if k not in meta
            or not isinstance(meta[k], (str, int, float, bool))
            or _typed(meta[k]) != _typed(v)
        }

    def resolve(self, ref: Any, where: dict[str, Any]) -> list[str]:
        if isinstance(ref, str):
            node_id, doc_id = self._known(ref, self.meta), self._known(ref, self.by_doc)
            node = node_id in self.meta
            # a node without a source document is its own document: that is one thing
            if node and doc_id in self.by_doc and self.by_doc[doc_id] != [node_id]:
                spelled = clipped(json.dumps(ref, ensure_ascii=False))
                raise DataError(
                    f"gold reference {shown(ref)} names both a document and a node (node "
                    f"{shown(node_id)} of another document)",
                    hint=f'write {{"doc_id": {spelled}}} for the document or '
                    f'{{"node_id": {spelled}}} for the node, or rename the file without "#"',
                    **where,
                )
            ref = {"node_id": ref} if node else {"doc_id": ref}
        if not isinstance(ref, Mapping):
            raise DataError(
                f"a gold reference must be an object ({{'doc_id', 'section'}}, {{'doc_id'}} or "
                f"{{'node_id'}}), got {shown(ref)}",
                **where,
            )
        extra = sorted(set(ref) - {"doc_id", "section", "node_id"})
        if extra or ("node_id" in ref) == ("doc_id" in ref):
            raise DataError(
                f"gold reference {shown(dict(ref))} must have either 'node_id', or 'doc_id' "
                "with an optional 'section'",
                **where,
            )
        for key in ("node_id", "doc_id", "section"):
            value = ref.get(key)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"gold {key!r} must be a string, got {type(value).__name__} {shown(value)}",
                    hint="write ids and sections as JSON strings",
                    **where,
                )
        if "node_id" in ref:
            ref = {"node_id": self._known(ref["node_id"], self.meta)}
            if ref["node_id"] not in self.meta:
                raise DataError(
                    f"gold node id {shown(ref['node_id'])} is not a node of the parsed documents",
                    hint="node ids look like '<document path>#<n>'; or give 'doc_id' and 'section'",
                    **where,
                )
            return [ref["node_id"]]
        doc_id = self._known(ref["doc_id"], self.by_doc)
        if doc_id not in self.by_doc and doc_id in self.skipped:
            raise DataError(
                f"gold doc_id {shown(doc_id)} was skipped because it has no text (empty, or only "
                "markup / headings), so no node can answer",
                hint="give the file its text, or point the reference at another document",
                **where,
            )
        if doc_id not in self.by_doc:
            # "/grocery/returns.md" (absolute: no alias) suggests "grocery/returns.md"
            needle = path_key(str(doc_id)).lstrip("/").lower()
            close = [d for d in self.by_doc if needle and needle in d.lower()][:3]
            raise DataError(
                f"gold doc_id {shown(doc_id)} is not one of the documents",
                hint=f"doc ids are paths relative to the docs folder{f', e.g. {close}' if close else ''}",
                **where,
            )
        ids = self.by_doc[doc_id]
        section = ref.get("section")
        if section is None:
            return list(ids)
        hits = self._in_section(doc_id, _nfc(section))
        if not hits:
            sections = list(dict.fromkeys(str(self.meta[i].get("section_path")) for i in ids))
            near = [p for p in sections if _section_key(p) == _section_key(section)]
            # a long document: the sections sharing words with the one asked for come first
            words = set(_section_key(section).replace(">", " ").split())
            sections.sort(
                key=lambda p: -len(words & set(_section_key(p).replace(">", " ").split()))
            )
            raise DataError(
                f"no section {shown(section)} in {shown(doc_id)}"
                + (f": did you mean {near[0]!r}? (sections match exactly)" if near else ""),
                hint=f"its sections are {shown(sections[:8])}"
                + (f" and {len(sections) - 8} more" if len(sections) > 8 else "")
                + " (a section is its headings joined by ' > ')",
                **where,
            )
        return hits

    def _in_section(self, doc_id: str, section: str) -> list[str]:
        """The nodes of ``doc_id`` at or below ``section`` (NFC): an index per document of every
        section and the sections above it (``A``, ``A > B``), built once, then looked up."""
        if doc_id not in self._sections:
            index: dict[str, list[str]] = {}
            for node_id in self.by_doc[doc_id]:
                path = _nfc(str(self.meta[node_id].get("section_path", "")))
                ends = [*_find_all(path, _SEPARATOR), len(path)]
                for end in dict.fromkeys(ends):
                    index.setdefault(path[:end], []).append(node_id)
            self._sections[doc_id] = index
        return list(self._sections[doc_id].get(section, []))


def _find_all(text: str, needle: str) -> list[int]:
    """Every offset of ``needle`` in ``text``."""
    found, at = [], text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def _section_key(section: str) -> str:
    """``section`` compared loosely for a suggestion: NFC, case folded, spaces around ``>``
    and runs of whitespace as one."""
    parts = _nfc(section).casefold().split(">")
    return " > ".join(" ".join(p.split()) for p in parts)
