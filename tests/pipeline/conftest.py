"""A tiny two-store help centre (Markdown + HTML, metadata, labelled questions) and fast settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.pipeline.config import PipelineConfig

DOCS = {
    "grocery/returns.md": """# Returns

## Non-perishable items
Unopened packaged groceries can be returned within 30 days for a full refund.

## Perishable items
Fresh fruit such as apples must be reported within 48 hours with the receipt.
""",
    "grocery/produce.md": """# Fresh Produce

## Apples
Our apples come from local orchards and are sold loose or in bags of six.

## Oranges
Oranges are in season from December to March.
""",
    "grocery/delivery.html": """<html><body><h1>Delivery</h1>
<h2>Fees</h2><p>Grocery delivery costs 4 dollars, free over 60 dollars.</p>
<h2>Slots</h2><p>Delivery slots run from 8 am to 10 pm every day.</p>
</body></html>""",
    "electronics/returns.md": """# Returns

## Opened items
Opened electronics can be returned within 14 days minus a 15 percent opened-box fee.

## Faulty items
Faulty devices are repaired or replaced under warranty for one year.
""",
    "electronics/apple.html": """<html><body><h1>Apple</h1>
<h2>Returning Apple products</h2><p>Apple iPhones and iPads can be returned within 14 days
if signed out of Find My.</p>
<h2>AppleCare</h2><p>AppleCare extends the warranty to two years.</p>
</body></html>""",
    "electronics/delivery.md": """# Delivery

## Fees
Electronics delivery is free on orders over 50 dollars, otherwise 7 dollars.

