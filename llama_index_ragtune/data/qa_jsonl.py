"""Your own grounded QA data as JSONL: questions with their sources, answers or refusals.

``ragtune train decoder --qa FILE`` reads this format (next to the ready-made
``--squad`` / ``--scifact`` loaders). One question a line::

    {"id": "q1", "question": "How long can I return opened electronics?",
     "sources": [{"id": "returns", "text": "Opened electronics can be returned within 14 days."},
                 {"id": "hours", "text": "The store opens at 8am."}],
     "gold": ["returns"], "answer": "within 14 days", "split": "train"}
    {"question": "Do you sell concert tickets?",
     "sources": [{"id": "hours", "text": "The store opens at 8am."}], "answer": ""}

Fields:

- ``question`` (required): a non-empty string.
- ``sources`` (required; ``contexts`` is accepted as its other name): a non-empty
  list of ``{"id": string, "text": string}``, the passages the model is shown, in
  this order (at most ``--top-k`` of them per prompt). A source id names one text
  across the file: the same id on two lines must carry the same text.
- ``answer``: the reference answer. ``""``, ``null`` or no ``answer`` field marks the
  question unanswerable from its sources: the target is the refusal sentence.
- ``gold``: the ids of this line's sources that hold the answer (required when
  there is an answer; each must be one of the line's ``sources``).
- ``evidence`` (optional): a quote from a gold source that supports the answer; it
  is written into the target after the citation. Without it the answer itself
  must appear in a gold source (case, spacing and invisible characters ignored), so an abstractive
  answer needs an ``evidence`` quote.
- ``id`` (optional, unique; default ``line-<n>``) and ``split`` (optional:
  ``"train"``, the default, or ``"test"``: held out and scored after training). The
  same question (up to case, spacing, punctuation and invisible characters) may not
  be in both splits.

Any other field (named with the accepted field it most likely means: ``query`` ->
``question``), a wrong type, an unknown gold id, a repeated id or a source id
with two texts, or a NUL character (``\\u0000``) in a text, is a ``DataError``
naming the file and line; ids written in two Unicode
forms (``'caf\u00e9'``, ``'cafe\u0301'``: equal in NFC, printed alike) are one id, so
the second spelling is such an error, naming both. So are two lines that ask
the same question (up to case, spacing and punctuation) of the same sources with other
``gold`` ids, or answerable on one and not on the other; lines repeating another
entirely are kept and counted in a warning.

Example::

    from llama_index_ragtune.data.qa_jsonl import load_grounded_qa

    qa = load_grounded_qa("my_qa.jsonl")
    qa.train[0].question, qa.train[0].gold_doc_ids, qa.sources[qa.train[0].qid]
    len(qa.documents)               # one Document per distinct source id
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.field_names import unknown_fields_message
from llama_index_ragtune.data.json_files import iter_json_lines
from llama_index_ragtune.data.qa import QAExample
from llama_index_ragtune.data.records import id_form, match_text, other_form_note, twin_key

if TYPE_CHECKING:
    from llama_index.core.schema import Document

logger = logging.getLogger(__name__)

FORMAT = """\
--qa FILE: JSONL, one question a line:
  {"id": "q1", "question": "How long can I return opened electronics?",
   "sources": [{"id": "returns", "text": "Opened electronics can be returned within 14 days."},
               {"id": "hours", "text": "The store opens at 8am."}],
   "gold": ["returns"], "answer": "within 14 days", "split": "train"}
  question   required, a non-empty string
  sources    required (or "contexts"): [{"id", "text"}, ...], shown in this order (at most --top-k);
             one source id names one text across the file
  answer     the reference answer; "" / null / absent = unanswerable (the target is the refusal)
  gold       ids of this line's sources that hold the answer (required with an answer)
  evidence   optional quote from a gold source, written after the citation; without it the
             answer itself must appear in a gold source
  id         optional, unique (default line-<n>);  split: "train" (default) or "test" (scored)
