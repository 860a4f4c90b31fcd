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
    return dataset


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
