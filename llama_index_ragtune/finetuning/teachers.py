"""Teachers for reranker distillation: any model that scores (query, passage) pairs.

``MarginMSELoss`` trains the reranker on a teacher's score margins. A teacher is
a cross-encoder (folder, hub id or instance), a bi-encoder (its scaled cosine
similarity: ``bi_encoder_scorer``, e.g. the fine-tuned encoder), or any callable
``[(query, passage), ...] -> scores``; ``teacher_scorer`` turns each into one
scoring function.

Example::

    from sentence_transformers import SentenceTransformer
    from llama_index_ragtune.finetuning.teachers import bi_encoder_scorer, teacher_scorer

    teacher = bi_encoder_scorer(SentenceTransformer("runs/encoder/final"))
    teacher([("what lowers LDL?", "Statins lower LDL cholesterol.")])   # one float per pair
    score = teacher_scorer("cross-encoder/ms-marco-MiniLM-L6-v2")         # with a network
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.cross_encoder import CrossEncoder
from torch import nn

from llama_index_ragtune.models import load_model, resolve_model

Teacher = (
    str | CrossEncoder | SentenceTransformer | Callable[[list[tuple[str, str]]], Sequence[float]]
)
BI_ENCODER_TEACHER_SCALE = 10.0


def bi_encoder_scorer(
    model: SentenceTransformer, scale: float = BI_ENCODER_TEACHER_SCALE, batch_size: int = 64
) -> Callable[[list[tuple[str, str]]], list[float]]:
    """A teacher from a bi-encoder: ``scale * cos(query, passage)`` for each pair.

    Example::

        from sentence_transformers import SentenceTransformer
        teacher = bi_encoder_scorer(SentenceTransformer("runs/encoder/final"))
        teacher([("what lowers LDL?", "Statins lower LDL cholesterol.")])   # one float per pair
    """
    import numpy as np

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        encode = {
            "batch_size": batch_size,
            "normalize_embeddings": True,
            "convert_to_numpy": True,
            "show_progress_bar": False,
        }
        queries = model.encode([q for q, _ in pairs], **encode)
        passages = model.encode([p for _, p in pairs], **encode)
        return (scale * np.sum(queries * passages, axis=1)).astype(float).tolist()

    return score


def teacher_scorer(teacher: Teacher) -> Callable[[list[tuple[str, str]]], Sequence[float]]:
    """One scoring function ``pairs -> scores`` from any teacher (see the module docstring)."""
    if isinstance(teacher, (str, Path)):
        teacher = load_model(CrossEncoder, resolve_model(teacher, kind="encoder"))
    if isinstance(teacher, CrossEncoder):
        model = teacher
        return lambda pairs: model.predict(
            pairs, batch_size=32, show_progress_bar=False, activation_fn=nn.Identity()
        )
    if isinstance(teacher, SentenceTransformer):
        return bi_encoder_scorer(teacher)
    if callable(teacher):
        return teacher
    raise TypeError(
        "teacher must be a CrossEncoder, a SentenceTransformer, a path or a callable, "
        f"got {type(teacher).__name__}"
    )
