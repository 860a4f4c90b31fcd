"""``AnswerabilityScorer``: the encoder side's answer to "do these sources hold the answer?".

A one-logit cross-encoder reads each (question, source text) pair and gives
the probability that this source holds the answer; the question is
answerable when at least one source does, so ``P(answerable)`` is the largest
of those probabilities (0 with no source). Train one with
``finetuning.AnswerabilityFinetuneEngine`` on labels from
``data.answerability`` (SQuAD 2.0 unanswerables, SciFact NOT ENOUGH INFO
claims, or gold passages removed from any corpus). Refusal policies
(``llms.refusal_policy``) turn it into refuse / answer decisions.

Example::

    from llama_index_ragtune.llms.answerability import AnswerabilityScorer

    scorer = AnswerabilityScorer("runs/answerability/final")
    scorer(["When was the exchange re-established?"], [["It re-opened in April 1991.", "Rome."]])
    # [0.93]: P(answerable) per question
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index_ragtune.models import load_model
from llama_index_ragtune.retrievers.checks import positive_int

DEFAULT_MAX_LENGTH = 320


class AnswerabilityScorer:
    """P(the sources hold the answer) per question, from a one-logit cross-encoder.

    Args:
        model: a cross-encoder folder or hub id, or a loaded sentence-transformers
            ``CrossEncoder`` (one output; its sigmoid is P(this source holds the answer)).
        max_length: token limit of a (question, source) pair (``None``: the model's own).
        batch_size: pairs per forward pass.
        device: where to load the model (``None``: let sentence-transformers choose).

    Example::

        scorer = AnswerabilityScorer("runs/answerability/final", max_length=320)
        scorer.source_probabilities(["Capital of Italy?"], [["Rome is the capital.", "Milan."]])
        # [[0.97, 0.04]]
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        *,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        from sentence_transformers import CrossEncoder

        positive_int(batch_size, "AnswerabilityScorer: batch_size")
        if max_length is not None:
            positive_int(max_length, "AnswerabilityScorer: max_length")
        if isinstance(model, CrossEncoder):
            self.model = model
            self.path: str | None = None
        elif isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser()
            if not path.exists() and os.sep in str(model):
                raise FileNotFoundError(
                    f"AnswerabilityScorer: no model folder at {path}; train one with "
                    "AnswerabilityFinetuneEngine or pass a cross-encoder hub id."
                )
            if path.exists():
                _check_scorer_folder(path)
            self.model = load_model(
                CrossEncoder, str(path if path.exists() else model), device=device
            )
            self.path = str(path.resolve()) if path.exists() else str(model)
        else:
            raise TypeError(
                f"AnswerabilityScorer: model must be a path, a hub id or a CrossEncoder, got "
                f"{type(model).__name__}."
            )
        if self.model.num_labels != 1:
            raise ValueError(
                f"AnswerabilityScorer needs a one-logit cross-encoder; this one has "
                f"{self.model.num_labels} labels."
            )
        if max_length is not None:
            self.model.max_length = max_length
        self.batch_size = batch_size

    def source_probabilities(
        self, questions: Sequence[str], sources: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """P(source holds the answer) for every source of every question (one batched pass)."""
        import torch

        if len(questions) != len(sources):
            raise ValueError(
                f"AnswerabilityScorer: {len(questions)} questions for {len(sources)} source lists; "
                "pass one list of source texts per question."
            )
        pairs = [(q, s) for q, texts in zip(questions, sources, strict=True) for s in texts]
        scores: list[float] = []
        if pairs:
            scores = [
                float(x)
                for x in self.model.predict(
                    pairs,
                    batch_size=self.batch_size,
                    show_progress_bar=False,
                    activation_fn=torch.nn.Sigmoid(),
                )
            ]
        out, i = [], 0
        for texts in sources:
            out.append(scores[i : i + len(texts)])
            i += len(texts)
        return out

    def __call__(self, questions: Sequence[str], sources: Sequence[Sequence[str]]) -> list[float]:
        """P(answerable) per question: the largest per-source probability (0.0 without sources)."""
        return [max(p, default=0.0) for p in self.source_probabilities(questions, sources)]

    def __repr__(self) -> str:
        return f"AnswerabilityScorer({self.path or type(self.model).__name__!r})"


def _check_scorer_folder(path: Path) -> None:
    """A folder that is not a cross-encoder (a file, a decoder, a bi-encoder, missing weights)
    fails here, naming it: CrossEncoder would load it with a random scoring head."""
    from llama_index_ragtune.postprocessor.model_folder import check_cross_encoder_folder

    if not path.is_dir():
        raise FileNotFoundError(
            f"AnswerabilityScorer: {str(path)!r} is a file; pass the folder that "
            "AnswerabilityFinetuneEngine (CrossEncoder.save) writes."
        )
    try:
        check_cross_encoder_folder(path.resolve())
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"AnswerabilityScorer: {exc}") from None


class SimilarityAnswerabilityScorer:
    """P(answerable) from the embedder alone: ``(1 + cos) / 2`` of the question and its best source.

    Needs no training: the (tuned) bi-encoder that retrieved the sources says how
    close the nearest one is to the question. A weaker signal than a trained
    ``AnswerabilityScorer`` on adversarial questions, but free wherever a retriever
    runs; the tuning pipeline fits a refusal policy on it (and on the decoder's
    P(refusal)) and keeps whichever scores best on held-out questions.

    Args:
        embed_model: any LlamaIndex embedding (``None``: ``Settings.embed_model`` at call time).

    Example::

        from llama_index_ragtune.embeddings import default_embed_model

        scorer = SimilarityAnswerabilityScorer(default_embed_model())
        scorer(["apple return policy?"], [["Fresh produce can be returned within 7 days."]])
        # [0.78]
    """

    kind = "similarity"
    path = None  # nothing to load from a folder: the embedder is the retriever's

    def __init__(self, embed_model: Any = None) -> None:
        self._embed_model = embed_model

    @property
    def embed_model(self) -> Any:
        """The embedder in use (``Settings.embed_model`` when none was given)."""
        if self._embed_model is not None:
            return self._embed_model
        from llama_index.core import Settings

        return Settings.embed_model

    def __call__(self, questions: Sequence[str], sources: Sequence[Sequence[str]]) -> list[float]:
        """P(answerable) per question: ``(1 + cos) / 2`` of its closest source (0.0 without sources)."""
        import numpy as np

        if len(questions) != len(sources):
            raise ValueError(
                f"SimilarityAnswerabilityScorer: {len(questions)} questions for {len(sources)} "
                "source lists; pass one list of source texts per question."
            )
        model = self.embed_model
        texts = [t for group in sources for t in group]
        if not texts:
            return [0.0] * len(questions)
        query_vectors = _unit([model.get_query_embedding(q) for q in questions])
        text_vectors = _unit(model.get_text_embedding_batch(texts))
        out, i = [], 0
        for q_vec, group in zip(query_vectors, sources, strict=True):
            block = text_vectors[i : i + len(group)]
            i += len(group)
            best = float(np.max(block @ q_vec)) if len(group) else -1.0
            out.append(min(1.0, max(0.0, (1.0 + best) / 2.0)))
        return out

    def __repr__(self) -> str:
        return f"SimilarityAnswerabilityScorer({type(self.embed_model).__name__})"


def _unit(vectors: Any) -> Any:
    import numpy as np

    array = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)
