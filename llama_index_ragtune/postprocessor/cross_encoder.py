"""Rerank retrieved nodes with a sentence-transformers cross-encoder.

A cross-encoder reads the query and each node's text together and scores their
relevance; it is slower than the retriever but far more precise, so it reorders
a short candidate list (top-100 -> top-10). Any folder written by
``CrossEncoder.save`` (for instance by ``RerankerFinetuneEngine``) or a hub id
works.

Example::

    from llama_index_ragtune.postprocessor import CrossEncoderRerank

    reranker = CrossEncoderRerank(model="runs/reranker", top_n=5)
    query_engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[reranker])
"""

from __future__ import annotations

import math
import os
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from llama_index_ragtune.grounding import is_blank
from llama_index_ragtune.llms.loading import check_device
from llama_index_ragtune.postprocessor.loaded_model import check_loaded_settings, warn_long_query
from llama_index_ragtune.postprocessor.model_folder import NO_MODEL_MESSAGE, resolve_model_path
from llama_index_ragtune.postprocessor.pair_input import fit_pairs, model_lock
from llama_index_ragtune.postprocessor.shared_models import folder_stamp, shared_model
from llama_index_ragtune.retrievers.checks import clean_text, distinct_nodes
from llama_index_ragtune.retrievers.fusion import normalize_scores

dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"