A wrong line stops the run with FILE:LINE, what is wrong and how to fix it.
"""
FIELDS = ("id", "question", "sources", "contexts", "gold", "answer", "evidence", "split")
SPLITS = ("train", "test")
SCHEMA = (
    'each line: {"question": str, "sources": [{"id": str, "text": str}, ...], '
    '"gold": [source id, ...], "answer": str or "" (unanswerable), '
    'optional "id", "evidence", "split": "train"/"test"}'
)


@dataclass
class GroundedQAExample(QAExample):
    """A ``QAExample`` from a QA file: ``split`` as written, and how its evidence is checked.

    ``match_evidence``: the answer is abstractive, so ``GroundedSFTBuilder`` checks
    that the ``evidence`` quote (not the answer) is still in a shown source.

    Example::

        GroundedQAExample("q1", "Return window?", ["returns"], ["14 days"], split="test")
    """

    split: str = "train"
    match_evidence: bool = False


@dataclass
class GroundedQAData:
    """What ``load_grounded_qa`` read: examples by split, the sources of each, the documents.

    Attributes:
        train / test: the examples of each split, in file order.
        sources: question id -> the ids of its sources, in the order written.
        documents: one ``Document`` per distinct source id (``id_`` = the source id).

    Example::

        qa = load_grounded_qa("my_qa.jsonl")
        builder.build_contexts(qa.train, qa.sources, force_gold=True)
    """

    train: list[GroundedQAExample]
    test: list[GroundedQAExample]
    sources: dict[str, list[str]]
    documents: list[Document] = field(default_factory=list)


_Texts = dict[str, tuple[str, int, str]]
"""The sources read so far: ``records.id_form(id)`` -> (text, first line, the id as written)."""


class _Line:
    """Typed fields of one parsed line; errors name the file, the line and the field."""

    def __init__(self, path: Path, number: int, record: Any) -> None:
        self.path, self.number = path, number
        if not isinstance(record, dict):
            raise self.error(f"expected a JSON object, got {type(record).__name__}")
        self.record = record

    def error(self, message: str, hint: str = SCHEMA) -> DataError:
        return DataError(message, path=self.path, line=self.number, hint=hint)

    def refuse_nul(self, value: str, what: str) -> None:
        """A NUL character (``\\u0000``) in a text is a broken export, never text to train on."""
        at = value.find("\x00")
        if at >= 0:
            raise self.error(
                f"{what} holds a NUL character (\\u0000) at position {at}",
                hint="remove the \\u0000 from the text (a binary or broken export?) "
                "and check the text around it",
            )

    def text(self, key: str, required: bool = False, empty_ok: bool = False) -> str | None:
        value = self.record.get(key)
        if value is None:
            if required:
                raise self.error(f"missing field {key!r}")
            return None
        if not isinstance(value, str):
            raise self.error(f"field {key!r} must be a string, got {type(value).__name__}")
        self.refuse_nul(value, f"field {key!r}")
        if not value.strip() and not empty_ok:
            raise self.error(f"field {key!r} is empty")
        if value.strip() and is_blank(value):
            raise self.error(
                f"field {key!r} holds only invisible characters ({ascii(value[:20])})",
                hint="write the text"
                + (', or "" for a question its sources cannot answer' if empty_ok else ""),
            )
        return value


def load_grounded_qa(path: str | Path) -> GroundedQAData:
    """Read a grounded QA JSONL file (format in the module docstring); raise ``DataError``.

    Example::

        qa = load_grounded_qa("my_qa.jsonl")
        [e.answerable for e in qa.train]          # False where "answer" is empty
    """
    path = Path(path)
    texts: _Texts = {}  # id_form(source id) -> (text, first line, id as written)
    seen_ids: dict[str, tuple[str, int]] = {}  # id_form -> (id as written, line)
    first_split: dict[str, tuple[str, int]] = {}  # question (twin_key) -> (split, first line)
    examples: list[GroundedQAExample] = []
    sources: dict[str, list[str]] = {}
    asked = _AskedTwice(sources)
    matched: dict[str, str] = {}  # id_form(source id) -> match_text(its text), once per source
    for number, record in iter_json_lines(path):
        line = _Line(path, number, record)
        example, shown = _example(line, texts, matched)
        spelled, first_line = seen_ids.setdefault(id_form(example.qid), (example.qid, number))
        if first_line != number:
            raise line.error(
                f"id {example.qid!r} is used on line {first_line} too"
                + other_form_note(example.qid, spelled),
                hint="give every question its own id",
            )
        question = twin_key(example.question)
        twin = first_split.setdefault(question, (example.split, number))
        if twin[0] != example.split:
            raise line.error(
                f"the question is on line {twin[1]} too (up to case, spacing, punctuation and "
                f"invisible characters), there in split {twin[0]!r}, here in {example.split!r}",
                hint="a question in both splits would be scored on what it was trained on: "
                "give both lines the same split or remove one",
            )
        sources[example.qid] = shown
        asked.check(line, example, question, twin[1])
        examples.append(example)
    if not examples:
        raise DataError("the file holds no questions", path=path, hint=SCHEMA)
    asked.warn_repeats(path)
    from llama_index.core.schema import Document

    documents = [Document(text=text, id_=doc_id) for text, _, doc_id in texts.values()]
    return GroundedQAData(
        train=[e for e in examples if e.split == "train"],
        test=[e for e in examples if e.split == "test"],
        sources=sources,
        documents=documents,
    )


class _AskedTwice:
    """The same question over the same sources on two lines: contradicting labels or a copy.

    Two lines that ask one question (``twin_key``) of one set of sources must agree on
    whether it is answerable and on the gold sources (the model would be taught to cite
    both ways for one prompt): a ``DataError`` naming both lines. Lines that agree in
    everything are repeats (a file concatenated twice), counted in one warning. Holds one
    reference per distinct question (a million-line file costs a dictionary entry a line).
    """

    def __init__(self, sources: dict[str, list[str]]) -> None:
        self.sources = sources  # question id -> its source ids (the loader's)
        # twin_key -> its first example; once asked again: {source ids: (line, example)}
        self.asked: dict[
            str, GroundedQAExample | dict[frozenset[str], tuple[int, GroundedQAExample]]
        ] = {}
        self.repeats = 0
        self.first_repeat: tuple[int, int] | None = None  # (earlier line, its repeat)

    def check(self, line: _Line, example: GroundedQAExample, twin: str, first: int) -> None:
        """``twin``: the question's ``twin_key``; ``first``: the line it was first on."""
        earlier = self.asked.setdefault(twin, example)
        if earlier is example:
            return
        if not isinstance(earlier, dict):
            earlier = self.asked[twin] = {frozenset(self.sources[earlier.qid]): (first, earlier)}
        number, other = earlier.setdefault(
            frozenset(self.sources[example.qid]), (line.number, example)
        )
        if other is example:
            return
        if other.answerable != example.answerable:
            what = "answerable on line {} and unanswerable on line {}"
            lines = (number, line.number) if other.answerable else (line.number, number)
            raise line.error(
                "the same question over the same sources is " + what.format(*lines),
                hint="decide whether the sources answer it and keep one line",
            )
        if set(other.gold_doc_ids) != set(example.gold_doc_ids):
            raise line.error(
                f"the same question over the same sources has gold {other.gold_doc_ids} on "
                f"line {number} and {example.gold_doc_ids} here",
                hint="list every source that holds the answer in 'gold' on one line and "
                "remove the other",
            )
        if match_text(" ".join(other.answers)) == match_text(" ".join(example.answers)):
            self.repeats += 1
            self.first_repeat = self.first_repeat or (number, line.number)

    def warn_repeats(self, path: Path) -> None:
        if self.first_repeat is not None:
            first, again = self.first_repeat
            logger.warning(
                "%s: %d line(s) repeat an earlier line's question, sources, gold and answer "
                "(e.g. line %d repeats line %d): each copy counts again in training and in "
                "the scores; remove the copies unless the weight is meant",
                path,
                self.repeats,
                again,
                first,
            )


