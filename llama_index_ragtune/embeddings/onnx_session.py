"""One ONNX Runtime session over an exported sentence encoder: tokenise, batch by length, run.

``OnnxSessionEncoder`` is the numpy-in, numpy-out engine under
:class:`~llama_index_ragtune.embeddings.OnnxEmbedding`; the exporter
(:mod:`~llama_index_ragtune.embeddings.onnx_export`) uses it to check a fresh export
against PyTorch.

Example::

    from llama_index_ragtune.embeddings.onnx_export import export_sentence_transformer
    from llama_index_ragtune.embeddings.onnx_session import OnnxSessionEncoder

    exported = export_sentence_transformer()          # bundled MiniLM
    encoder = OnnxSessionEncoder(exported.model_path(), exported.folder / "tokenizer.json",
                                 exported.config)
    vectors = encoder.encode(["apple return policy?"])   # float32, shape (1, 384)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from llama_index_ragtune._cores import available_cores

__all__ = ["ONNX_INSTALL_HINT", "OnnxSessionEncoder", "require_onnx"]

ONNX_INSTALL_HINT = "pip install 'llama-index-ragtune[onnx]'  (onnxruntime and onnx)"


def require_onnx() -> None:
    """Raise an ImportError with the install hint when onnxruntime or onnx is missing."""
    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"ONNX embedding needs {', '.join(missing)}; install with: {ONNX_INSTALL_HINT}"
        )


class OnnxSessionEncoder:
    """Tokenise, batch by length, pad, run the ONNX graph; numpy in, numpy out.

    Args:
        model_path: the ``.onnx`` file.
        tokenizer_path: the fast tokenizer's ``tokenizer.json``.
        config: ``export.json`` settings (input names, max length, pad token).
        num_threads: ONNX Runtime intra-op threads (default: available cores).
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        config: dict[str, Any],
        num_threads: int | None = None,
    ):
        require_onnx()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = config
        self.input_names = list(config["input_names"])
        self.max_length = int(config["max_seq_length"])
        self.pad_id = int(config["pad_token_id"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self._counter: Any = None  # the same tokenizer without truncation, made when needed
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or available_cores())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between ops: on a shared or oversubscribed CPU spinning threads
        # only steal cycles (measured: faster for both batches and single queries there).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.dimension = int(
            self.session.get_outputs()[0].shape[-1] or config.get("dimension") or 0
        )

    def tokenize(self, texts: list[str]) -> list[Any]:
        return (
            self.tokenizer.encode_batch(texts)
            if len(texts) > 1
            else [self.tokenizer.encode(texts[0])]
        )

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` (special tokens included) before truncation to ``max_length``."""
        if self._counter is None:
            from tokenizers import Tokenizer

            counter = Tokenizer.from_str(self.tokenizer.to_str())
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
        return len(self._counter.encode(text).ids)

    def _run(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        batch = len(encodings)
        arrays = {
            "input_ids": np.full((batch, width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((batch, width), dtype=np.int64),
            "token_type_ids": np.zeros((batch, width), dtype=np.int64),
        }
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            arrays["input_ids"][row, :n] = enc.ids
            arrays["attention_mask"][row, :n] = 1
            arrays["token_type_ids"][row, :n] = enc.type_ids
        feeds = {name: arrays[name] for name in self.input_names}
        return self.session.run(None, feeds)[0]

    def encode(
        self, texts: list[str], batch_size: int = 32, cut: list[tuple[int, int]] | None = None
    ) -> np.ndarray:
        """Embeddings of ``texts`` (float32, shape ``(len(texts), dim)``), in input order.

        Texts longer than ``max_length`` tokens are cut to it (as sentence-transformers
        does); when ``cut`` is a list, ``(position, tokens before the cut)`` of each such
        text is appended to it, so the caller can say so.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self.tokenize(list(texts))
        if cut is not None:
            cut.extend(
                (i, self.token_count(texts[i])) for i, e in enumerate(encodings) if e.overflowing
            )
        if len(encodings) == 1:
            return np.asarray(self._run(encodings), dtype=np.float32)
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            result = self._run([encodings[i] for i in rows])
            if out is None:
                out = np.empty((len(texts), result.shape[1]), dtype=np.float32)
            out[rows] = result
        return out
