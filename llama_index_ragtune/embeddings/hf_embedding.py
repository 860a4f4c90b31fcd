"""LlamaIndex's ``HuggingFaceEmbedding`` that says when it cuts texts to its window.

:class:`WarnedHuggingFaceEmbedding` is what :func:`~llama_index_ragtune.embeddings.default_embed_model`
(``backend="torch"``) builds: the same vectors, the same ``class_name`` (so the same
cache identity), plus one warning per kind (queries, documents) the first time a text is
longer than ``max_seq_length`` and its end is dropped (:mod:`.truncation`).

Example::

    from llama_index_ragtune.embeddings.hf_embedding import WarnedHuggingFaceEmbedding

    embed = WarnedHuggingFaceEmbedding(model_name=path, device="cpu")
    embed.get_text_embedding("word " * 1000)    # one warning: 744 tokens dropped ...
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from llama_index_ragtune.embeddings.truncation import CutWarner, hf_cut_warner

__all__ = ["WarnedHuggingFaceEmbedding"]


class WarnedHuggingFaceEmbedding(HuggingFaceEmbedding):
    """``HuggingFaceEmbedding`` warning once per kind about texts cut to ``max_seq_length``.

    Example::

        WarnedHuggingFaceEmbedding(model_name=path).class_name()   # 'HuggingFaceEmbedding'
    """

    _cut_warner: CutWarner | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cut_warner = hf_cut_warner(self)

    def _embed(
        self, inputs: list[str | BytesIO], prompt_name: str | None = None
    ) -> list[list[float]]:
        warner = self._cut_warner
        if warner is not None and prompt_name in ("query", "text"):
            warner.limit = int(self._model.max_seq_length)  # may be changed after building
            warner.check(inputs, prompt_name)
        return super()._embed(inputs, prompt_name)