class CrossEncoderRerank(BaseNodePostprocessor):
    """Reorder nodes by a cross-encoder's (query, node text) relevance score; keep the best ``top_n``.

    The model folder is checked when the reranker is built (a missing folder, a folder
    without config/weights/tokenizer, or a bi-encoder folder raise there, naming the
    path); the weights are loaded lazily, once, on first use. Scores are the model's activated
    outputs (a sigmoid probability for the usual 1-logit rerankers), so
    ``score_threshold=0.5`` drops the nodes the model calls irrelevant. A model that scores
    a node NaN or infinite (broken weights, a half-precision overflow), or returns another
    number of scores than pairs, is a ``ValueError`` naming the nodes: such scores have no order.
    A node showing no text (empty, whitespace or invisible characters) ranks after every node
    with text, its score capped at theirs.

    ``retrieval_weight=w`` keeps part of the first stage's judgement: nodes are
    ordered by ``(1 - w) * z(reranker score) + w * z(retriever score)`` (z-scores
    over the query's candidates), and that blend becomes the node score. A reranker
    trained on a few thousand pairs is noisy on its own; blending it with a strong
    hybrid retriever keeps the retriever's wins. ``score_threshold`` still applies to
    the reranker's own score.

    ``to_dict()`` and pickling keep the settings only; the model is reloaded from
    ``model`` on first use. Rerankers over the same folder and settings share one loaded
    model (``shared_models``), and one lock around its calls.

    Example::

        from llama_index.core.schema import NodeWithScore, TextNode
        from sentence_transformers import CrossEncoder
        from llama_index_ragtune.models import default_encoder
        from llama_index_ragtune.postprocessor import CrossEncoderRerank

        # In practice the folder RerankerFinetuneEngine writes (CrossEncoderRerank("runs/reranker"));
        # here an untrained 1-logit head on the bundled MiniLM, so the example runs offline.
        reranker = CrossEncoderRerank(CrossEncoder(default_encoder(), num_labels=1), top_n=1)
        nodes = [NodeWithScore(node=TextNode(text=t), score=0.5)
                 for t in ("Cats purr.", "Statins lower LDL cholesterol.")]
        best = reranker.postprocess_nodes(nodes, query_str="what lowers LDL?")
        len(best), 0.0 <= best[0].score <= 1.0     # (1, True)
    """

    # every setting is checked when assigned too, as when built: a late ``top_n = 0`` kept
    # no node (a silent refusal downstream), ``-1`` dropped the best-but-last one, NaN
    # thresholds and weights were ignored
    model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=True)

    model: str = Field(description="Local folder written by CrossEncoder.save, or a hub id.")
    top_n: int | None = Field(
        default=10, ge=1, strict=True, description="Nodes kept after reranking (None keeps all)."
    )
    batch_size: int = Field(
        default=32, ge=1, strict=True, description="(query, text) pairs scored per forward pass."
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="Token limit per pair (longer pairs are truncated); None uses the model's own.",
    )
    score_threshold: float | None = Field(
        default=None,
        strict=True,
        description="Drop nodes whose reranker score is below this value.",
    )
    device: str | None = Field(
        default=None, description="torch device; None picks cuda, mps or cpu."
    )
    retrieval_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        strict=True,
        description=(
            "Blend in the retriever's score: the final score is (1 - w) * z(reranker) + "
            "w * z(retriever), z-scored over the candidates of the query; 0 ranks by the "
            "reranker alone."
        ),
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description=(
            "Store the retriever's score in the returned node's metadata['retrieval_score'] "
            "(a copy of the node: the retrieved node, shared with the index, is not modified)."
        ),
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata the scored node text includes."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow custom model code from the hub."
    )

    _model: Any = PrivateAttr(default=None)
    _model_key: Any = PrivateAttr(default=None)  # the settings _model was loaded with
    _given: bool = PrivateAttr(default=False)  # _model was passed in, not loaded from a path
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _warned_long_query: bool = PrivateAttr(default=False)  # said once that queries are cut
    # models loaded lazily, by settings: shared with copies (``model_copy``, as query engines
    # make for their own callback managers), so that a copy never loads the weights again
    _loaded: dict = PrivateAttr(default_factory=dict)

    @field_validator("score_threshold")
    @classmethod
    def _finite_threshold(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"score_threshold must be a finite number or None, got {value}")
        return value

    @field_validator("device")
    @classmethod
    def _usable_device(cls, value: str | None) -> str | None:
        if value is not None:
            check_device(value, "CrossEncoderRerank")
        return value

    def __init__(self, model: Any = None, top_n: int | None = 10, **kwargs: Any) -> None:
        if model is None:
            raise ValueError(NO_MODEL_MESSAGE)
        loaded = None
        if hasattr(model, "predict") and not isinstance(model, (str, os.PathLike)):
            if not isinstance(getattr(model, "num_labels", None), int):
                raise TypeError(
                    "CrossEncoderRerank model must be a folder path, a hub id or a loaded "
                    f"sentence-transformers CrossEncoder, got {type(model).__name__} (it has "
                    "predict() but no num_labels)"
                )
            loaded, model = model, _model_name(model)
        else:
            model = resolve_model_path(model)
        super().__init__(model=model, top_n=top_n, **kwargs)
        self._model = loaded
        if loaded is not None:
            check_loaded_settings(loaded, self.max_length, self.device)
            self._model_key, self._given = self._load_key(), True

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialisation stores for this class."""
        return "CrossEncoderRerank"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only: the model is reloaded from ``model`` on first use.

        (``BaseComponent.__getstate__`` would pickle the whole model once just to test it.)
        """
        state = BaseModel.__getstate__(self)
        private = state.get("__pydantic_private__") or {}
        return {
            **state,
            "__dict__": {k: v for k, v in state["__dict__"].items() if _picklable(v)},
            "__pydantic_private__": {
                k: v
                for k, v in private.items()
                if k not in ("_model", "_model_key", "_given", "_lock", "_loaded")
            },
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the settings; the private state (lock, model cache) starts fresh.

        ``BaseComponent`` re-runs ``__init__``, and falls back to pydantic's plain restore
        when that fails (a reranker given an in-memory CrossEncoder whose name is no
        cross-encoder folder), which left no lock or model slot: an ``AttributeError`` at
        the first query.
        """
        super().__setstate__(state)
        private = dict(getattr(self, "__pydantic_private__", None) or {})
        for name, attribute in self.__private_attributes__.items():
            if name not in private:
                private[name] = attribute.get_default(call_default_factory=True)
        object.__setattr__(self, "__pydantic_private__", private)

    @property
    def cross_encoder(self) -> Any:
        """The sentence-transformers ``CrossEncoder``, loaded on first access, and again when
        ``model``, ``device``, ``max_length`` or ``trust_remote_code`` was changed since (the
        change was ignored: the first model kept serving)."""
        key = self._load_key()
        if self._model is None or key != self._model_key:
            with self._lock:
                if self._model is not None and key != self._model_key and self._given:
                    raise ValueError(
                        f"CrossEncoderRerank was given a loaded CrossEncoder, so its settings "
                        f"{self._changed(key)} cannot change: set them on the CrossEncoder "
                        "itself, or build the reranker from its folder path"
                    )
                if self._model is None or key != self._model_key:
                    if key not in self._loaded:  # one model per folder in the process
                        stamped = (*key, folder_stamp(self.model))
                        self._loaded[key] = shared_model(stamped, self._load)
                    self._model, self._model_key = self._loaded[key], key
        return self._model

    def _load_key(self) -> tuple:
        return (self.model, self.device, self.max_length, self.trust_remote_code)

    def _changed(self, key: tuple) -> str:
        names = ("model", "device", "max_length", "trust_remote_code")
        old = self._model_key or (None,) * len(names)
        return ", ".join(
            f"{n}={new!r} (was {was!r})"
            for n, new, was in zip(names, key, old, strict=True)
            if new != was
        )

    def _load(self) -> Any:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ImportError(
                "CrossEncoderRerank needs sentence-transformers: `pip install sentence-transformers`"
            ) from exc
        local = Path(self.model).exists()
        from llama_index_ragtune.models import load_model

        try:
            model = load_model(
                CrossEncoder,
                self.model,
                device=self.device,
                max_length=self.max_length,
                trust_remote_code=self.trust_remote_code,
                local_files_only=local,
            )
        except Exception as exc:
            if local:
                hint = (
                    f"{self.model!r} is not a cross-encoder folder: expected config.json, the weights "
                    "and the tokenizer files that CrossEncoder.save (or RerankerFinetuneEngine) writes"
                )
            else:
                hint = (
                    f"{self.model!r} is not a local folder and could not be loaded from the hub "
                    "(offline machines cannot download models). " + NO_MODEL_MESSAGE
                )
            raise OSError(f"Could not load the cross-encoder: {hint}. Cause: {exc}") from exc
        if model.num_labels > 2:
            raise ValueError(
                f"CrossEncoderRerank needs a relevance model with 1 output (or 2 classes), but "
                f"{self.model!r} has {model.num_labels} labels"
            )
        return model

    def score(self, query: str, texts: list[str]) -> list[float]:
        """Relevance scores of ``texts`` for ``query`` (higher is more relevant), in input order.

        Example::

            reranker.score("what lowers LDL?", ["Cats purr.", "Statins lower LDL."])  # two floats
        """
        if not isinstance(query, str):
            raise TypeError(f"CrossEncoderRerank.score: query must be a str, got {query!r}")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(
                "CrossEncoderRerank.score: texts must be a list of str (one per node), got "
                f"{type(texts).__name__}"
            )
        return self._score(query, texts, [f"text {i}" for i in range(len(texts))])

    def _score(self, query: str, texts: list[str], names: list[str]) -> list[float]:
        """:meth:`score`, its checks done; ``names`` say which item each text is in errors."""
        if not texts:
            return []
        model = self.cross_encoder
        # one call at a time per model (rerankers and their copies share it): concurrent
        # predicts switched the tokenizer's padding and truncation under each other
        with model_lock(model):
            # lone surrogates / NUL would crash the tokenizer; a text far longer than the
            # model reads is cut first (it was tokenised whole, once per pair)
            query = clean_text(query)
            cut, texts = fit_pairs(model, query, [clean_text(text) for text in texts])
            if not self._warned_long_query:
                self._warned_long_query = warn_long_query(
                    model, cut, self.model, cut=len(cut) < len(query)
                )
            pairs = [(cut, text) for text in texts]
            if model.num_labels == 2:
                probs = model.predict(
                    pairs, batch_size=self.batch_size, apply_softmax=True, show_progress_bar=False
                )
                scores = self._scores_array(probs, 2 * len(texts)).reshape(-1, 2)[:, 1]
            else:
                scores = self._scores_array(
                    model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False),
                    len(texts),
                )
        bad = [name for name, value in zip(names, scores, strict=True) if not math.isfinite(value)]
        if bad:
            raise ValueError(
                f"CrossEncoderRerank: the cross-encoder {self.model!r} scored {len(bad)} of "
                f"{len(texts)} nodes NaN or infinite (e.g. {bad[:3]}), so they cannot be ranked; "
                "its weights or dtype are broken (half precision overflows): load it in float32 "
                "or retrain it"
            )
        return [float(value) for value in scores]

    def _scores_array(self, raw: Any, expected: int) -> Any:
        """The model's output as a flat float array of ``expected`` values, or a named error."""
        import numpy as np

        if hasattr(raw, "detach"):  # a torch tensor (convert_to_tensor=True, a custom model)
            raw = raw.detach().float().cpu().numpy()
        try:
            scores = np.asarray(raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"CrossEncoderRerank: the cross-encoder {self.model!r} returned "
                f"{type(raw).__name__}, not numbers ({exc})"
            ) from exc
        if scores.size != expected:
            raise ValueError(
                f"CrossEncoderRerank: the cross-encoder {self.model!r} returned {scores.size} "
                f"values for {expected} expected (one per pair, two per pair for a 2-class model)"
            )
        return scores

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError(
                "CrossEncoderRerank needs the query: call postprocess_nodes(nodes, query_str=...) "
                "or pass query_bundle=QueryBundle(...)"
            )
        if not isinstance(query_bundle, QueryBundle) or not isinstance(query_bundle.query_str, str):
            raise TypeError(
                "CrossEncoderRerank: the query must be a str (query_str=...) or a QueryBundle "
                f"holding one, got {query_bundle!r}"[:300]
            )
        if not nodes:
            return []
        if isinstance(nodes, str) or not all(isinstance(n, NodeWithScore) for n in nodes):
            raise TypeError(
                "CrossEncoderRerank reranks a list of NodeWithScore (what a retriever returns); "
                "wrap bare nodes as NodeWithScore(node=node, score=None)"
            )
        nodes = distinct_nodes(nodes)
        if is_blank(query_bundle.query_str):
            raise ValueError(
                "CrossEncoderRerank got an empty query (no visible character): there is nothing "
                "to rank the nodes against; pass the user's question as query_str"
            )
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n or len(nodes),
                model_name=self.model,
            )
        )
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
            names = [n.node.node_id for n in nodes]
            scores = self._score(query_bundle.query_str, texts, names)
            final = scores
            if self.retrieval_weight > 0:
                final = blend_scores(scores, _retrieval_scores(nodes), self.retrieval_weight)
            visible = [not is_blank(text) for text in texts]
            final = _blank_last(final, visible)
            kept = []
            for node, score, blended, shown in zip(nodes, scores, final, visible, strict=True):
                if self.score_threshold is not None and score < self.score_threshold:
                    continue
                inner = _with_retrieval_score(node) if self.keep_retrieval_score else node.node
                kept.append((shown, NodeWithScore(node=inner, score=blended)))
            kept.sort(key=lambda k: (k[0], k[1].score), reverse=True)  # stable: ties keep order
            reranked = [node for _, node in kept]
            if self.top_n is not None:
                reranked = reranked[: self.top_n]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked


def blend_scores(
    reranker_scores: Sequence[float], retrieval_scores: Sequence[float], retrieval_weight: float
) -> list[float]:
    """``(1 - w) * z(reranker) + w * z(retriever)`` per candidate (z-scores over the list).

    Example::

        blend_scores([2.0, 0.0], [0.0, 1.0], retrieval_weight=0.25)   # [0.5, -0.5]
    """
    if not 0.0 <= retrieval_weight <= 1.0:
        raise ValueError(f"retrieval_weight must be in [0, 1], got {retrieval_weight}")
    if len(reranker_scores) != len(retrieval_scores):
        raise ValueError(
            f"{len(reranker_scores)} reranker scores but {len(retrieval_scores)} retrieval scores"
        )
    rerank_z, _ = normalize_scores(reranker_scores, "zscore")
    retrieval_z, _ = normalize_scores(retrieval_scores, "zscore")
    return [
        (1.0 - retrieval_weight) * r + retrieval_weight * f
        for r, f in zip(rerank_z, retrieval_z, strict=True)
    ]


def _blank_last(scores: list[float], visible: list[bool]) -> list[float]:
    """``scores`` with each node showing no text (empty, whitespace or invisible characters)
    capped at the lowest score of a node with text, so that it ranks after all of them: a
    model may score an empty passage high, and such a node took a ``top_n`` place from a
    real one (a query engine then drops it: one source fewer)."""
    if all(visible) or not any(visible):
        return scores
    floor = min(s for s, shown in zip(scores, visible, strict=True) if shown)
    return [s if shown else min(s, floor) for s, shown in zip(scores, visible, strict=True)]


