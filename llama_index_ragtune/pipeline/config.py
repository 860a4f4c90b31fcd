"""What a tuning run does and how much it may spend: ``PipelineConfig`` and the step names.

The pipeline runs these steps in order (:data:`STEPS`); each writes its output
into the work folder and is recorded in the state file, so a rerun with
``resume=True`` skips the finished ones:

``parse``
    documents -> nodes (structure-aware parsers, stable node ids ``<doc id>#<n>``)
``index``
    the untuned hybrid retriever (FAISS + BM25, library fusion defaults): the baseline
``data``
    labelled / feedback / synthetic queries, split by query into train and test,
    training pairs with hard negatives (BM25, the starting encoder, curated confusers)
``encoder``
    fine-tune the bi-encoder; promoted only when it beats the starting one on validation
``fusion``
    choose the fusion mode and weights on the training queries; rebuild the index
``reranker``
    fine-tune the cross-encoder; left out unless it beats the first stage on validation
``decoder``
    grounded SFT (+ DPO with ``dpo=True``) of the LLM; promoted on validation loss
``evaluate``
    held-out test queries: retrieval before/after, generation base vs tuned decoder
``bundle``
    the versioned bundle (plus the HTML/Markdown report unless ``report`` is skipped)

Steps in :data:`SKIPPABLE` may be skipped (``skip=("reranker",)``, CLI ``--skip``);
a skipped tuning step keeps the part it would have replaced.

Example::

    from llama_index_ragtune.pipeline import PipelineConfig

    config = PipelineConfig.from_time_budget(30)        # 30 minutes of training in all
    config.encoder_budget.minutes, config.decoder_budget.minutes   # (9.0, 12.0)
    demo = PipelineConfig.demo()                         # what `ragtune demo` runs
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from llama_index_ragtune.evaluation.refusal_calibration import (
    check_max_over_refusal,
    check_over_refusal_confidence,
)
from llama_index_ragtune.finetuning.budget import MAX_MINUTES, TrainingBudget
from llama_index_ragtune.finetuning.training_args_check import check_training_args
from llama_index_ragtune.retrievers.bm25_index import (
    ANALYZERS,
    LANGUAGE_STOPWORDS,
    BM25Text,
    check_bm25_language,
)

STEPS = (
    "parse",
    "index",
    "data",
    "encoder",
    "fusion",
    "reranker",
    "decoder",
    "evaluate",
    "bundle",
)
SKIPPABLE = ("encoder", "fusion", "reranker", "decoder", "evaluate", "report")
"""Steps a run may leave out (``report``: the bundle gets no HTML/Markdown report)."""
TUNED_PARTS = ("encoder", "reranker", "decoder")
SETTING_STEPS = {
    "encoder_model": "parse",  # also the parsers' tokenizer
    "bm25_analyzer": "index",
    "bm25_language": "index",
    "bm25_stopwords": "index",
    "similarity_top_k": "index",
    "test_fraction": "data",
    "dev_fraction": "data",
    "seed": "data",
    "negatives_per_source": "data",
    "curated_keys": "data",
    "synthetic_questions_per_node": "data",
    "max_synthetic_nodes": "data",
    "encoder_budget": "encoder",
    "encoder_args": "encoder",
    "eval_points": "encoder",
    "max_val_queries": "encoder",
    "promotion_margin": "encoder",
    "force_promotion": "encoder",
    "reranker_model": "reranker",
    "reranker_budget": "reranker",
    "reranker_args": "reranker",
    "rerank_candidates": "reranker",
    "decoder_model": "decoder",
    "decoder_budget": "decoder",
    "decoder_args": "decoder",
    "dpo": "decoder",
    "p_no_gold": "decoder",
    "max_sources": "decoder",
    "max_source_chars": "decoder",
    "max_new_tokens": "decoder",
    "max_test_questions": "evaluate",
    "max_dev_questions": "evaluate",
    "max_over_refusal": "evaluate",
    "over_refusal_confidence": "evaluate",
    "refusal_cv_repeats": "evaluate",
    "group_key": "evaluate",
}
"""The first step whose result each setting shapes: a resumed run whose settings changed
redoes that step and every later one (:func:`first_changed_step`)."""
RUN_CONTROL_SETTINGS = ("time_limit_minutes", "device", "show_progress")
"""Settings that shape no step's result: a resumed run may change them and keep every step."""
MAX_EVAL_POINTS = 10_000
"""Most validation passes ``eval_points`` may ask for during one part's training."""
MAX_TOP_K = 10_000
"""Largest ``similarity_top_k`` / ``rerank_candidates``: nodes retrieved per query."""
MAX_COUNT = 2**31 - 1
"""Largest cap on a count (questions, nodes, characters): a C ``int``, more than any corpus."""
INTEGER_LIMITS: dict[str, tuple[int, str]] = {
    "similarity_top_k": (MAX_TOP_K, "nodes retrieved per query; FAISS and the score arrays "
                         "allocate one slot per node asked for"),
    "rerank_candidates": (MAX_TOP_K, "nodes the reranker scores per query"),
    "max_sources": (MAX_TOP_K, "sources in one prompt, at most the retrieved nodes"),
    "negatives_per_source": (1_000, "hard negatives mined per training pair"),
    "synthetic_questions_per_node": (1_000, "questions generated per node"),
    "refusal_cv_repeats": (1_000, "cross-validation repeats; each refits the refusal policy"),
    "max_new_tokens": (1_048_576, "tokens generated per answer; more than any model's context"),
    "max_val_queries": (MAX_COUNT, "a cap on validation queries"),
    "max_test_questions": (MAX_COUNT, "a cap on test questions"),
    "max_dev_questions": (MAX_COUNT, "a cap on dev questions"),
    "max_synthetic_nodes": (MAX_COUNT, "a cap on nodes given synthetic questions"),
    "max_source_chars": (MAX_COUNT, "a cap on characters per source"),
}  # fmt: skip
"""Upper bounds of whole-number settings, with what each counts (named in the error)."""
BUDGET_SHARES = {"encoder": 0.3, "reranker": 0.3, "decoder": 0.4}
"""How ``from_time_budget`` splits a total number of training minutes between the parts."""
_FINGERPRINT_DEFAULTS_LEFT_OUT = {
    "bm25_analyzer": "plain",
    "bm25_language": "english",
    "bm25_stopwords": LANGUAGE_STOPWORDS,
}
"""Settings added after runs were recorded, with the default those runs used."""
_RECORDED_ONLY_WHEN_SET = {
    "bm25_language": "english",
    "bm25_stopwords": LANGUAGE_STOPWORDS,
    "over_refusal_confidence": None,
}
# what the engines' arguments hold where an ``*_args`` override gives nothing (to check the
# values the user did give with :func:`check_training_args`)
_PLAIN_ARGS = {"learning_rate": 2e-5, "num_train_epochs": 1, "max_steps": -1}
"""Settings ``to_dict`` leaves out while they have their default (readers take the default),
so the settings recorded for a run that does not use them read as before."""


