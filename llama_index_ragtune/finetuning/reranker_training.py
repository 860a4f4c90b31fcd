"""How the reranker engine builds what it trains: the model, its rows, its loss.

``RerankerTrainingMixin`` holds these steps of ``RerankerFinetuneEngine``
(:mod:`~llama_index_ragtune.finetuning.reranker`); use the engine, not the mixin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers.cross_encoder import CrossEncoder
from torch import nn

from llama_index_ragtune.finetuning.budget import select_positives
from llama_index_ragtune.finetuning.rows import cross_encoder_rows, teacher_margins
from llama_index_ragtune.finetuning.teachers import teacher_scorer
from llama_index_ragtune.models import load_model, resolve_model

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

logger = logging.getLogger(__name__)

_LAYOUTS = {
    "bce": "pointwise",
    "lambda": "listwise",
    "listnet": "listwise",
    "margin_mse": "triplets",
}
DEFAULT_MAX_LENGTH = 256


class RerankerTrainingMixin:
    """The reranker engine's model loading, training rows, loss and probe step."""

    # ------------------------------------------------------------------ building

    @staticmethod
    def _load_model(
        model: Any, loss: Any, max_length: int | None, device: str | None
    ) -> CrossEncoder:
        loss_model = getattr(loss, "model", None) if isinstance(loss, nn.Module) else None
        if model is None and isinstance(loss_model, CrossEncoder):
            return loss_model
        if isinstance(model, CrossEncoder):
            ce = model
            if max_length is not None:
                ce.max_length = max_length
        elif model is None or isinstance(model, (str, Path)):
            if max_length is None and model is None:
                max_length = DEFAULT_MAX_LENGTH
            # num_labels=1: a bi-encoder checkpoint gets a new one-logit head.
            ce = load_model(
                CrossEncoder,
                resolve_model(model, kind="encoder"),
                num_labels=1,
                max_length=max_length,
                device=device,
            )
        else:
            raise TypeError(
                f"model must be None, a path, a hub id or a CrossEncoder, got {type(model).__name__}"
            )
        if ce.num_labels != 1:
            raise ValueError(
                f"the reranker must output one score per pair, but the model has {ce.num_labels} labels; "
                "load it with CrossEncoder(path, num_labels=1) to get a new one-logit head"
            )
        if loss_model is not None and loss_model is not ce:
            raise ValueError(
                "the loss module was built on a different model than the engine's; pass that model as "
                "model=..., or pass the loss as a callable `lambda model: Loss(model)`"
            )
        fit_max_length(ce, max_length)
        return ce

    def _layout(self) -> str:
        return _LAYOUTS.get(self.loss, "pointwise") if isinstance(self.loss, str) else "pointwise"

    def build_train_rows(
        self, dataset: RetrievalDataset | None = None
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """The trainer's columns for the loss's layout (within the budget), and their stats."""
        dataset = dataset if dataset is not None else self.train_dataset
        positives = select_positives(
            dataset, self.budget, seed=self.args.seed, top_grade_only=self.top_grade_only
        )
        columns, stats = cross_encoder_rows(
            dataset,
            self._layout(),
            self.max_negatives_per_query,
            seed=self.args.seed,
            positives=positives,
        )
        if self.loss == "margin_mse":
            columns["label"] = teacher_margins(self._teacher_scorer(), columns)
        return columns, stats.as_dict()

    def _teacher_scorer(self) -> Callable[[list[tuple[str, str]]], Sequence[float]]:
        return teacher_scorer(self.teacher)

    def _build_loss(self, columns: Mapping[str, list[Any]]) -> nn.Module:
        from sentence_transformers.cross_encoder import losses

        if self.loss == "bce":
            positives = sum(1 for label in columns["label"] if label > 0)
            negatives = len(columns["label"]) - positives
            pos_weight = torch.tensor(negatives / max(positives, 1))
            return losses.BinaryCrossEntropyLoss(self.model, pos_weight=pos_weight)
        if self.loss == "lambda":
            return losses.LambdaLoss(self.model, mini_batch_size=32)
        if self.loss == "listnet":
            return losses.ListNetLoss(self.model, mini_batch_size=32)
        if self.loss == "margin_mse":
            return losses.MarginMSELoss(self.model)
        if isinstance(self.loss, nn.Module):
            return self.loss
        if callable(self.loss):
            return self.loss(self.model)
        raise TypeError(
            f"loss must be a name, a loss module or a callable, got {type(self.loss).__name__}"
        )

    # ------------------------------------------------------------------ planning

    def _probe_step(
        self, loss: nn.Module, columns: Mapping[str, list[Any]]
    ) -> Callable[[], None] | None:
        """One forward + backward on real rows (no optimizer step); ``None`` for listwise rows."""
        if "docs" in columns:
            return None
        batch = min(self.args.per_device_train_batch_size, len(columns["query"]))
        inputs = [list(v[:batch]) for k, v in columns.items() if k != "label"]
        labels = torch.tensor([float(x) for x in columns["label"][:batch]])

        def step() -> None:
            loss(inputs, labels).backward()
            self.model.zero_grad(set_to_none=True)

        return step


def _is_trained_cross_encoder(model: Any) -> bool:
    """Whether the starting model already is a one-score cross-encoder (not a new head)."""
    if isinstance(model, CrossEncoder):
        return True
    if model is None:
        return False
    config = Path(str(model)) / "config.json"
    if not config.is_file():
        return False  # a hub id: assume a bi-encoder checkpoint unless its config says otherwise

    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(
        str(a).endswith("ForSequenceClassification") for a in data.get("architectures") or []
    )


_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}
"""Position slots these model types keep for padding (514 positions hold 512 tokens)."""


def token_limit(config: Mapping[str, Any]) -> int | None:
    """The most tokens a model of this ``config.json`` reads (its positions, less the
    padding slots of RoBERTa-like models); ``None`` when the config does not say.

    Example::

        token_limit({"max_position_embeddings": 514, "model_type": "roberta"})   # 512
    """
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    return positions - _POSITION_OFFSET.get(str(config.get("model_type", "")), 0)


def fit_max_length(ce: Any, asked: int | None) -> None:
    """Keep ``ce.max_length`` within the positions the model has: an ``asked`` length above
    them is a ``ValueError`` naming both (it crashed with "The size of tensor a (339) must
    match the size of tensor b (128)" at the first long passage, mid-run); a default above
    them is lowered with a warning.

    Example::

        fit_max_length(CrossEncoder(path, num_labels=1), 256)
    """
    config = getattr(getattr(ce, "model", None), "config", None)
    limit = token_limit(config.to_dict() if hasattr(config, "to_dict") else {})
    if limit is None or not ce.max_length or ce.max_length <= limit:
        return
    if asked is not None:
        raise ValueError(
            f"max_length={asked} is more tokens than the model has positions ({limit}): give "
            f"max_length <= {limit} (--max-length)"
        )
    logger.warning(
        "the reranker's default max_length %s is more than the model's %s positions: using %s",
        ce.max_length,
        limit,
        limit,
    )
    ce.max_length = limit