def _retrieval_scores(nodes: list[NodeWithScore]) -> list[float]:
    missing = [n.node.node_id for n in nodes if n.score is None]
    if missing:
        raise ValueError(
            f"retrieval_weight > 0 blends in the retriever's scores, but {len(missing)} nodes have "
            f"none (e.g. {missing[:3]}); pass scored nodes or set retrieval_weight=0"
        )
    scores = [float(n.score) for n in nodes]
    bad = [n.node.node_id for n, x in zip(nodes, scores, strict=True) if not math.isfinite(x)]
    if bad:
        raise ValueError(
            f"retrieval_weight > 0 blends in the retriever's scores, but {len(bad)} nodes have a "
            f"NaN or infinite score (e.g. {bad[:3]}); fix the retriever or set retrieval_weight=0"
        )
    return scores


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _with_retrieval_score(node: NodeWithScore) -> Any:
    """A copy of the node with the retriever's score in its metadata, hidden from embedding and
    LLM text. The node itself is left alone: it is the index's (or BM25's) object, shared by
    every request that retrieves it, so writing into it gave one request another's score."""
    inner = node.node

    def hidden(keys: list[str]) -> list[str]:
        return [*keys] if RETRIEVAL_SCORE_KEY in keys else [*keys, RETRIEVAL_SCORE_KEY]

    return inner.model_copy(
        update={
            "metadata": {**inner.metadata, RETRIEVAL_SCORE_KEY: node.score},
            "excluded_embed_metadata_keys": hidden(inner.excluded_embed_metadata_keys),
            "excluded_llm_metadata_keys": hidden(inner.excluded_llm_metadata_keys),
        }
    )


def _model_name(model: Any) -> str:
    """A readable name for an in-memory CrossEncoder (its source path or hub id)."""
    inner = getattr(model, "model", None)
    name = getattr(inner, "name_or_path", None) or getattr(
        getattr(inner, "config", None), "_name_or_path", None
    )
    return str(name) if name else type(model).__name__