def check_minutes(minutes: Any, what: str) -> None:
    """``ValueError`` naming ``what`` unless ``minutes`` is a number in (0, MAX_MINUTES].

    Example::

        check_minutes(1e308, "--time-budget")   # ValueError: ... at most 1000000 ...
    """
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, (int, float))
        or not (math.isfinite(minutes) and 0 < minutes <= MAX_MINUTES)
    ):
        raise ValueError(
            f"{what} must be a number of minutes > 0 and at most {MAX_MINUTES} (about 694 "
            f"days), got {minutes!r}"
        )


def first_changed_step(before: dict[str, Any], now: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The earliest step whose result a change from settings ``before`` to ``now`` (both
    ``PipelineConfig.to_dict()`` as JSON reads them back) makes stale, and the settings
    that changed; ``(None, [])`` when only run control changed (time limit, device, ...).
    A setting this version does not know is read as shaping every step.

    Example::

        first_changed_step({"seed": 0, "show_progress": True}, {"seed": 1, "show_progress": False})
        # ('data', ['seed'])
    """
    # a setting recorded only when set reads as its default where absent: a run resumed
    # with bm25_language=None (or bm25_stopwords=None) after the default changed it
    before = {**_RECORDED_ONLY_WHEN_SET, **before}
    now = {**_RECORDED_ONLY_WHEN_SET, **now}
    changed = sorted(
        name
        for name in {*before, *now}
        if name not in RUN_CONTROL_SETTINGS and before.get(name) != now.get(name)
    )
    if not changed:
        return None, []
    return min((SETTING_STEPS.get(n, STEPS[0]) for n in changed), key=STEPS.index), changed


def check_skip(skip: Any) -> tuple[str, ...]:
    """``skip`` as a tuple of step names (a comma-separated string works); ``ValueError`` names
    an unknown or required step.

    Example::

        check_skip("reranker,decoder")      # ('reranker', 'decoder')
    """
    if skip is None:
        return ()
    if isinstance(skip, str):
        skip = skip.split(",")
    elif isinstance(skip, (bytes, bytearray, Mapping)) or not isinstance(skip, Iterable):
        raise TypeError(
            f"skip must be step names (a list, or one string 'reranker,decoder'), got "
            f"{type(skip).__name__} {skip!r}"
        )
    else:
        skip = list(skip)
    wrong = [s for s in skip if not isinstance(s, str)]
    if wrong:  # None, a number: not left out silently
        raise TypeError(f"skip must hold step names (strings), got {wrong!r}")
    # the names are lower-case ASCII: "Decoder " is the decoder
    names = [n.strip().lower() for n in skip]
    names = [n for n in names if n]
    required = [n for n in names if n in STEPS and n not in SKIPPABLE]
    if required:
        raise ValueError(
            f"step(s) {required} cannot be skipped: every later step needs their output "
            f"(skippable: {', '.join(SKIPPABLE)}); to reuse a finished run's output, resume it"
        )
    unknown = [n for n in names if n not in SKIPPABLE]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown} to skip; choose from {', '.join(SKIPPABLE)}")
    return tuple(dict.fromkeys(names))


@dataclass
class PipelineConfig:
    """Models, budgets and evaluation settings of one tuning run.

    Models (``None``: the bundled defaults, all-MiniLM-L6-v2 and SmolLM2-135M-Instruct):
        encoder_model: starting bi-encoder (folder or hub id); also the parsers'
            tokenizer, so node caps match what the encoder reads.
        reranker_model: starting cross-encoder (``None``: a new head on the encoder).
        decoder_model: starting causal LM (chat template needed).

    Budgets (``TrainingBudget``: pairs per query, total pairs, minutes; engines plan
    their steps from the minutes):
        encoder_budget, reranker_budget, decoder_budget: one per tuned part
            (``max_pairs`` of the decoder caps its SFT examples).
        encoder_args, reranker_args, decoder_args: overrides of each engine's
            upstream config (``Engine.default_args(output_dir, **overrides)``),
            e.g. ``{"num_train_epochs": 3}``.
        dpo: add a DPO stage after the decoder's SFT (rule-made preference pairs).
        eval_points: validation passes during encoder / reranker training that pick the
            best checkpoint (0: keep the last one; each pass costs a validation run).
        max_val_queries: most validation questions each engine carves off the training
            ones (the decoder uses at most 50).
        promotion_margin: the engines' margin (``None``: each engine's default).
        force_promotion: parts promoted whatever validation says (for tests and
            experiments; the decision records it as forced).

    Data:
        test_fraction: share of labelled queries held out for the test split when the
            queries carry no split (by question text, seeded).
        dev_fraction: share of training questions kept out of every part's training
            (encoder, reranker and decoder), on which the refusal policy is chosen.
        negatives_per_source: hard negatives per query from each of BM25, the starting
            encoder and the curated confusers.
        curated_keys: metadata keys whose *other* values hold confusers (e.g. the same
            section title or query term in another ``store``, then another ``department``).
        p_no_gold: share of answerable training contexts whose gold sources are removed
            (target: the refusal), so the decoder learns when to refuse.
        synthetic_questions_per_node / max_synthetic_nodes: synthetic queries when
            none are given.
        bm25_analyzer: how every BM25 of the run reads text: the hybrid index (and so the
            bundle, whose BM25 folder records it) and the hard-negative miner.
            ``"plain"`` (default): lower-case and split, for English. ``"unicode"``: for
            documents in Chinese, Japanese, Thai or Korean (character bigrams, so part of
            a sentence finds it), with accents or full-width text, or with product codes
            (``SKU-48213`` found by ``SKU48213``); see
            :class:`~llama_index_ragtune.retrievers.BM25Tokenizer`.
        bm25_language: the stemmer of every BM25 of the run (same places as
            ``bm25_analyzer``): the language of your documents, e.g. ``"german"`` for a
            German help centre, so ``Rückgaben`` finds ``Rückgabe``; the stopwords follow it
            (German ones for German, none for a language without a list). ``"english"``
            (default); ``None``: no stemming and no stopwords. One of
            :func:`~llama_index_ragtune.retrievers.bm25_index.stemmer_languages`.
        bm25_stopwords: the words every BM25 of the run drops (same places as
            ``bm25_analyzer``; the bundle's BM25 folder records them, so the served
            retriever drops them too): ``"language"`` (default: ``bm25_language``'s list),
            ``None`` (none), a bm25s list code (``"en"``, ``"de"``, ``"fr"``, ...) or your
            words, as a list (``["sku", "pcs"]``) or comma-separated (``"sku,pcs"``),
            stored lower-cased as a list. The values of ``--bm25-stopwords``
            (:func:`~llama_index_ragtune.retrievers.bm25_index.bm25_stopwords_value`).

    Answering and evaluation:
        similarity_top_k: retrieved nodes (and the cut-off of the retrieval metrics).
        rerank_candidates: first-stage candidates the reranker re-scores.
        max_sources / max_source_chars: sources shown to the LLM and their length cut
            (the same at training and at answer time).
        max_new_tokens: longest generated answer.
        max_test_questions / max_dev_questions: generation questions evaluated /
            used to choose the refusal threshold (``None``: all).
        max_over_refusal: most share of answerable dev questions a refusal policy may
            refuse, e.g. 0.1 when you would rather answer than turn a customer away
            (default ``None``: the threshold with the best balanced accuracy).
        over_refusal_confidence: with ``max_over_refusal``, the probability that the cap
            holds on new questions, not only on the dev questions it is fitted on (e.g.
            0.95; default ``None``: on the dev questions, where a share fitted on a few
            dozen questions is exceeded on the next ones about a third of the time).
        refusal_cv_repeats: differently seeded fold splits the refusal policy's
            cross-validation is averaged over (one split of a few dozen dev questions
            is a coin toss; see ``llms.refusal_selection``).
        group_key: metadata key for the right-store citation rate (``None``: off).
        time_limit_minutes: wall-clock minutes the whole run may take (``None``: no
            limit). The decoder then trains only for what is left once its evaluation is
            reserved: the starting decoder is evaluated before the decoder trains, and
            the tuned one is given as long again (a slower machine trains less, the run
            still ends in time; with too little left the starting decoder is kept). The
            encoder and reranker keep their budgets' minutes.
        seed, device, show_progress.

    Example::

        config = PipelineConfig(decoder_budget=TrainingBudget(max_pairs=200, minutes=5),
                                dpo=True, max_test_questions=100)
    """

    encoder_model: str | None = None
    reranker_model: str | None = None
    decoder_model: str | None = None
    encoder_budget: TrainingBudget | None = field(
        default_factory=lambda: TrainingBudget(max_pairs_per_query=8, minutes=10.0)
    )
    reranker_budget: TrainingBudget | None = field(
        default_factory=lambda: TrainingBudget(max_pairs_per_query=4, minutes=10.0)
    )
    decoder_budget: TrainingBudget | None = field(
        default_factory=lambda: TrainingBudget(max_pairs=400, minutes=15.0)
    )
    encoder_args: dict[str, Any] = field(default_factory=dict)
    reranker_args: dict[str, Any] = field(default_factory=dict)
    decoder_args: dict[str, Any] = field(default_factory=dict)
    dpo: bool = False
    eval_points: int = 2
    max_val_queries: int = 200
    promotion_margin: float | None = None
    force_promotion: tuple[str, ...] = ()
    test_fraction: float = 0.2
    dev_fraction: float = 0.2
    negatives_per_source: int = 2
    curated_keys: tuple[str, ...] = ("store", "department")
    p_no_gold: float = 0.2
    synthetic_questions_per_node: int = 2
    max_synthetic_nodes: int | None = None
    bm25_analyzer: str = "plain"
    bm25_language: str | None = "english"
    bm25_stopwords: str | list[str] | None = LANGUAGE_STOPWORDS
    similarity_top_k: int = 10
    rerank_candidates: int = 30
    max_sources: int = 3
    max_source_chars: int | None = 800
    max_new_tokens: int = 96
    max_test_questions: int | None = None
    max_dev_questions: int | None = 80
    max_over_refusal: float | None = None
    over_refusal_confidence: float | None = None
    refusal_cv_repeats: int = 10
    group_key: str | None = "store"
    time_limit_minutes: float | None = None
    seed: int = 0
    device: str | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        self._plain_numbers()
        for name in ("encoder_budget", "reranker_budget", "decoder_budget"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, TrainingBudget):
                raise TypeError(
                    f"PipelineConfig.{name} must be a TrainingBudget or None, got "
                    f"{type(value).__name__}"
                )
        self._check_types()
        for name in ("test_fraction", "dev_fraction", "p_no_gold"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"PipelineConfig.{name} must be in [0, 1), got {value}")
        for name in (
            "negatives_per_source",
            "synthetic_questions_per_node",
            "similarity_top_k",
            "rerank_candidates",
            "max_val_queries",
            "max_sources",
            "max_new_tokens",
            "refusal_cv_repeats",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"PipelineConfig.{name} must be a whole number >= 1, got {value!r}"
                )
        for name in (
            "max_test_questions",
            "max_dev_questions",
            "max_synthetic_nodes",
            "max_source_chars",
        ):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"PipelineConfig.{name} must be None or a whole number >= 1, got {value!r}"
                )
        self._check_upper_bounds()
        check_max_over_refusal(self.max_over_refusal, "PipelineConfig")
        check_over_refusal_confidence(self.over_refusal_confidence, "PipelineConfig")
        if self.bm25_analyzer not in ANALYZERS:
            raise ValueError(
                f"PipelineConfig.bm25_analyzer must be one of {', '.join(ANALYZERS)}, got "
                f"{self.bm25_analyzer!r} ('unicode' for Chinese/Japanese/Thai/Korean text, "
                "accents or product codes; 'plain' for English)"
            )
        check_bm25_language(self.bm25_language, "PipelineConfig.bm25_language")
        self._check_stopwords()
        if self.time_limit_minutes is not None:
            check_minutes(self.time_limit_minutes, "PipelineConfig.time_limit_minutes")
        for part in TUNED_PARTS:
            budget = getattr(self, f"{part}_budget")
            if budget is not None and budget.minutes is not None:
                check_minutes(budget.minutes, f"PipelineConfig.{part}_budget.minutes")
        if (
            isinstance(self.eval_points, bool)
            or not isinstance(self.eval_points, int)
            or self.eval_points < 0
        ):
            raise ValueError(
                f"PipelineConfig.eval_points must be a whole number >= 0, got {self.eval_points!r}"
            )
        for name in ("force_promotion", "curated_keys"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise TypeError(
                    f"PipelineConfig.{name} must be a list of names, got {value!r} (write "
                    f"[{value!r}] for one)"
                )
            value = tuple(value)
            if not all(isinstance(v, str) for v in value):
                raise TypeError(f"PipelineConfig.{name} must hold strings, got {list(value)!r}")
            setattr(self, name, value)
        unknown = [p for p in self.force_promotion if p not in TUNED_PARTS]
        if unknown:
            raise ValueError(f"force_promotion names unknown parts {unknown}; use {TUNED_PARTS}")

    def _check_upper_bounds(self) -> None:
        """``ValueError`` naming the field for a whole-number setting past what a run can
        use (``similarity_top_k=10**30`` was accepted, then broke FAISS, whose ``k`` is a C
        int, or allocated arrays of that size; ``refusal_cv_repeats=10**12`` asked for 10**12 refits)."""
        if isinstance(self.eval_points, int) and self.eval_points > MAX_EVAL_POINTS:
            raise ValueError(
                f"PipelineConfig.eval_points must be at most {MAX_EVAL_POINTS:,} (each is a "
                f"validation run during training), got {self.eval_points!r}"
            )
        for name, (top, why) in INTEGER_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, int) and value > top:
                raise ValueError(
                    f"PipelineConfig.{name} must be at most {top:,} ({why}), got {value!r}"
                )

    def _plain_numbers(self) -> None:
        """NumPy (or other ``numbers``) integers and reals as Python ``int`` / ``float``: a
        seed or count from ``np.arange`` or a sweep is a setting like any other."""
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, (bool, int, float)) or not isinstance(value, numbers.Real):
                continue
            if isinstance(value, numbers.Integral):
                object.__setattr__(self, name, int(value))
            else:
                object.__setattr__(self, name, float(value))

    def _check_types(self) -> None:
        """``TypeError`` naming the field for a setting of the wrong type (a string for a
        number, ``"no"`` for a flag, ...), instead of a failure (or a surprise) mid-run."""
        expected: dict[str, tuple[tuple[type, ...], str]] = {
            "test_fraction": ((int, float), "a number"),
            "dev_fraction": ((int, float), "a number"),
            "p_no_gold": ((int, float), "a number"),
            "promotion_margin": ((int, float, type(None)), "a number or None"),
            "seed": ((int,), "a whole number"),
            "dpo": ((bool,), "True or False"),
            "show_progress": ((bool,), "True or False"),
            "encoder_args": ((dict,), "a dict of settings"),
            "reranker_args": ((dict,), "a dict of settings"),
            "decoder_args": ((dict,), "a dict of settings"),
            "encoder_model": ((str, os.PathLike, type(None)), "a folder or hub id, or None"),
            "reranker_model": ((str, os.PathLike, type(None)), "a folder or hub id, or None"),
            "decoder_model": ((str, os.PathLike, type(None)), "a folder or hub id, or None"),
            "group_key": ((str, type(None)), "a metadata key or None"),
            "bm25_analyzer": ((str,), f"the name of a BM25 analyzer ({', '.join(ANALYZERS)})"),
            "bm25_language": ((str, type(None)), "a stemmer language name or None"),
            "bm25_stopwords": (
                (str, list, tuple, type(None)),
                f"{LANGUAGE_STOPWORDS!r}, None, a stopword list code or a list of words",
            ),
            "time_limit_minutes": ((int, float, type(None)), "a number of minutes or None"),
            "device": ((str, type(None)), "a torch device name ('cpu', 'cuda:0') or None"),
        }
        for name, (types, what) in expected.items():
            value = getattr(self, name)
            wrong_bool = isinstance(value, bool) and bool not in types
            if wrong_bool or not isinstance(value, types):
                raise TypeError(
                    f"PipelineConfig.{name} must be {what}, got {type(value).__name__} {value!r}"
                )
        for name in ("test_fraction", "dev_fraction", "p_no_gold", "promotion_margin"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"PipelineConfig.{name} must be a finite number, got {value!r}")
        for name in ("encoder_args", "reranker_args", "decoder_args"):
            keys = [k for k in getattr(self, name) if not isinstance(k, str)]
            if keys:
                raise TypeError(f"PipelineConfig.{name} keys must be setting names, got {keys!r}")
            # a NaN epoch count or a learning rate of 0 fails here, not after the data step
            given = SimpleNamespace(**{**_PLAIN_ARGS, **getattr(self, name)})
            check_training_args("PipelineConfig", given, label=name)

    def _check_stopwords(self) -> None:
        """``bm25_stopwords`` as :func:`~llama_index_ragtune.retrievers.bm25_index.bm25_stopwords_value`
        reads it (``"the,A"`` and ``("the", "a")`` as ``["the", "a"]``), else a ``ValueError``
        naming the setting."""
        from llama_index_ragtune.retrievers.bm25_index import bm25_stopwords_value

        try:
            value = bm25_stopwords_value(self.bm25_stopwords)
        except ValueError as exc:
            raise ValueError(f"PipelineConfig.bm25_stopwords: {exc}") from None
        object.__setattr__(self, "bm25_stopwords", value)

    # ------------------------------------------------------------------ presets

    @classmethod
    def from_time_budget(cls, minutes: float, **overrides: Any) -> PipelineConfig:
        """A config whose three parts share ``minutes`` of training (:data:`BUDGET_SHARES`).

        Example::

            PipelineConfig.from_time_budget(10).reranker_budget.minutes      # 3.0
        """
        config = cls(**overrides)
        return config.with_time_budget(minutes)

    def with_time_budget(self, minutes: float) -> PipelineConfig:
        """A copy whose parts share ``minutes`` of training; pair caps are kept."""
        check_minutes(minutes, "the time budget")
        budgets = {}
        for part, share in BUDGET_SHARES.items():
            old = getattr(self, f"{part}_budget") or TrainingBudget()
            budgets[f"{part}_budget"] = replace(old, minutes=round(minutes * share, 2))
        return replace(self, **budgets)

    @classmethod
    def demo(cls, **overrides: Any) -> PipelineConfig:
        """The settings of ``ragtune demo``: the run ends within 9.25 minutes on any machine.

        About 0.75 minute of encoder training (batch 16, no mid-training validation)
        and up to 2 epochs or 6 minutes of decoder SFT (up to 192 examples, learning rate
        5e-4: the rate at which the bundled 135M decoder learned to cite in the generation
        benchmark; no warm-up, as in every time-limited run: see
        ``steps.TIME_LIMITED_DECODER_ARGS``), its steps planned to fit what the 9.25-minute
        time limit leaves once the decoder's evaluation is reserved (an epoch is 41 steps
        of 4; a 2-core machine that fitted one epoch left 1 min 45 s of the limit unused,
        and that decoder answered 15 of the 69 answerable test questions with a bare "Yes."
        or "No."; planned to the limit, 60 steps, none); validation on 16
        held-out training questions per part; 24 generation test questions per decoder
        and every dev question (up to 80) for the refusal policy, which may refuse at most
        10 % of the answerable ones, a cap that holds on new questions with 95 % confidence
        (a help centre answers what it can: uncapped, a policy scoring 0.7 balanced accuracy
        on the 45 dev questions refused 7 of 18 answerable test questions; capped on the dev
        questions alone, 4 of 18); answers of at most 40 tokens
        over 3 sources of 600 characters. The demo command leaves the fusion and the
        reranker out unless asked (see ``commands.demo``).
        """
        settings: dict[str, Any] = {
            "encoder_budget": TrainingBudget(max_pairs_per_query=4, minutes=0.75),
            "reranker_budget": TrainingBudget(max_pairs_per_query=2, minutes=1.5),
            "decoder_budget": TrainingBudget(max_pairs=192, minutes=6.0),
            "encoder_args": {"num_train_epochs": 2, "per_device_train_batch_size": 16},
            "reranker_args": {},
            "decoder_args": {"learning_rate": 5e-4, "num_train_epochs": 2},
            "eval_points": 0,
            "max_val_queries": 16,
            "rerank_candidates": 20,
            "max_source_chars": 600,
            "max_new_tokens": 40,
            "max_test_questions": 24,
            "max_over_refusal": 0.1,
            "over_refusal_confidence": 0.95,
            "time_limit_minutes": 9.25,
        }
        settings.update(overrides)
        return cls(**settings)

    # ------------------------------------------------------------------ helpers

    def budget(self, part: str) -> TrainingBudget | None:
        """The ``TrainingBudget`` of ``part`` (``"encoder"``, ``"reranker"``, ``"decoder"``)."""
        if part not in TUNED_PARTS:
            raise ValueError(f"unknown part {part!r}; use one of {TUNED_PARTS}")
        return getattr(self, f"{part}_budget")

    def bm25_text(self) -> BM25Text:
        """How every BM25 the run builds reads text (analyzer, language, its stopwords).

        Example::

            PipelineConfig(bm25_language="german").bm25_text().tokenizer_kwargs()["stopwords"]  # 'de'
        """
        return BM25Text(self.bm25_analyzer, self.bm25_language, self.bm25_stopwords)

    def bm25_kwargs(self) -> dict[str, Any]:
        """The BM25 settings of every BM25 the run builds (``HybridRetriever``'s ``bm25_kwargs``).

        Example::

            PipelineConfig(bm25_analyzer="unicode").bm25_kwargs()   # {'analyzer': 'unicode'}
            PipelineConfig(bm25_language="german").bm25_kwargs()
            # {'analyzer': 'plain', 'language': 'german'}: German stopwords follow
            PipelineConfig(bm25_stopwords=["SKU"]).bm25_kwargs()
            # {'analyzer': 'plain', 'stopwords': ['sku']}
        """
        return self.bm25_text().retriever_kwargs()

    def bm25_options(self) -> dict[str, Any]:
        """The ``bm25_analyzer`` / ``bm25_language`` (and ``bm25_stopwords`` when not the
        language's list) arguments of the engines, the miner and the evaluator, so each
        tuning step measures with the served BM25.

        Example::

            PipelineConfig(bm25_language="french").bm25_options()
            # {'bm25_analyzer': 'plain', 'bm25_language': 'french'}
            PipelineConfig(bm25_stopwords=None).bm25_options()["bm25_stopwords"]   # None
        """
        from llama_index_ragtune.finetuning.hybrid_eval import bm25_settings

        return bm25_settings(self.bm25_text())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready settings (budgets as dicts; ``bm25_language`` only when not English,
        ``bm25_stopwords`` only when not the language's list)."""
        data = asdict(self)
        for part in TUNED_PARTS:
            budget = getattr(self, f"{part}_budget")
            data[f"{part}_budget"] = None if budget is None else budget.to_dict()
        data["force_promotion"] = list(self.force_promotion)
        data["curated_keys"] = list(self.curated_keys)
        for name, default in _RECORDED_ONLY_WHEN_SET.items():
            if data[name] == default:
                del data[name]
        return data

    def fingerprint(self) -> str:
        """A short hash of the settings (recorded in the state file and the manifest).

        A setting added later is left out while it has its default, so a run started
        before it existed resumes under the same fingerprint.
        """
        data = self.to_dict()
        for name, default in _FINGERPRINT_DEFAULTS_LEFT_OUT.items():
            if data.get(name) == default:
                del data[name]
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
