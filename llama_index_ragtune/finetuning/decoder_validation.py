"""Validation of a decoder: the mean negative log-likelihood of held-out completions.

Example::

    from llama_index_ragtune.finetuning.decoder_validation import completion_nll

    completion_nll(model, tokenizer, val_rows)   # e.g. 1.93 before SFT, 0.41 after
"""

from __future__ import annotations

from typing import Any

from llama_index_ragtune.llms.chat_io import common_prefix


def completion_nll(model: Any, tokenizer: Any, rows: Any, max_length: int = 1024) -> float:
    """Mean negative log-likelihood per completion token of prompt/completion ``rows``.

    The validation metric of ``DecoderFinetuneEngine``: the same number for the
    base model and for a LoRA-tuned one (a ``PeftModel``), computed one row at a
    time with the tokenizer's chat template, prompt tokens masked. Only the
    completion's positions go through the output layer (``logits_to_keep``).

    Example::

        completion_nll(model, tokenizer, val_rows)   # e.g. 1.93 before SFT, 0.41 after
    """
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for row in rows:
                prompt = list(row["prompt"])
                prefix = tokenizer.apply_chat_template(
                    prompt, tokenize=True, add_generation_prompt=True
                )
                full = tokenizer.apply_chat_template(
                    prompt + list(row["completion"]), tokenize=True
                )
                prefix, full = _ids(prefix), _ids(full)
                start = (
                    len(prefix) if full[: len(prefix)] == prefix else common_prefix(prefix, full)
                )
                full = full[:max_length]
                if start >= len(full):
                    continue
                start = max(start, 1)  # the first token has nothing to be predicted from
                ids = torch.tensor([full], device=device)
                total += _completion_nll_sum(model, ids, start)
                count += len(full) - start
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("completion_nll: no completion token left within max_length")
    return total / count


def _completion_nll_sum(model: Any, ids: Any, start: int) -> float:
    """Summed NLL of the tokens of ``ids`` (one row) from position ``start`` on."""
    import torch

    n = ids.shape[1] - start
    try:  # logits of the positions that predict the completion only
        logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :n]
    except TypeError:  # a model whose forward has no logits_to_keep
        logits = model(input_ids=ids).logits[0, start - 1 : -1]
    target = ids[0, start:]
    return float(torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum"))


def _ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    return [int(x) for x in encoded]
