"""Labelled questions for tuning and evaluation: read, checked against the nodes, split.

A queries file is JSONL, one question a line (the demo's ``queries.jsonl`` format)::

    {"id": "q001", "question": "apple return policy?", "store": "grocery",
     "gold": [{"doc_id": "grocery/perishables.html", "section": "Perishable Food Returns"}],
     "answer": "Apples can be returned within 48 hours ...", "answerable": true, "split": "test"}

Fields: ``question`` (required); ``id`` (default ``line-<n>``; unique); ``gold``, a
list of references, each ``{"doc_id", "section"}`` (the nodes of that document whose
``section_path`` is the section or below it), ``{"doc_id"}`` (any node of the
document) or ``{"node_id"}``; ``answer`` (reference answer, optional);
``answerable`` (default: whether there is gold; ``false`` = the corpus cannot
answer, the right reply is the refusal); ``split`` (``"train"`` / ``"test"`` /
null); ``store`` (shorthand for ``"filters": {"store": ...}``) and ``filters``
(``{metadata key: value}``: the question is asked of those nodes only). Ids and
sections are compared in Unicode NFC (a file name from macOS is decomposed), and a
document or node id may be written with ``\\`` separators or a ``./`` prefix
(``"./grocery\\returns.md"`` is ``grocery/returns.md`` when no file is named so), but not
with a leading ``/`` (an absolute path is not relative to the docs folder). Question
ids are case-sensitive (``Q1`` and ``q1`` are two), but two ids equal in NFC are
duplicates, and so are ``1`` and ``"1"``. An
``answer`` on an unanswerable question (``"answerable": false``, or no ``gold``) is an
error unless it is the refusal: its target is the refusal, so the answer would be ignored. Any other
field, an unknown document / section / node, a gold node outside the question's
filters, or a duplicate id is a ``DataError`` naming the file and line. The file is
read like every data file (``data.reading``): UTF-8 with an optional byte-order mark,
``\n`` / ``\r\n`` / ``\r`` line ends, strict JSON (no repeated key, ``NaN`` or
overflowing number), lines of at most ``MAX_LINE_BYTES`` (1 MiB). Two questions with
the same text up to case, spacing and punctuation (``data.records.twin_key``) are always on
one side of the train / test split: given contradicting splits they are an error.

Example::

    from llama_index_ragtune.pipeline.queries import load_queries, split_queries

    queries = load_queries("help_centre/queries.jsonl", nodes)
    train, test = split_queries(queries, test_fraction=0.2, seed=0)
    train[0].gold_node_ids       # ['grocery/perishables.html#2', ...]
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import iter_lines, parse_json
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.pipeline.sources import path_key

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

FIELDS = ("id", "question", "store", "filters", "gold", "answer", "answerable", "split")
SPLITS = ("train", "test")
MAX_LINE_BYTES = 2**20
"""The longest line of a queries file (1 MiB): one labelled question, not a corpus."""


@dataclass
class LabelledQuery:
    """One question with its gold node ids, reference answer, filters and split.

    Attributes:
        id: unique id.
        question: the text asked.
        gold_node_ids: nodes that answer it (empty for an unanswerable question).
        answer: reference answer (None when unknown or unanswerable).
        answerable: False when the right reply is the refusal.
        filters: ``{metadata key: value}`` the question is asked under (e.g. one store).
        split: ``"train"``, ``"test"`` or None (assigned by :func:`split_queries`).
        source: where it came from: ``"file"``, ``"feedback"``, ``"synthetic"``.
        negative_node_ids: nodes known not to answer it (e.g. sources users rejected).
        judged_node_ids: the nodes whose relevance is known when only some are (feedback:
            the sources users were shown); ``None`` when every node is judged. Rankings
            are scored on the judged nodes only (a condensed list), so a model is not
            penalised for ranking pages nobody has looked at.
    """

    id: str
    question: str
    gold_node_ids: list[str] = field(default_factory=list)
    answer: str | None = None
    answerable: bool = True
    filters: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    source: str = "file"
    negative_node_ids: list[str] = field(default_factory=list)
    judged_node_ids: list[str] | None = None

    @property
    def has_gold(self) -> bool:
        """Answerable with at least one gold node: retrieval can be trained and measured on it."""
        return self.answerable and bool(self.gold_node_ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelledQuery:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _is_refusal(answer: str) -> bool:
    from llama_index_ragtune.grounding.answers import is_refusal

    return is_refusal(answer)


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
            raise DataError(
                f"no section {section!r} in {doc_id!r}",
                hint=f"its sections are {sections[:8]}",
                **where,
            )
        return hits


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_text(name: str, text: str, where: dict[str, Any]) -> None:
    """``DataError`` for a control character (a NUL, ...: not text, e.g. a binary paste) or,
    in a question or id, no visible character at all (``_invisible.is_blank``: only
    whitespace, zero-width / format characters, variation selectors)."""
    bad = _CONTROL.search(text)
    if bad:
        raise DataError(
            f"{name!r} contains the control character U+{ord(bad.group()):04X} at position "
            f"{bad.start()}",
            hint="remove it (control characters are not text)",
            **where,
        )
    if name in ("question", "id") and is_blank(text):
        raise DataError(
            f"{name!r} has no visible character (only whitespace, zero-width or format "
            f"characters: {ascii(text)})",
            hint=f"write the {name} in visible characters",
            **where,
        )


def _parse_line(obj: Any, nodes: _NodeIndex, where: dict[str, Any], n: int) -> LabelledQuery:
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", **where)
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise DataError(
            f"unknown field(s) {unknown}", hint=f"the fields are {list(FIELDS)}", **where
        )
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError("'question' must be a non-empty string", **where)
    _check_text("question", question, where)
    qid = obj.get("id", f"line-{n}")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise DataError(f"'id' must be a non-empty string, got {qid!r}", **where)
    _check_text("id", str(qid), where)
    # Only null / absent means "none": a false, 0 or "" is a wrong type, not an empty value.
    filters = {} if obj.get("filters") is None else obj["filters"]
    if not isinstance(filters, dict):
        raise DataError(f"'filters' must be an object {{key: value}}, got {filters!r}", **where)
    if obj.get("store") is not None:
        if "store" in filters and filters["store"] != obj["store"]:
            raise DataError(
                f"'store' {obj['store']!r} contradicts 'filters' store {filters['store']!r}",
                hint="give the store once",
                **where,
            )
        filters = {**filters, "store": obj["store"]}
    for key, value in filters.items():
        if key not in nodes.keys:
            raise DataError(f"filter key {key!r} is not metadata of any node", **where)
        if not isinstance(value, (str, int, float, bool)):
            raise DataError(f"filter {key!r} must compare a flat value, got {value!r}", **where)
    if filters:
        nodes.check_filters(filters, where)
    gold = [] if obj.get("gold") is None else obj["gold"]
    if not isinstance(gold, list):
        raise DataError(f"'gold' must be a list of references, got {type(gold).__name__}", **where)
    gold_ids = list(dict.fromkeys(i for ref in gold for i in nodes.resolve(ref, where)))
    answerable = obj.get("answerable", bool(gold_ids))
    if not isinstance(answerable, bool):
        raise DataError(f"'answerable' must be true or false, got {answerable!r}", **where)
    if answerable and not gold_ids:
        raise DataError(
            "an answerable question needs 'gold' references",
            hint='add the documents/sections that answer it, or set "answerable": false',
            **where,
        )
    for node_id in gold_ids:
        outside = {k: v for k, v in filters.items() if nodes.meta[node_id].get(k) != v}
        if outside and answerable:
            raise DataError(
                f"gold node {node_id!r} does not pass the question's filters {outside} (its "
                f"metadata: { {k: nodes.meta[node_id].get(k) for k in outside} }), so it can "
                "never be retrieved for it",
                **where,
            )
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"'answer' must be a string or null, got {type(answer).__name__}", **where)
    if answer is not None:
        _check_text("answer", answer, where)
    if answer is not None and is_blank(answer):
        answer = None  # "", " " or a lone zero-width space: no reference answer
    if answer is not None and not answerable and not _is_refusal(answer):
        # an answer without gold made the question unanswerable: trained to refuse, its
        # answer never used (the refusal sentence itself is its target, so it may stand)
        why = "'answerable' is false" if "answerable" in obj else "it has no 'gold' references"
        raise DataError(
            f"the question has an 'answer' but {why}, so its target is the refusal and the "
            "answer is never used",
            hint='add the "gold" documents/sections that hold the answer, or set "answer": '
            "null for a question the documents cannot answer",
            **where,
        )
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise DataError(f"'split' must be 'train', 'test' or null, got {split!r}", **where)
    return LabelledQuery(
        id=str(qid),
        question=question.strip(),
        gold_node_ids=gold_ids,
        answer=answer.strip() if answer is not None else None,
        answerable=answerable,
        filters=dict(filters),
        split=split,
    )


def load_queries(
    path: str | Path, nodes: Sequence[BaseNode], skipped: Collection[str] = ()
) -> list[LabelledQuery]:
    """Read and check a queries JSONL file against the parsed ``nodes`` (module docstring).

    ``skipped``: ids of documents left out for having no text (a gold reference to one
    says so). Raises ``FileNotFoundError`` for a missing file and ``DataError`` naming
    the file and line for anything malformed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"queries file not found: {path}")
    index = _NodeIndex(nodes, skipped)
    queries: list[LabelledQuery] = []
    first_line: dict[str, tuple[int, str]] = {}
    label: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[int, bool]] = {}
    given_split: dict[str, tuple[int, str]] = {}
    # The shared strict reader: a BOM, CRLF / CR line ends and U+2028 inside strings are
    # accepted; a repeated key, NaN, a huge number or deep nesting is a DataError at file:line.
    for n, line in iter_lines(path, max_line_bytes=MAX_LINE_BYTES):
        where = {"path": path, "line": n}
        query = _parse_line(parse_json(line, path, n), index, where, n)
        id_key = _nfc(query.id)  # composed and decomposed spellings print alike
        if id_key in first_line:
            before, spelled = first_line[id_key]
            other = "" if spelled == query.id else f" as {spelled!r}, another Unicode form"
            raise DataError(
                f"duplicate id {query.id!r} (first used on line {before}{other})", **where
            )
        first_line[id_key] = (n, query.id)
        text = twin_key(query.question)
        if query.split is not None:
            if text in given_split and given_split[text][1] != query.split:
                raise DataError(
                    f"the question {query.question[:80]!r} is in split {query.split!r} here but "
                    f"its twin on line {given_split[text][0]} (same text up to case, spacing "
                    f"and punctuation) is in {given_split[text][1]!r}",
                    hint="a test question whose twin is trained on is not a test: give both "
                    "the same split",
                    **where,
                )
            given_split.setdefault(text, (n, query.split))
        twin = (twin_key(query.question), tuple(sorted(query.filters.items())))
        if twin in label and label[twin][1] != query.answerable:
            raise DataError(
                f"the question {query.question[:80]!r} is marked "
                f"{'answerable' if query.answerable else 'unanswerable'} here but not on line "
                f"{label[twin][0]} (same text and filters)",
                hint="the two labels contradict each other: keep one, or change the filters",
                **where,
            )
        label.setdefault(twin, (n, query.answerable))
        queries.append(query)
    if not queries:
        raise DataError("no questions in the file", path=path)
    return queries