## Installation
TV wall mounting can be booked at checkout for 99 dollars.
""",
}

METADATA = {
    "grocery/*": {"store": "grocery"},
    "electronics/*": {"store": "electronics"},
    "grocery/returns.md": {"department": "returns"},
    "electronics/returns.md": {"department": "returns"},
    "electronics/apple.html": {"department": "mobile", "brand": "Apple"},
}

QUESTIONS = [
    (
        "apple return policy?",
        "grocery",
        "grocery/returns.md",
        "Returns > Perishable items",
        "Apples must be reported within 48 hours with the receipt.",
    ),
    (
        "Apple return policy?",
        "electronics",
        "electronics/apple.html",
        "Apple > Returning Apple products",
        "Apple products can be returned within 14 days if signed out of Find My.",
    ),
    (
        "can I return unopened pasta",
        "grocery",
        "grocery/returns.md",
        "Returns > Non-perishable items",
        "Yes, unopened groceries within 30 days.",
    ),
    (
        "return window for opened laptop",
        "electronics",
        "electronics/returns.md",
        "Returns > Opened items",
        "14 days minus a 15 percent opened-box fee.",
    ),
    (
        "my tablet is broken",
        "electronics",
        "electronics/returns.md",
        "Returns > Faulty items",
        "Faulty devices are repaired or replaced under warranty.",
    ),
    (
        "where do your apples come from",
        "grocery",
        "grocery/produce.md",
        "Fresh Produce > Apples",
        "Local orchards.",
    ),
    (
        "when are oranges in season",
        None,
        "grocery/produce.md",
        "Fresh Produce > Oranges",
        "December to March.",
    ),
    (
        "grocery delivery fee",
        "grocery",
        "grocery/delivery.html",
        "Delivery > Fees",
        "4 dollars, free over 60 dollars.",
    ),
    (
        "delivery slot times",
        "grocery",
        "grocery/delivery.html",
        "Delivery > Slots",
        "From 8 am to 10 pm.",
    ),
    (
        "electronics delivery cost",
        "electronics",
        "electronics/delivery.md",
        "Delivery > Fees",
        "Free over 50 dollars, otherwise 7 dollars.",
    ),
    (
        "tv wall mounting price",
        None,
        "electronics/delivery.md",
        "Delivery > Installation",
        "99 dollars.",
    ),
    (
        "how long is AppleCare",
        "electronics",
        "electronics/apple.html",
        "Apple > AppleCare",
        "Two years.",
    ),
    (
        "fresh apples refund",
        "grocery",
        "grocery/returns.md",
        "Returns > Perishable items",
        "Within 48 hours with the receipt.",
    ),
    (
        "iPhone return window",
        "electronics",
        "electronics/apple.html",
        "Apple > Returning Apple products",
        "14 days.",
    ),
    (
        "bag of apples size",
        "grocery",
        "grocery/produce.md",
        "Fresh Produce > Apples",
        "Bags of six.",
    ),
    (
        "opened box fee",
        "electronics",
        "electronics/returns.md",
        "Returns > Opened items",
        "15 percent.",
    ),
    (
        "free grocery delivery threshold",
        "grocery",
        "grocery/delivery.html",
        "Delivery > Fees",
        "Over 60 dollars.",
    ),
    (
        "warranty length on a faulty phone",
        "electronics",
        "electronics/returns.md",
        "Returns > Faulty items",
        "One year.",
    ),
]
UNANSWERABLE = [
    ("do you sell live lobsters", "grocery"),
    ("can I trade in a game console", "electronics"),
    ("what is the parking fee", None),
    ("do you price match online shops", "electronics"),
]


def write_corpus(root: Path) -> dict[str, Path]:
    """Write docs/, metadata.json and queries.jsonl under ``root``; return their paths."""
    docs = root / "docs"
    for rel, text in DOCS.items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "metadata.json").write_text(json.dumps(METADATA), encoding="utf-8")
    lines = []
    for i, (question, store, doc, section, answer) in enumerate(QUESTIONS):
        lines.append(
            {
                "id": f"q{i:02d}",
                "question": question,
                "store": store,
                "gold": [{"doc_id": doc, "section": section}],
                "answer": answer,
                "answerable": True,
            }
        )
    for i, (question, store) in enumerate(UNANSWERABLE):
        lines.append(
            {
                "id": f"u{i}",
                "question": question,
                "store": store,
                "gold": [],
                "answerable": False,
                "answer": None,
            }
        )
    queries = root / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return {"docs": docs, "metadata": root / "metadata.json", "queries": queries}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def fast_config(encoder: str, decoder: str, **overrides) -> PipelineConfig:
    """A few optimizer steps per part on tiny models; every part forced to promote unless
    ``force_promotion`` is overridden, so the bundle holds every tuned part."""
    steps = {"max_steps": 1, "save_steps": 1, "logging_steps": 1}
    settings = {
        "encoder_model": encoder,
        "decoder_model": decoder,
        "encoder_budget": TrainingBudget(max_pairs_per_query=2),
        "reranker_budget": TrainingBudget(max_pairs_per_query=2),
        "decoder_budget": TrainingBudget(max_pairs=4),
        "encoder_args": dict(steps, per_device_train_batch_size=4),
        "reranker_args": dict(steps, per_device_train_batch_size=4),
        "decoder_args": dict(steps, per_device_train_batch_size=2, gradient_accumulation_steps=1),
        "force_promotion": ("encoder", "reranker", "decoder"),
        "test_fraction": 0.25,
        "dev_fraction": 0.3,
        "rerank_candidates": 6,
        "max_sources": 2,
        "max_source_chars": 200,
        "max_new_tokens": 6,
        "max_test_questions": 4,
        "max_dev_questions": 6,
        "show_progress": False,
    }
    settings.update(overrides)
    return PipelineConfig(**settings)


@pytest.fixture
def make_config(tiny_encoder_path, tiny_causal_lm_path):
    def make(**overrides) -> PipelineConfig:
        return fast_config(tiny_encoder_path, tiny_causal_lm_path, **overrides)

    return make


def write_minimal_version(folder: Path, version: str, notes: str | None = None) -> None:
    """Write a hand-made bundle version into ``folder``: a manifest and one listed file
    (``notes.txt``, ``version`` unless ``notes`` is given), no models."""
    from llama_index_ragtune._atomic import sha256_file

    notes_file = folder / "notes.txt"
    notes_file.write_text(version if notes is None else notes, encoding="utf-8")
    manifest = {
        "format": "ragtune-bundle",
        "format_version": 1,
        "version": version,
        "models": {
            "encoder": {"path": None, "reference": None},
            "decoder": {"path": None, "reference": None},
            "reranker": None,
        },
        "retrieval": {"similarity_top_k": 5, "rerank_candidates": None},
        "generation": {"max_new_tokens": 32},
        "files": {
            "notes.txt": {"sha256": sha256_file(notes_file), "size": notes_file.stat().st_size}
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def fake_bundles(tmp_path: Path, count: int = 2) -> Path:
    """A ``bundles/`` folder of ``count`` hand-made versions (``write_minimal_version``),
    the last one current."""
    from llama_index_ragtune._atomic import atomic_dir
    from llama_index_ragtune.pipeline import set_current_version

    root = tmp_path / "out" / "bundles"
    root.mkdir(parents=True)
    for n in range(1, count + 1):
        with atomic_dir(root / f"v{n}") as tmp:
            write_minimal_version(tmp, f"v{n}")
    set_current_version(root, f"v{count}")
    return root


def run_tiny_pipeline(out: Path, corpus: dict[str, Path], config: PipelineConfig) -> dict:
    """A full pipeline run on ``corpus`` into ``out``: out, result, the lines it printed and
    the pipeline."""
    from llama_index_ragtune.pipeline import TuningPipeline

    lines: list[str] = []
    pipeline = TuningPipeline(
        corpus["docs"], out, queries=corpus["queries"], config=config, echo=lines.append
    )
    result = pipeline.run()
    return {"out": out, "result": result, "lines": lines, "pipeline": pipeline}


@pytest.fixture(scope="session")
def tuned_run(tmp_path_factory, tiny_corpus, tiny_encoder_path, tiny_causal_lm_path):
    """One full pipeline run on the tiny corpus with tiny models (every part tuned and promoted)."""
    config = fast_config(tiny_encoder_path, tiny_causal_lm_path)
    return run_tiny_pipeline(tmp_path_factory.mktemp("run"), tiny_corpus, config)


def tune_help_centre(
    root: Path,
    docs: dict[str, str],
    questions: list[tuple[str, str, str]],
    encoder: str,
    decoder: str,
    **overrides,
) -> tuple[object, object, Path]:
    """``(result, bundle, out)``: ``docs`` (relative path -> Markdown) under ``root`` with
    a store per top folder and ``questions`` (question, gold document, gold section; the
    1st and 5th for test) tuned without the decoder, served with ``MockLLM``."""
    from llama_index.core.llms import MockLLM

    from llama_index_ragtune.pipeline import TuningPipeline, load_bundle

    folder = root / "docs"
    for rel, text in docs.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    stores = sorted({rel.split("/")[0] for rel in docs})
    metadata = root / "metadata.json"
    metadata.write_text(json.dumps({f"{s}/*": {"store": s} for s in stores}))
    lines = [
        {
            "id": f"q{i}",
            "question": question,
            "gold": [{"doc_id": doc, "section": section}],
            "answer": question,
            "answerable": True,
            "split": "test" if i in (0, 4) else "train",
        }
        for i, (question, doc, section) in enumerate(questions)
    ]
    queries = root / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), "utf-8")
    pipeline = TuningPipeline(
        folder,
        root / "out",
        queries=queries,
        metadata=metadata,
        config=fast_config(encoder, decoder, **overrides),
        skip=("decoder", "evaluate", "report"),
        echo=lambda line: None,
    )
    result = pipeline.run()
    return result, load_bundle(root / "out", llm=MockLLM()), root / "out"
