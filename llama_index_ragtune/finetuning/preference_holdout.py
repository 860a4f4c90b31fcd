"""Keep a decoder's validation questions out of its preference stage.

``DecoderFinetuneEngine`` decides promotion on the loss of held-out SFT rows; a DPO /
ORPO pair of one of those questions would teach the model the very answers validation
scores it on. A pair belongs to a held-out question when it shares its ``qid`` (both
sides carry one), or its question up to case, spacing and punctuation
(``records.twin_key``): the ``question`` column, else the question of a grounded
prompt, else the text of the last user turn.

Example::

    from llama_index_ragtune.finetuning.preference_holdout import leave_out_held_out

    kept, left_out = leave_out_held_out(preference_rows, val_rows)   # e.g. (72 rows, 8)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index_ragtune.data.records import twin_key


def row_question_keys(rows: Any) -> list[str]:
    """The question of each row of ``rows`` (a ``datasets.Dataset`` with a ``prompt``
    column) as ``twin_key`` writes it: its ``question`` column, else the question of its
    grounded prompt, else its last user turn's text ("" when it has none).

    Example::

        row_question_keys(sft_rows)   # ['when does store 0 open', ...]
    """
    from llama_index_ragtune.grounding import read_grounded_prompt

    if "question" in rows.column_names:
        return [twin_key(str(q)) for q in rows["question"]]
    keys = []
    for prompt in rows["prompt"]:
        grounded = read_grounded_prompt(prompt)
        keys.append(twin_key(grounded.question if grounded else _last_user_text(prompt)))
    return keys


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(list(messages)):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else str(content)
    return ""


def leave_out_held_out(pairs: Any, val: Any | None) -> tuple[Any, int]:
    """``(kept, left_out)``: the preference ``pairs`` whose question is not one of the
    validation rows ``val`` (see the module docstring), and how many were left out.
    Unchanged when ``val`` is None or nothing overlaps.

    Example::

        kept, left_out = leave_out_held_out(pairs, val)
        len(kept) + left_out == len(pairs)   # True
    """
    if val is None or len(val) == 0:
        return pairs, 0
    by_qid = "qid" in pairs.column_names and "qid" in val.column_names
    held_qids = {str(q) for q in val["qid"]} if by_qid else set()
    held_questions = set(row_question_keys(val)) - {""}
    pair_qids = [str(q) for q in pairs["qid"]] if by_qid else [None] * len(pairs)
    keep = [
        i
        for i, (qid, question) in enumerate(zip(pair_qids, row_question_keys(pairs), strict=True))
        if qid not in held_qids and question not in held_questions
    ]
    if len(keep) == len(pairs):
        return pairs, 0
    return pairs.select(keep), len(pairs) - len(keep)