def split_queries(
    queries: Sequence[LabelledQuery], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """``(train, test)``: the queries' own splits, else a seeded split by question text.

    Questions with the same normalised text (up to case, spacing and punctuation; asked
    under different filters, answerable or not) stay on one side, so none is tested on
    a twin it was trained on: a question without a split goes to the side of a twin
    that has one (to test when its twins were given both). Groups with an answerable
    question and groups without are split separately, so both sides get some of each.
    Queries without a split among queries with one are assigned the same way.

    Example::

        train, test = split_queries(queries, test_fraction=0.25, seed=0)
    """
    fixed = [q for q in queries if q.split is not None]
    free = [q for q in queries if q.split is None]
    assigned = {q.id: q.split for q in fixed}
    given: dict[str, set[str]] = {}
    for q in fixed:
        given.setdefault(twin_key(q.question), set()).add(str(q.split))
    by_text: dict[str, list[LabelledQuery]] = {}
    for q in free:
        by_text.setdefault(twin_key(q.question), []).append(q)
    groups: dict[tuple[bool, str], list[LabelledQuery]] = {}
    for text, group in by_text.items():
        if text in given:  # follows its twins' split
            side = "test" if "test" in given[text] else "train"
            assigned.update((q.id, side) for q in group)
        else:
            groups[(any(q.answerable for q in group), text)] = group
    rng = random.Random(seed)
    for answerable in (True, False):
        keys = sorted(k for k in groups if k[0] is answerable)
        rng.shuffle(keys)
        n_test = round(len(keys) * test_fraction)
        if test_fraction > 0 and n_test == 0 and len(keys) > 1:
            n_test = 1
        for i, key in enumerate(keys):
            for q in groups[key]:
                assigned[q.id] = "test" if i < n_test else "train"
    done = [replace(q, split=assigned[q.id]) for q in queries]
    return [q for q in done if q.split == "train"], [q for q in done if q.split == "test"]


def split_with_test(
    queries: Sequence[LabelledQuery],
    test_fraction: float = 0.2,
    seed: int = 0,
    path: str | Path | None = None,
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """:func:`split_queries`, or a ``DataError`` (naming ``path``, the questions' file)
    when no question is left to test on."""
    train, test = split_queries(queries, test_fraction, seed)
    if not test:
        raise DataError(
            f"no test question: all {len(queries)} questions went to training",
            path=path,
            hint='mark some with "split": "test" or raise test_fraction',
        )
    return train, test


def carve_dev(
    train: Sequence[LabelledQuery], fraction: float, seed: int = 0
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """``(rest, dev)``: training questions kept out of the decoder's training to choose the
    refusal threshold on, drawn per class (answerable / unanswerable) with ``seed``.

    Twins (the same normalised text, as in :func:`split_queries`) are drawn together, so
    the threshold is never chosen on a question the decoder was trained on.

    Example::

        rest, dev = carve_dev(train, fraction=0.2, seed=0)
    """
    rng = random.Random(f"dev:{seed}")
    twins: dict[str, list[LabelledQuery]] = {}
    for q in train:
        twins.setdefault(twin_key(q.question), []).append(q)
    dev_ids: set[str] = set()
    for answerable in (True, False):
        groups = sorted(
            sorted(q.id for q in group)
            for group in twins.values()
            if any(q.answerable for q in group) is answerable
        )
        rng.shuffle(groups)
        wanted = round(sum(map(len, groups)) * fraction)
        for group in groups:
            if wanted <= 0:
                break
            dev_ids.update(group)
            wanted -= len(group)
    return [q for q in train if q.id not in dev_ids], [q for q in train if q.id in dev_ids]


def save_queries(queries: Iterable[LabelledQuery], path: str | Path) -> Path:
    """Write resolved queries as JSON (the work folder's copy), atomically."""
    from llama_index_ragtune._atomic import atomic_write_json

    return atomic_write_json(Path(path), [q.to_dict() for q in queries])


def read_saved_queries(path: str | Path) -> list[LabelledQuery]:
    """Read queries written by :func:`save_queries`."""
    return [LabelledQuery.from_dict(d) for d in json.loads(Path(path).read_text("utf-8"))]
