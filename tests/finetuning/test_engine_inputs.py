"""Bad engine arguments fail when the engine is built; damaged weights are named, not loaded."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from llama_index_ragtune.finetuning.checkpoints import (
    check_weights,
    damaged_weights,
    last_complete_checkpoint,
    resolve_resume,
)
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine


@pytest.mark.parametrize(
    ("margin", "error"),
    [(math.nan, ValueError), (math.inf, ValueError), (-0.1, ValueError), ("0.1", TypeError)],
)
def test_a_bad_promotion_margin_fails_before_training(
    toy, tiny_encoder_path, tmp_path, margin, error
):
    with pytest.raises(error, match="promotion_margin must be a finite number >= 0"):
        EncoderFinetuneEngine(
            toy, model=tiny_encoder_path, output_dir=str(tmp_path / "o"), promotion_margin=margin
        )
    assert not (tmp_path / "o").exists()


def test_an_output_dir_that_is_a_file_fails_before_training(toy, tiny_encoder_path, tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(NotADirectoryError, match="afile is a file; choose a folder"):
        EncoderFinetuneEngine(toy, model=tiny_encoder_path, output_dir=str(tmp_path / "afile"))
    assert (tmp_path / "afile").read_text() == "mine"


def _weights(folder, n=64):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"w": torch.arange(n, dtype=torch.float32), "b": torch.ones(3)},
        folder / "model.safetensors",
    )
    return folder / "model.safetensors"


def test_cut_short_or_garbled_weights_are_found(tmp_path):
    whole = _weights(tmp_path / "whole")
    assert damaged_weights(tmp_path / "whole") is None
    check_weights(tmp_path / "whole")
    data = whole.read_bytes()
    for name, damaged in (
        ("short", data[:100]),
        ("tiny", data[:5]),
        ("longer", data + b"\0" * 8),
        ("garbled", data[:8] + b"{not json" + data[17:]),
    ):
        path = _weights(tmp_path / name)
        path.write_bytes(damaged)
        assert damaged_weights(tmp_path / name) == path, name
        with pytest.raises(RuntimeError, match=f"{name}/model.safetensors is damaged"):
            check_weights(tmp_path / name)


def test_resume_skips_a_checkpoint_with_damaged_weights(tmp_path):
    for step in (1, 2):
        folder = tmp_path / f"checkpoint-{step}"
        _weights(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    newest = tmp_path / "checkpoint-2" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
    assert resolve_resume(True, tmp_path) == str(tmp_path / "checkpoint-1")
    with pytest.raises(ValueError, match="incomplete or damaged"):
        resolve_resume(tmp_path / "checkpoint-2", tmp_path)
