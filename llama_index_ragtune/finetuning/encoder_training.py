"""How the encoder engine builds what it trains: the model, its rows, its loss.

``EncoderTrainingMixin`` holds these steps of ``EncoderFinetuneEngine``
(:mod:`~llama_index_ragtune.finetuning.encoder`); use the engine, not the mixin.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers import SentenceTransformer
from torch import nn

from llama_index_ragtune.finetuning.budget import select_positives
from llama_index_ragtune.finetuning.rows import encoder_rows
from llama_index_ragtune.models import load_model, resolve_model

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset


GIST_TEMPERATURE = 0.05  # = MultipleNegativesRankingLoss's default scale of 20


class EncoderTrainingMixin:
    """The encoder engine's model loading, training rows, loss and probe step."""

    # ------------------------------------------------------------------ building

    @staticmethod
    def _load_model(model: Any, loss: Any, device: str | None) -> SentenceTransformer:
        loss_model = getattr(loss, "model", None) if isinstance(loss, nn.Module) else None
        if model is None and isinstance(loss_model, SentenceTransformer):
            return loss_model
        if isinstance(model, SentenceTransformer):
            st = model
        elif model is None or isinstance(model, (str, Path)):
            st = load_model(
                SentenceTransformer, resolve_model(model, kind="encoder"), device=device
            )
        else:
            raise TypeError(
                f"model must be None, a path, a hub id or a SentenceTransformer, got {type(model).__name__}"
            )
        if loss_model is not None and loss_model is not st:
            raise ValueError(
                "the loss module was built on a different model than the engine's; pass that model as "
                "model=..., or pass the loss as a callable `lambda model: Loss(model)`"
            )
        return st

    def _build_loss(self) -> nn.Module:
        from sentence_transformers.sentence_transformer import losses

        # under DDP the in-batch negatives come from the whole global batch, as in one process
        gather = {"gather_across_devices": self._distributed()}
        if self.loss == "mnrl":
            loss: nn.Module = losses.MultipleNegativesRankingLoss(self.model, **gather)
        elif self.loss == "cached_mnrl":
            loss = losses.CachedMultipleNegativesRankingLoss(
                self.model, mini_batch_size=16, **gather
            )
        elif self.loss in ("gist", "cached_gist"):
            guide = self._guide_model()
            # query -> document terms only, like MultipleNegativesRankingLoss: the guide
            # only decides which in-batch and mined candidates count as negatives.
            gist = {
                "temperature": GIST_TEMPERATURE,
                "contrast_anchors": False,
                "contrast_positives": False,
                **gather,
            }
            if self.loss == "gist":
                loss = losses.GISTEmbedLoss(self.model, guide, **gist)
            else:
                loss = losses.CachedGISTEmbedLoss(self.model, guide, mini_batch_size=16, **gist)
        elif isinstance(self.loss, nn.Module):
            loss = self.loss
        elif callable(self.loss):
            loss = self.loss(self.model)
        else:
            raise TypeError(
                f"loss must be a name, a loss module or a callable, got {type(self.loss).__name__}"
            )
        if self.matryoshka_dims:
            loss = losses.MatryoshkaLoss(self.model, loss, matryoshka_dims=self.matryoshka_dims)
        return loss

    def _guide_model(self) -> SentenceTransformer:
        """A frozen copy of the starting model: GIST's judge of which in-batch negatives count."""
        guide = copy.deepcopy(self.model)
        guide.eval()
        for param in guide.parameters():
            param.requires_grad_(False)
        return guide

    def build_train_rows(
        self, dataset: RetrievalDataset | None = None
    ) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """The trainer's columns (``anchor``, ``positive``, ``negative``...) within the budget."""
        dataset = dataset if dataset is not None else self.train_dataset
        positives = select_positives(
            dataset,
            self.budget,
            seed=self.args.seed,
            min_grade=self.min_grade,
            top_grade_only=self.top_grade_only,
        )
        if not positives:
            raise ValueError(
                f"no training pair left: every positive is graded below min_grade={self.min_grade}"
            )
        columns, stats = encoder_rows(
            dataset, self.max_negatives_per_query, seed=self.args.seed, positives=positives
        )
        if (
            self.query_prompt is not None or self.passage_prompt is not None
        ) and self.args.prompts is None:
            self.args.prompts = {
                col: (self.query_prompt if col == "anchor" else self.passage_prompt) or ""
                for col in columns
            }
        info = stats.as_dict()
        info["pairs_available"] = dataset.num_pairs
        return columns, info

    # ------------------------------------------------------------------ planning

    def _probe_step(self, loss: nn.Module, columns: Mapping[str, list[str]]) -> Callable[[], None]:
        """One forward + backward on real rows, without an optimizer step (weights unchanged)."""
        batch = min(self.args.per_device_train_batch_size, len(columns["anchor"]))
        texts = [list(v[:batch]) for v in columns.values()]

        def step() -> None:
            from sentence_transformers.util import batch_to_device

            features = [
                batch_to_device(self.model.preprocess(col), self.model.device) for col in texts
            ]
            loss(features, None).backward()
            self.model.zero_grad(set_to_none=True)

        return step
