"""Gold references and filters of a queries file resolved against the parsed nodes.

A reference is ``{"doc_id", "section"}`` (the document's nodes at or below that
``section_path``), ``{"doc_id"}`` (any node of the document) or ``{"node_id"}``; ids
match in Unicode NFC and with ``\\`` / ``./`` spellings (``pipeline.sources.path_key``).
Anything unknown is a ``DataError`` that names the line and lists what is there.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.sources import path_key

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _section_matches(path: str, section: str) -> bool:
    return path == section or path.startswith(section + " > ")


class _NodeIndex:
    """Lookups from documents and sections to node ids, and node metadata."""

    def __init__(self, nodes: Sequence[BaseNode], skipped: Collection[str] = ()) -> None:
        self.skipped = set(skipped)
        self.meta = {n.node_id: dict(n.metadata) for n in nodes}
        self.by_doc: dict[str, list[str]] = {}
        for n in nodes:
            self.by_doc.setdefault(n.ref_doc_id or n.node_id, []).append(n.node_id)
        self.keys = {k for m in self.meta.values() for k in m}
        self._selects: dict[tuple[tuple[str, Any], ...], bool] = {}
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
        key = tuple(sorted(filters.items(), key=lambda item: item[0]))
        if key not in self._selects:
            self._selects[key] = any(
                all(k in meta and meta[k] == v and type(meta[k]) is type(v) for k, v in key)
                for meta in self.meta.values()
            )
        if self._selects[key]:
            return
        for name, value in key:
            seen = {repr(m[name]): m[name] for m in self.meta.values() if name in m}
            if repr(value) not in seen:
                raise DataError(
                    f"no node has {name} = {value!r}, so the question would be asked of no document",
                    hint=f"its values are {[seen[r] for r in sorted(seen)[:8]]} (same spelling and "
                    "JSON type)",
                    **where,
                )
        raise DataError(f"no node passes all of the filters {filters}", **where)

    def resolve(self, ref: Any, where: dict[str, Any]) -> list[str]:
        if isinstance(ref, str):
            node = self._known(ref, self.meta) in self.meta
            ref = {"node_id": ref} if node else {"doc_id": ref}
        if not isinstance(ref, Mapping):
            raise DataError(
                f"a gold reference must be an object ({{'doc_id', 'section'}}, {{'doc_id'}} or "
                f"{{'node_id'}}), got {ref!r}",
                **where,
            )
        extra = sorted(set(ref) - {"doc_id", "section", "node_id"})
        if extra or ("node_id" in ref) == ("doc_id" in ref):
            raise DataError(
                f"gold reference {dict(ref)!r} must have either 'node_id', or 'doc_id' with an "
                "optional 'section'",
                **where,
            )
        for key in ("node_id", "doc_id", "section"):
            value = ref.get(key)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"gold {key!r} must be a string, got {type(value).__name__} {value!r}",
                    hint="write ids and sections as JSON strings",
                    **where,
                )
        if "node_id" in ref:
            ref = {"node_id": self._known(ref["node_id"], self.meta)}
            if ref["node_id"] not in self.meta:
                raise DataError(
                    f"gold node id {ref['node_id']!r} is not a node of the parsed documents",
                    hint="node ids look like '<document path>#<n>'; or give 'doc_id' and 'section'",
                    **where,
                )
            return [ref["node_id"]]
        doc_id = self._known(ref["doc_id"], self.by_doc)
        if doc_id not in self.by_doc and doc_id in self.skipped:
            raise DataError(
                f"gold doc_id {doc_id!r} was skipped because it has no text (empty, or only "
                "markup / headings), so no node can answer",
                hint="give the file its text, or point the reference at another document",
                **where,
            )
        if doc_id not in self.by_doc:
            # "/grocery/returns.md" (absolute: no alias) suggests "grocery/returns.md"
            needle = path_key(str(doc_id)).lstrip("/").lower()
            close = [d for d in self.by_doc if needle in d.lower()][:3]
            raise DataError(
                f"gold doc_id {doc_id!r} is not one of the documents",
                hint=f"doc ids are paths relative to the docs folder{f', e.g. {close}' if close else ''}",
                **where,
            )
        ids = self.by_doc[doc_id]
        section = ref.get("section")
        if section is None:
            return list(ids)
        hits = [
            i
            for i in ids
            if _section_matches(_nfc(str(self.meta[i].get("section_path", ""))), _nfc(section))
        ]
        if not hits:
            sections = list(dict.fromkeys(str(self.meta[i].get("section_path")) for i in ids))
            near = [p for p in sections if _section_key(p) == _section_key(section)]
            # a long document: the sections sharing words with the one asked for come first
            words = set(_section_key(section).replace(">", " ").split())
            sections.sort(
                key=lambda p: -len(words & set(_section_key(p).replace(">", " ").split()))
            )
            raise DataError(
                f"no section {section!r} in {doc_id!r}"
                + (f": did you mean {near[0]!r}? (sections match exactly)" if near else ""),
                hint=f"its sections are {sections[:8]}"
                + (f" and {len(sections) - 8} more" if len(sections) > 8 else "")
                + " (a section is its headings joined by ' > ')",
                **where,
            )
        return hits


def _section_key(section: str) -> str:
    """``section`` compared loosely for a suggestion: NFC, case folded, spaces around ``>``
    and runs of whitespace as one."""
    parts = _nfc(section).casefold().split(">")
    return " > ".join(" ".join(p.split()) for p in parts)
