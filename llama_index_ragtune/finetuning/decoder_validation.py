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
    time with the tokenizer's chat template, prompt tokens masked.

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
                ids = torch.tensor([full], device=device)
                labels = ids.clone()
                labels[:, :start] = -100
                out = model(input_ids=ids, labels=labels)
                n = len(full) - start
                total += float(out.loss) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("completion_nll: no completion token left within max_length")
    return total / count


def _ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    return [int(x) for x in encoded]
