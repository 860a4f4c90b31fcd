"""Export a sentence-transformers model to ONNX once, verified against PyTorch, cached on disk.

The graph is the transformer *plus the model's own pooling, Dense and Normalize
modules* (read from its ``modules.json``), traced with ``torch.onnx.export``
(dynamic batch and sequence axes), so ONNX Runtime returns the final sentence
embedding exactly as ``SentenceTransformer.encode`` does. Before an export is
accepted its embeddings are compared with PyTorch's (cosine > 0.9999) and its
token ids with the Hugging Face tokenizer's. The int8 variant is made from the
fp32 graph with ``onnxruntime.quantization.quantize_dynamic`` (per-channel
weights, which keeps MiniLM's embeddings within ~0.99 cosine of fp32).

Artifacts live in ``<cache>/onnx/<name>-<key>/``: ``model.onnx``,
``model.int8.onnx`` (on demand), ``tokenizer.json`` and ``export.json``. The key
covers the model files (names, sizes, mtimes), the export format and the library
versions, so a changed model is exported again.

Example::

    from llama_index_ragtune.embeddings.onnx_export import export_sentence_transformer

    exported = export_sentence_transformer(None)          # bundled MiniLM
    exported.model_path(quantize=True)                     # .../model.int8.onnx
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index_ragtune.embeddings.fingerprint import model_fingerprint
from llama_index_ragtune.embeddings.onnx_session import (
    OnnxSessionEncoder,
    require_onnx,
)
from llama_index_ragtune.embeddings.store import make_folder, path_kind
from llama_index_ragtune.models import cache_dir as default_cache_dir
from llama_index_ragtune.models import resolve_model

logger = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1
OPSET = 17
_VERIFY_TEXTS = (
    "What is the return policy for opened electronics?",
    "Perishable groceries such as apples cannot be returned, only refunded.",
    "x",
    "A much longer passage " + "about retrieval augmented generation and dense encoders " * 40,
)
_SUPPORTED_TAIL = {"Pooling", "Normalize", "Dense"}

__all__ = ["ExportedEncoder", "export_sentence_transformer", "model_fingerprint", "require_onnx"]


@dataclass(frozen=True)
class ExportedEncoder:
    """An exported model folder and its settings (from ``export.json``)."""

    folder: Path
    config: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.config["fingerprint"]

    def model_path(self, quantize: bool = False) -> Path:
        """Path of the fp32 graph, or of the int8 graph (quantised now if missing)."""
        fp32 = self.folder / "model.onnx"
        if not quantize:
            return fp32
        int8 = self.folder / "model.int8.onnx"
        if not int8.exists():
            _quantize(fp32, int8)
        return int8


def export_sentence_transformer(
    model: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> ExportedEncoder:
    """Export ``model`` (``None`` = bundled MiniLM, a folder, or a hub id) once; return the cached export."""
    require_onnx()
    name_or_path = resolve_model(model, kind="encoder")
    _check_source_folder(name_or_path)
    fingerprint = model_fingerprint(name_or_path)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "onnx"
    key = _export_key(fingerprint)
    slug = (
        "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(str(name_or_path)).name)[:40]
        or "model"
    )
    target = root / f"{slug}-{key}"
    kind = path_kind(target)
    if kind not in (None, "a folder"):  # found before the export, not by the final rename
        raise NotADirectoryError(
            f"the ONNX export folder {target} is {kind}, not a folder; remove it or pass "
            "another cache_dir"
        )
    if not force and target.is_dir():
        config = _read_export(target)
        if config is not None:
            return ExportedEncoder(target, config)
        logger.warning("the ONNX export %s is incomplete or damaged; exporting it again", target)
        force = True
    make_folder(root, "the ONNX cache folder")
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        config = _export(name_or_path, tmp)
        config["fingerprint"] = fingerprint
        (tmp / "export.json").write_text(json.dumps(config, indent=2))
        if force and target.is_symlink():  # a link to an export elsewhere: replace the link
            target.unlink()
        elif force and target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "export.json").is_file():  # not a finished concurrent export
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportedEncoder(target, json.loads((target / "export.json").read_text()))


def _check_source_folder(name_or_path: str) -> None:
    """Refuse a local folder without a PyTorch model to export (an ONNX-only folder, such as
    an export itself or another tool's, or a tokenizer alone), naming what it holds (was
    transformers' "Should have a `model_type` key in its config.json")."""
    folder = Path(name_or_path)
    if not folder.is_dir() or any((folder / n).is_file() for n in ("config.json", "modules.json")):
        return
    graphs = sorted(p.name for p in folder.glob("*.onnx"))
    what = f"an ONNX graph ({', '.join(graphs[:3])})" if graphs else "no config.json"
    raise ValueError(
        f"{folder} holds {what} but no sentence-transformers model (config.json, "
        "modules.json): OnnxEmbedding exports the graph itself from the model's folder or hub "
        "id and caches it; pass the folder the model was saved to"
    )


_CONFIG_KEYS = ("source", "input_names", "max_seq_length", "pad_token_id", "fingerprint")


def _read_export(folder: Path) -> dict[str, Any] | None:
    """The settings of a finished export in ``folder``, or ``None`` if a file is missing or damaged."""
    if not all((folder / name).is_file() for name in ("model.onnx", "tokenizer.json")):
        return None
    try:
        config = json.loads((folder / "export.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(config, dict) or any(key not in config for key in _CONFIG_KEYS):
        return None
    checked = config.get("verified_min_cosine", 1.0)
    if not isinstance(checked, int | float) or not checked >= 0.9999:  # NaN: an older release
        return None  # accepted a model with NaN weights; export (and so check) it again
    return config


def _export_key(fingerprint: str) -> str:
    import onnxruntime
    import torch
    import transformers

    text = f"{fingerprint}|v{EXPORT_FORMAT_VERSION}|opset{OPSET}|torch{torch.__version__}|tf{transformers.__version__}|ort{onnxruntime.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _export(name_or_path: str, out: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.models import load_model

    st = load_model(
        SentenceTransformer,
        name_or_path,
        device="cpu",
        model_kwargs={"attn_implementation": "eager"},
    )
    st.eval()
    modules = list(st)
    first, tail = modules[0], modules[1:]
    unsupported = [type(m).__name__ for m in tail if type(m).__name__ not in _SUPPORTED_TAIL]
    hf_model = getattr(first, "auto_model", None)
    tokenizer = getattr(first, "tokenizer", None)
    if hf_model is None or tokenizer is None or unsupported:
        raise NotImplementedError(
            f"{name_or_path}: OnnxEmbedding exports Transformer -> Pooling -> (Dense) -> (Normalize) models; "
            f"this one has {[type(m).__name__ for m in modules]}. Use HuggingFaceEmbedding for it instead."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise NotImplementedError(
            f"{name_or_path}: OnnxEmbedding needs a fast tokenizer (tokenizer.json)"
        )
    max_length = int(st.max_seq_length or tokenizer.model_max_length)
    encoded = tokenizer(
        ["an example", "a somewhat longer example sentence"], padding=True, return_tensors="pt"
    )
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded]
    wrapper = _SentenceEmbeddingGraph(hf_model, tail, input_names).eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(encoded[n] for n in input_names),
            str(out / "model.onnx"),
            dynamo=False,
            input_names=input_names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    tokenizer.save_pretrained(str(out / "hf_tokenizer"))
    shutil.copy(out / "hf_tokenizer" / "tokenizer.json", out / "tokenizer.json")
    prompts = {k: v for k, v in (getattr(st, "prompts", None) or {}).items() if v}
    config = {
        "source": str(name_or_path),
        "format_version": EXPORT_FORMAT_VERSION,
        "input_names": input_names,
        "max_seq_length": max_length,
        "pad_token_id": int(tokenizer.pad_token_id or 0),
        "pad_token": tokenizer.pad_token or "[PAD]",
        "dimension": int(
            st.get_embedding_dimension()
            if hasattr(st, "get_embedding_dimension")
            else st.get_sentence_embedding_dimension()
        ),
        "normalized": any(type(m).__name__ == "Normalize" for m in tail),
        "modules": [type(m).__name__ for m in modules],
        "prompts": prompts,
    }
    # Verify: same token ids as the HF tokenizer, same embeddings as PyTorch.
    encoder = OnnxSessionEncoder(out / "model.onnx", out / "tokenizer.json", config, num_threads=1)
    texts = list(_VERIFY_TEXTS)
    for text in texts:
        expected = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        got = encoder.tokenize([text])[0].ids
        if list(expected) != list(got):
            raise RuntimeError(
                f"{name_or_path}: exported tokenizer disagrees with the model's tokenizer on {text[:40]!r}"
            )
    reference = st.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
    if not np.isfinite(reference).all():
        raise ValueError(
            f"{name_or_path}: the model returns NaN or infinite vectors (its weights hold NaN "
            "or infinity: a training run that diverged?); it was not exported. Use an earlier "
            "checkpoint or the starting model"
        )
    exported = encoder.encode(texts)
    cosine = (exported * reference).sum(1) / (
        np.linalg.norm(exported, axis=1) * np.linalg.norm(reference, axis=1)
    )
    if not float(cosine.min()) >= 0.9999:  # NaN fails too
        raise RuntimeError(
            f"{name_or_path}: the ONNX export does not reproduce PyTorch (min cosine {cosine.min():.6f}); "
            "please report this model; use HuggingFaceEmbedding meanwhile"
        )
    config["verified_min_cosine"] = float(cosine.min())
    return config


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = int8.with_name(f".{int8.name}.{os.getpid()}.tmp")
    try:
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={
                "DefaultTensorType": 1
            },  # onnx.TensorProto.FLOAT for ops shape inference misses
        )
        os.replace(tmp, int8)
    finally:
        if tmp.exists():
            tmp.unlink()


def _graph_class():
    import torch

    class SentenceEmbeddingGraph(torch.nn.Module):
        """Transformer forward + the sentence-transformers tail modules, on plain tensors."""

        def __init__(self, hf_model: Any, tail: list, input_names: list[str]) -> None:
            super().__init__()
            self.hf_model = hf_model
            self.tail = torch.nn.ModuleList(tail)
            self.input_names = input_names

        def forward(self, *inputs: Any) -> Any:
            kwargs = dict(zip(self.input_names, inputs, strict=True))
            output = self.hf_model(**kwargs, return_dict=True)
            features = {
                "token_embeddings": output.last_hidden_state,
                "attention_mask": kwargs["attention_mask"],
            }
            for module in self.tail:
                features = module(features)
            return features["sentence_embedding"]

    return SentenceEmbeddingGraph


def _SentenceEmbeddingGraph(hf_model: Any, tail: list, input_names: list[str]) -> Any:  # noqa: N802
    return _graph_class()(hf_model, tail, input_names)
