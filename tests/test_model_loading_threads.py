"""Models loaded by many threads at once, through the package's own entry points.

transformers swaps process-wide functions for no-ops while it builds a model
(``PreTrainedModel.tie_weights``, the ``torch.nn.init`` functions). A load that runs
beside another, without the package's loading lock, can put a no-op back for good: the
decoder's tied ``lm_head`` then stays on the meta device ("Cannot copy out of meta
tensor"), in that load and in every later one of the process. Every loader in the
package goes through ``models.load_model``; these tests hold it to that.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch

from llama_index_ragtune.models import MODEL_LOADING_LOCK

PACKAGE = Path(__file__).resolve().parents[1] / "llama_index_ragtune"

# ----------------------------------------------------------------- entry points


def _rerank(path):
    from llama_index_ragtune.postprocessor import CrossEncoderRerank

    return CrossEncoderRerank(path, top_n=1, device="cpu").cross_encoder.model


def _dense_scorer(path):
    from llama_index_ragtune.data.negative_sources import DenseScorer

    scorer = DenseScorer(["a passage"], ["d0"], model=path, show_progress=False)
    return scorer._model[0].auto_model


def _teacher(path):
    from llama_index_ragtune.finetuning.teachers import teacher_scorer

    scorer = teacher_scorer(path)
    scorer([("q", "p")])
    return None  # the scorer hides its model; it is checked through the lock spy


def _scorer(path):
    from llama_index_ragtune.data.negative_sources import load_cross_encoder_scorer

    load_cross_encoder_scorer(path)([("q", "p")])
    return None


def _embed_model(path):
    from llama_index_ragtune.embeddings import default_embed_model

    return default_embed_model(path, backend="torch")._model[0].auto_model


def _block_encoder(path):
    from llama_index_ragtune.embeddings.corpus_encoders import BlockEncoder

    return BlockEncoder.load(("sentence-transformers", path)).model[0].auto_model


def _decoder(path):
    from llama_index_ragtune.llms.loading import load_causal_lm

    return load_causal_lm(path, device="cpu")[0]


CROSS_ENCODERS = {_rerank, _teacher, _scorer}
ENCODER_ENTRY_POINTS = {
    "CrossEncoderRerank": _rerank,
    "DenseScorer": _dense_scorer,
    "teacher_scorer": _teacher,
    "load_cross_encoder_scorer": _scorer,
    "default_embed_model(torch)": _embed_model,
    "BlockEncoder.load": _block_encoder,
}


@pytest.fixture(scope="module")
def tiny_reranker_path(tiny_encoder_path, tmp_path_factory) -> str:
    """The tiny encoder with a one-logit head, saved as a cross-encoder folder."""
    from sentence_transformers import CrossEncoder

    out = tmp_path_factory.mktemp("tiny_reranker")
    CrossEncoder(tiny_encoder_path, num_labels=1, device="cpu").save(str(out))
    return str(out)


def _path_for(fn, encoder: str, reranker: str, decoder: str) -> str:
    if fn is _decoder:
        return decoder
    return reranker if fn in CROSS_ENCODERS else encoder


@pytest.mark.parametrize("entry", [*ENCODER_ENTRY_POINTS, "load_causal_lm"])
def test_every_entry_point_loads_its_weights_holding_the_loading_lock(
    entry, loads_seen, tiny_encoder_path, tiny_reranker_path, tiny_causal_lm_path
):
    """Were: the encoder loaders, the negative sources and the teachers loaded without the
    lock (only the decoder and the reranker held it), so they raced the decoder's load."""
    fn = _decoder if entry == "load_causal_lm" else ENCODER_ENTRY_POINTS[entry]
    fn(_path_for(fn, tiny_encoder_path, tiny_reranker_path, tiny_causal_lm_path))
    assert loads_seen, f"{entry} built no model through from_pretrained"
    assert all(loads_seen), f"{entry}: {loads_seen.count(False)} loads ran without the lock"


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_all_at_once(jobs, encoder: str, reranker: str, decoder: str):
    """Run every ``(kind, entry point)`` in ``jobs`` in its own thread, released together."""
    barrier = threading.Barrier(len(jobs))
    loaded, errors = [], []

    def work(kind, fn):
        try:
            barrier.wait(60)
            loaded.append((kind, fn, fn(_path_for(fn, encoder, reranker, decoder))))
        except Exception as exc:  # reported by the caller
            errors.append(f"{fn.__name__}: {exc!r}")

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return loaded, errors