def _example(
    line: _Line, texts: _Texts, matched: dict[str, str]
) -> tuple[GroundedQAExample, list[str]]:
    record = line.record
    unknown = set(record) - set(FIELDS)
    if unknown:
        squad = "answers" in unknown and "answer" not in record
        offsets = sorted(unknown & {"answer_start", "answer_end", "start", "end", "span"})
        raise line.error(
            unknown_fields_message(unknown, FIELDS),
            hint='rename the fields; "answer" is one string: of SQuAD-style "answers" '
            '({"text": [...]}) keep one text'
            if squad
            else f"remove {', '.join(map(repr, offsets))}: no character offset is read, the "
            "answer text is looked for in its gold sources (case, spacing and Unicode form "
            "ignored)"
            if offsets
            else SCHEMA,
        )
    if "sources" in record and "contexts" in record:
        raise line.error("both 'sources' and 'contexts' given", hint="keep one of them")
    question = line.text("question", required=True)
    qid = line.text("id") or f"line-{line.number}"
    split = line.text("split") or "train"
    if split not in SPLITS:
        raise line.error(f"split must be 'train' or 'test', got {split!r}")
    shown = _sources(line, texts)
    answer = (line.text("answer", empty_ok=True) or "").strip()
    gold = _gold(line, shown)
    evidence = (line.text("evidence") or "").strip()
    if not answer:
        if evidence:
            raise line.error(
                "'evidence' given for an unanswerable question (empty 'answer')",
                hint="write the answer, or drop 'evidence'",
            )
        return GroundedQAExample(qid, question, gold, [], False, split=split), shown
    if not gold:
        raise line.error(
            "the question has an answer but no 'gold' source ids",
            hint="list the ids of the sources that hold the answer in 'gold', "
            'or write "answer": "" for a question its sources cannot answer',
        )
    # each source's text read once (a source of megabytes on every line was read again each line)
    gold_texts = [
        matched.get(id_form(g)) or matched.setdefault(id_form(g), match_text(texts[id_form(g)][0]))
        for g in gold
    ]
    if evidence and not any(match_text(evidence) in t for t in gold_texts):
        raise line.error(
            "the 'evidence' quote is not in any gold source",
            hint="copy the quote verbatim from one of the 'gold' sources",
        )
    if not evidence and not any(match_text(answer) in t for t in gold_texts):
        raise line.error(
            "the answer does not appear in any gold source",
            hint="add an 'evidence' field quoting the sentence of a gold source that supports it",
        )
    example = GroundedQAExample(
        qid,
        question,
        gold,
        [answer],
        True,
        evidence=[evidence] if evidence else [],
        split=split,
        match_evidence=bool(evidence),
    )
    return example, shown


