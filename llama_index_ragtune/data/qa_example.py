"""``QAExample``: one grounded question with its gold documents, reference answers and evidence.

Gold for unanswerable questions: a SQuAD 2.0 unanswerable question keeps its
own paragraph as ``gold_doc_ids`` (the paragraph it was written against, a
near miss that lacks the answer) and a SciFact NOT ENOUGH INFO claim keeps
the abstracts its qrels cite. ``answerable=False`` is what counts: the target
is the refusal sentence whatever the context holds.

Example::

    from llama_index_ragtune.data import QAExample

    example = QAExample(qid="q1", question="Capital of France?", gold_doc_ids=["d1"],
                        answers=["Paris"], evidence=["Paris is the capital of France."])
    example.to_dict()["answerable"]   # True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class QAExample:
    """One grounded question.

    Attributes:
        qid: question id (unique within a data set).
        question: the text sent to the model.
        gold_doc_ids: ids of the documents holding the answer (see the module
            docstring for unanswerable questions).
        answers: reference answers (empty when unanswerable).
        answerable: False when the right reply is the refusal sentence.
        evidence: short quotes that support the answer (the SQuAD sentence
            holding the answer span; SciFact rationale sentences).
        label: ``"SUPPORT"`` / ``"CONTRADICT"`` for SciFact claims, else None.
    """

    qid: str
    question: str
    gold_doc_ids: list[str]
    answers: list[str] = field(default_factory=list)
    answerable: bool = True
    evidence: list[str] = field(default_factory=list)
    label: str | None = None

    def __post_init__(self) -> None:
        """Ids as text (``1`` is ``"1"``, as ``RetrievalDataset`` reads them); a bare string
        of answers, evidence or gold ids is one item (it was read letter by letter: the
        target ``P [1]`` for ``answers="Paris"``); other types are a ``TypeError``."""
        self.qid = _id_text(self.qid, "qid", self.qid)
        self.gold_doc_ids = [
            _id_text(d, "gold_doc_ids", self.qid) for d in _items(self, "gold_doc_ids")
        ]
        for name in ("answers", "evidence"):
            values = _items(self, name)
            bad = next((v for v in values if not isinstance(v, str)), None)
            if bad is not None:
                raise TypeError(
                    f"QAExample {self.qid!r}: {name} must be strings, got "
                    f"{type(bad).__name__} {bad!r}"
                )
            setattr(self, name, values)

    def to_dict(self) -> dict:
        return asdict(self)


def _id_text(value: object, name: str, qid: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(
        f"QAExample {qid!r}: {name} must hold ids (strings or integers), got "
        f"{type(value).__name__} {value!r}"
    )


def _items(example: QAExample, name: str) -> list:
    value = getattr(example, name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(
        f"QAExample {example.qid!r}: {name} must be a list, got {type(value).__name__} {value!r}"
    )


# ------------------------------------------- shared by the QAExample loaders


def _check_limit(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