def test_threads_loading_encoders_beside_decoders_get_whole_equal_models(
    tiny_encoder_path, tiny_reranker_path, tiny_causal_lm_path
):
    """Encoders through every entry point and decoders, all at once, three rounds: each
    model equals a lone load (weights and a forward pass), no parameter stays on the meta
    device, the decoder's ``lm_head`` stays tied, and a later lone load is whole too."""
    lone_decoder = _decoder(tiny_causal_lm_path)
    lone_reranker = _state(_rerank(tiny_reranker_path))
    lone_encoder = _state(_block_encoder(tiny_encoder_path))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        lone_logits = lone_decoder(ids).logits
    jobs = [
        *(("encoder", fn) for fn in ENCODER_ENTRY_POINTS.values()),
        *(("decoder", _decoder) for _ in range(4)),
    ]
    for _round in range(3):
        loaded, errors = _load_all_at_once(
            jobs, tiny_encoder_path, tiny_reranker_path, tiny_causal_lm_path
        )
        assert not errors, errors
        for kind, fn, model in loaded:
            if model is None:
                continue
            assert not any(p.is_meta for p in model.parameters()), fn.__name__
            if kind == "decoder":
                assert model.lm_head.weight is model.model.embed_tokens.weight
                with torch.no_grad():
                    assert torch.equal(model(ids).logits, lone_logits)
            elif fn is _rerank:
                state = _state(model)
                assert state.keys() == lone_reranker.keys()
                assert all(torch.equal(state[k], lone_reranker[k]) for k in state)
            else:
                state = _state(model)
                assert state.keys() == lone_encoder.keys(), fn.__name__
                assert all(torch.equal(state[k], lone_encoder[k]) for k in state), fn.__name__
    later = _decoder(tiny_causal_lm_path)
    assert later.lm_head.weight is later.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(later(ids).logits, lone_logits)


# ----------------------------------------------------------------- the source itself

_BUILDERS = {"SentenceTransformer", "CrossEncoder", "HuggingFaceEmbedding"}
_NOT_MODELS = {"AutoTokenizer", "AutoConfig", "tokenizer", "config"}


def _unguarded_loads(path: Path) -> list[str]:
    """Model constructions in ``path`` not passed to ``load_model`` (and not lexically under
    ``with MODEL_LOADING_LOCK``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_model":
            guarded.update(id(arg) for arg in node.args[:1])
        if isinstance(node, ast.With) and any(
            "MODEL_LOADING_LOCK" in ast.unparse(item.context_expr) for item in node.items
        ):
            guarded.update(id(inner) for inner in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in guarded:
            continue
        func = node.func
        name = getattr(func, "id", None)
        if isinstance(func, ast.Attribute) and func.attr in ("from_pretrained", "from_config"):
            owner = ast.unparse(func.value)
            if owner.split(".")[-1] not in _NOT_MODELS:
                name = f"{owner}.{func.attr}"
        elif name not in _BUILDERS:
            name = None
        if name:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}(...)")
    return found


def test_no_model_is_built_outside_load_model_in_the_package():
    """A new loader that calls ``SentenceTransformer(...)`` or ``X.from_pretrained`` itself
    (bypassing the lock) fails here, naming the file and line."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += _unguarded_loads(path)
    assert found == [], "load these through llama_index_ragtune.models.load_model:\n" + "\n".join(
        found
    )


def test_load_model_is_re_entrant_and_evaluates_arguments_before_the_lock():
    """A load inside a load (an adapter's base model) does not deadlock; the arguments
    (``resolve_model``, which may convert the decoder under a file lock) run unlocked."""
    from llama_index_ragtune.models import load_model

    seen = []

    def outer():
        return load_model(lambda: MODEL_LOADING_LOCK._is_owned())

    def argument():
        seen.append(MODEL_LOADING_LOCK._is_owned())
        return 1

    assert load_model(outer) is True
    assert load_model(lambda x: x + 1, argument()) == 2
    assert seen == [False] and not MODEL_LOADING_LOCK._is_owned()
