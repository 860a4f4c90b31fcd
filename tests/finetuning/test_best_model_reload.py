"""The trainers' own checkpoint loads hold the package's model-loading lock.

sentence-transformers reloads the best checkpoint at the end of training
(``load_best_model_at_end``) and a resumed run's checkpoint by building a whole model
from the folder through ``from_pretrained``. Beside another thread's model load that
build can leave meta / untied weights (see ``tests/test_model_loading_threads.py``),
and the trainer only logs the failure and keeps the last step's weights.
"""

from __future__ import annotations

import pytest

from llama_index_ragtune.finetuning.checkpoints import lock_checkpoint_loads
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
from llama_index_ragtune.models import MODEL_LOADING_LOCK


def _args(engine_class, output_dir):
    return engine_class.default_args(
        output_dir,
        max_steps=6,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        warmup_steps=0,
        logging_steps=50,
        disable_tqdm=True,
    )


@pytest.mark.parametrize("engine_class", [EncoderFinetuneEngine, RerankerFinetuneEngine])
def test_best_checkpoint_reload_holds_the_loading_lock(
    engine_class, loads_seen, tiny_encoder_path, make_toy, tmp_path
):
    """Was: the reload at the end of training built its model without the lock."""
    data = make_toy()
    engine = engine_class(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        budget=None,
        eval_points=2,
        args=_args(engine_class, tmp_path / "run"),
        show_progress=False,
    )
    loads_seen.clear()  # the starting model's load, already under the lock
    engine.finetune()
    assert engine.trainer.args.load_best_model_at_end
    assert engine.trainer.state.best_model_checkpoint is not None
    assert loads_seen, "the best checkpoint was not reloaded through from_pretrained"
    assert all(loads_seen), f"{loads_seen.count(False)} checkpoint loads ran without the lock"
    assert not any(p.is_meta for p in engine.model.parameters())


def test_lock_checkpoint_loads_wraps_once_and_keeps_results():
    class Trainer:
        def _load_from_checkpoint(self, path):
            return path, MODEL_LOADING_LOCK._is_owned()

        def _load_best_model(self):
            return MODEL_LOADING_LOCK._is_owned()

    trainer = lock_checkpoint_loads(lock_checkpoint_loads(Trainer()))
    assert trainer._load_from_checkpoint("ckpt") == ("ckpt", True)
    assert trainer._load_best_model() is True
    assert not MODEL_LOADING_LOCK._is_owned()