def _sources(line: _Line, texts: _Texts) -> list[str]:
    key = "contexts" if "contexts" in line.record else "sources"
    value = line.record.get(key)
    if value is None:
        raise line.error("missing field 'sources'")
    if not isinstance(value, list) or not value:
        raise line.error(f"field {key!r} must be a non-empty list of {{'id', 'text'}} objects")
    shown: list[str] = []
    forms: dict[str, tuple[str, int]] = {}  # id_form -> (id as written, index): no list scan
    for i, source in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(source, dict):
            raise line.error(
                f"{where} must be an object with exactly 'id' and 'text', "
                f"got {type(source).__name__}"
            )
        if set(source) != {"id", "text"}:
            missing = [k for k in ("id", "text") if k not in source]
            unknown = set(source) - {"id", "text"}
            found = unknown_fields_message(unknown, ("id", "text")) if unknown else ""
            raise line.error(
                f"{where} must be an object with exactly 'id' and 'text'"
                + (f"; missing {' and '.join(map(repr, missing))}" if missing else "")
                + (f"; {found}" if found else "")
            )
        doc_id, text = source["id"], source["text"]
        if not isinstance(doc_id, str) or is_blank(doc_id):
            raise line.error(f"{where}.id must be a non-empty string of visible characters")
        if not isinstance(text, str) or is_blank(text):
            raise line.error(
                f"{where}.text must be a non-empty string of visible characters (source {doc_id!r})"
            )
        line.refuse_nul(doc_id, f"{where}.id")
        line.refuse_nul(text, f"{where}.text (source {doc_id!r})")
        twice, first_index = forms.setdefault(id_form(doc_id), (doc_id, i))
        if first_index != i:
            raise line.error(
                f"source id {doc_id!r} appears twice on the line{other_form_note(doc_id, twice)}"
            )
        known_text, first, spelled = texts.setdefault(id_form(doc_id), (text, line.number, doc_id))
        if spelled != doc_id:
            raise line.error(
                f"source id {doc_id!r} is written on line {first}"
                + other_form_note(doc_id, spelled),
                hint="a source id names one source: write it the same way (NFC) on every line",
            )
        if known_text != text:
            raise line.error(
                f"source id {doc_id!r} has another text on line {first}",
                hint="a source id names one text across the file; rename one of them",
            )
        shown.append(doc_id)
    return shown


def _gold(line: _Line, shown: list[str]) -> list[str]:
    value = line.record.get("gold")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise line.error("field 'gold' must be a list of source ids (strings)")
    listed = set(shown)
    missing = [g for g in value if g not in listed]
    if missing:
        forms = {id_form(d): d for d in shown}
        notes = [
            f"; {g!r} names the source written{other_form_note(g, forms[id_form(g)])}"
            for g in missing
            if id_form(g) in forms
        ]
        raise line.error(
            f"gold id(s) {missing} are not among the line's sources {shown}" + "".join(notes),
            hint="each gold id must be the 'id' of one of the line's sources, written the same way",
        )
    return list(dict.fromkeys(value))
