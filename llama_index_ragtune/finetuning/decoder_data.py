"""The rows ``DecoderFinetuneEngine`` takes: TRL's conversational SFT and preference formats.

SFT rows hold ``prompt`` (system + user messages) and ``completion`` (the assistant
message); preference rows hold ``prompt``, ``chosen`` and ``rejected``. Other columns
(``qid``, ``question``, source ids) are metadata: they steer the validation split and
never reach the trainers.

Example::

    from llama_index_ragtune.finetuning.decoder_data import SFT_COLUMNS

    row = {"prompt": [{"role": "user", "content": "Hi?"}],
           "completion": [{"role": "assistant", "content": "Hello."}]}
    tuple(row) == SFT_COLUMNS      # True: one SFT row
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

SFT_COLUMNS = ("prompt", "completion")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def _check_columns(dataset: Any, needed: tuple[str, ...], what: str, hint: str) -> datasets.Dataset:
    import datasets

    if isinstance(dataset, list):
        _refuse_lone_surrogates(dataset, what)
        dataset = datasets.Dataset.from_list(dataset)
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"DecoderFinetuneEngine: {what} must be a datasets.Dataset, got {type(dataset).__name__}."
        )
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"DecoderFinetuneEngine: {what} lacks the columns {missing} (it has {dataset.column_names}). "
            f"Expected TRL's conversational {'/'.join(needed)} format, {hint}."
        )
    if len(dataset) == 0:
        raise ValueError(f"DecoderFinetuneEngine: {what} is empty.")
    _refuse_empty_targets(dataset, what)
    return dataset


def _text_of(value: Any) -> str:
    """The text of a completion: a plain string, or the contents of its messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(
            str(m.get("content") or "") if isinstance(m, dict) else str(m) for m in value
        )
    return "" if value is None else str(value)


def _refuse_empty_targets(dataset: datasets.Dataset, what: str) -> None:
    """``DataError`` naming the rows whose answer to learn is blank (an SFT ``completion``, a
    preference ``chosen``: the model would learn to say nothing) or whose ``rejected`` answer
    is the ``chosen`` one (a pair that teaches nothing)."""
    from llama_index_ragtune._invisible import is_blank
    from llama_index_ragtune.data.errors import DataError

    names = dataset.column_names
    target = "completion" if "completion" in names else "chosen" if "chosen" in names else None
    if target is None:
        return
    ids = dataset["qid"] if "qid" in names else None
    chosen = [_text_of(v) for v in dataset[target]]
    rejected = [_text_of(v) for v in dataset["rejected"]] if "rejected" in names else None
    blank = [i for i, text in enumerate(chosen) if is_blank(text)]
    same = (
        []
        if rejected is None
        else [
            i
            for i, (a, b) in enumerate(zip(chosen, rejected, strict=True))
            if a.strip() == b.strip() and i not in blank
        ]
    )

    def rows(found: list[int]) -> str:
        shown = ", ".join(f"{i} (qid {ids[i]!r:.40})" if ids else str(i) for i in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        return ("row " if len(found) == 1 else "rows ") + shown + more

    if blank:
        raise DataError(
            f"DecoderFinetuneEngine: {what} {rows(blank)}: the {target} is empty or blank, "
            "so the model would learn to answer nothing; give each row the answer text (a "
            "refusal for an unanswerable question), or drop the row"
        )
    if same:
        raise DataError(
            f"DecoderFinetuneEngine: {what} {rows(same)}: the rejected answer is the "
            "chosen one, so the pair teaches nothing; give a worse rejected answer, or drop "
            "the row"
        )


def _refuse_lone_surrogates(rows: list[Any], what: str) -> None:
    """``DataError`` naming the row and field of the first text holding a lone surrogate
    (a bad ``\\u`` escape or a mis-decoded file; Arrow fails on it without naming the row)."""
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.data.reading import lone_surrogate

    for number, row in enumerate(rows):
        found = lone_surrogate(row)
        if found is not None:
            where, escape, key = found
            field = f"the key {key!r:.40} in {where or 'the row'}" if key else where or "the row"
            raise DataError(
                f"DecoderFinetuneEngine: {what} row {number}: {field} holds a lone surrogate "
                f"({escape}, from a bad \\u escape or a mis-decoded file); fix or drop the row"
            )


def _columns(dataset: datasets.Dataset, needed: tuple[str, ...]) -> datasets.Dataset:
    """Only the trainer's columns: metadata (qid, source ids...) stays out of the collators."""
    return dataset.select_columns(list(needed))


def _with_questions(rows: datasets.Dataset) -> datasets.Dataset:
    """``rows`` with a ``question`` column, read back from their grounded prompts when they
    have none (rows built by hand or by an older ``GroundedSFTBuilder``), so that twin
    questions under two qids stay on one side of the validation split. Unchanged when a
    prompt is not a grounded one. The trainer never sees the column (``_columns``)."""
    if "question" in rows.column_names or "qid" not in rows.column_names:
        return rows
    from llama_index_ragtune.grounding import read_grounded_prompt

    questions = []
    for prompt in rows["prompt"]:
        grounded = read_grounded_prompt(prompt)
        if grounded is None:
            return rows
        questions.append(grounded.question)
    return rows.add_column("question", questions)
