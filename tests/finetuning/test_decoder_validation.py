"""completion_nll: the mean NLL of completion tokens, read from their positions' logits only."""

from __future__ import annotations

import pytest

from llama_index_ragtune.finetuning.decoder_validation import completion_nll


def _as_ids(encoded) -> list[int]:
    return list(encoded["input_ids"]) if hasattr(encoded, "keys") else list(encoded)


def _reference(model, tokenizer, rows) -> float:
    """The same metric through transformers' own loss over the full logits (prompt masked)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prefix = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)
            full = tokenizer.apply_chat_template(row["prompt"] + row["completion"])
            prefix, full = _as_ids(prefix), _as_ids(full)
            ids = torch.tensor([full])
            labels = ids.clone()
            labels[:, : len(prefix)] = -100
            n = len(full) - len(prefix)
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


@pytest.fixture(scope="module")
def tiny_lm(tiny_causal_lm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(tiny_causal_lm_path).eval(),
        AutoTokenizer.from_pretrained(tiny_causal_lm_path),
    )


ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Sources: [1] Rouen is in Normandy. Q{i}?"}],
        "completion": [{"role": "assistant", "content": "Rouen [1]" + " ok" * i}],
    }
    for i in range(4)
]


def test_it_equals_the_loss_over_the_full_logits(tiny_lm):
    model, tokenizer = tiny_lm
    assert completion_nll(model, tokenizer, ROWS) == pytest.approx(
        _reference(model, tokenizer, ROWS), rel=1e-5
    )


def test_a_lora_model_gives_the_same_number_as_its_reference(tiny_lm):
    peft = pytest.importorskip("peft")
    import torch

    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    )
    lora.train()
    try:
        got = completion_nll(lora, tokenizer, ROWS)
        assert lora.training is True  # left as it was
        assert got == pytest.approx(_reference(lora, tokenizer, ROWS), rel=1e-5)
        with lora.disable_adapter(), torch.no_grad():
            without = completion_nll(lora, tokenizer, ROWS)
        assert abs(got - without) > 1e-6  # the adapter's weights were read
    finally:
        lora.unload()


def test_rows_cut_to_their_prompt_are_skipped_and_none_left_is_an_error(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="no completion token left within max_length"):
        completion_nll(model, tokenizer, ROWS, max_length=5)
