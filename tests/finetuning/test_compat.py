"""Compatibility with llama-index-finetuning: base classes, method names, dataset JSON."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llama_index_ragtune.finetuning import compat
from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine


@pytest.fixture(scope="module")
def ft_types():
    types = compat.finetuning_types()
    compat.register_engines()
    if types is None:
        pytest.skip(
            "llama-index-finetuning is not installed or does not import "
            "(pip install 'llama-index-ragtune[finetuning-compat]')"
        )
    return types


def test_engines_are_virtual_subclasses_of_its_bases(ft_types):
    assert inspect.isabstract(ft_types.BaseEmbeddingFinetuneEngine)
    assert issubclass(EncoderFinetuneEngine, ft_types.BaseEmbeddingFinetuneEngine)
    assert issubclass(RerankerFinetuneEngine, ft_types.BaseCrossEncoderFinetuningEngine)
    assert issubclass(DecoderFinetuneEngine, ft_types.BaseLLMFinetuneEngine)
    assert not issubclass(EncoderFinetuneEngine, ft_types.BaseCrossEncoderFinetuningEngine)


def test_engines_offer_its_method_names(ft_types):
    for ours, base in (
        (EncoderFinetuneEngine, ft_types.BaseEmbeddingFinetuneEngine),
        (RerankerFinetuneEngine, ft_types.BaseCrossEncoderFinetuningEngine),
    ):
        for name in base.__abstractmethods__:
            assert callable(getattr(ours, name, None)), f"{ours.__name__} lacks {name}()"
    # its reranker signature: get_finetuned_model(model_name, top_n=3)
    params = inspect.signature(RerankerFinetuneEngine.get_finetuned_model).parameters
    assert list(params)[1:3] == ["model_name", "top_n"]


def test_dataset_saved_by_its_tools_trains_our_engine(ft_types, tmp_path, toy, tiny_encoder_path):
    from llama_index.finetuning import EmbeddingQAFinetuneDataset

    from llama_index_ragtune.data.schema import RetrievalDataset

    theirs = EmbeddingQAFinetuneDataset(
        queries=toy.queries, corpus=toy.corpus, relevant_docs=toy.relevant_docs
    )
    path = tmp_path / "qa_finetune_dataset.json"
    theirs.save_json(str(path))
    ours = RetrievalDataset.load_json(path)
    assert (
        ours.queries == toy.queries
        and ours.relevant_docs == toy.relevant_docs
        and ours.corpus == toy.corpus
    )

    # their in-memory object is accepted as it is, too
    engine = EncoderFinetuneEngine(
        theirs,
        model=tiny_encoder_path,
        budget=None,
        val_fraction=0,
        force_promotion=True,
        args=EncoderFinetuneEngine.default_args(tmp_path / "run", max_steps=1, save_strategy="no"),
    )
    assert isinstance(engine, ft_types.BaseEmbeddingFinetuneEngine)
    assert engine.finetune(evaluate_before=False).global_step == 1


def test_engine_import_has_no_side_effect_and_registration_is_explicit(ft_types):
    """Run in a fresh interpreter: importing our engines neither imports llama_index.finetuning
    (3 s, and its MistralAI module configures root logging on stdout) nor changes the import
    system; ``register_engines()`` registers all three and leaves the root logger alone."""
    code = textwrap.dedent("""
        import logging, sys
        hooks = list(sys.meta_path)
        from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
        from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
        from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
        assert "llama_index.finetuning" not in sys.modules
        ours = [f for f in sys.meta_path if f not in hooks and "ragtune" in type(f).__module__]
        assert not ours, ours
        from llama_index_ragtune.finetuning.compat import register_engines
        assert register_engines()
        types = sys.modules["llama_index.finetuning.types"]
        assert issubclass(EncoderFinetuneEngine, types.BaseEmbeddingFinetuneEngine)
        assert issubclass(RerankerFinetuneEngine, types.BaseCrossEncoderFinetuningEngine)
        assert issubclass(DecoderFinetuneEngine, types.BaseLLMFinetuneEngine)
        assert logging.getLogger().handlers == [] and logging.getLogger().level == logging.WARNING
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
