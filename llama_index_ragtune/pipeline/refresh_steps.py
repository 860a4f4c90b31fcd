"""A refresh's steps: running one, the feedback data step, the champion's kept parts, the
check that the champion is still served before a new version replaces it.

Used by :func:`~llama_index_ragtune.pipeline.refresh.refresh_bundle`; private to the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.refresh_data import RefreshError


def _run_step(
    ctx: Any, name: str, function: Callable[[Any], dict[str, Any]], say: Callable[[str], None]
) -> dict[str, Any]:
    say(f"[refresh] {name} ...")
    start = time.perf_counter()
    outputs = function(ctx)
    seconds = time.perf_counter() - start
    ctx.state.record(name, seconds=round(seconds, 2), **outputs)
    decision = outputs.get("decision")
    say(
        f"[refresh] {name}: done in {seconds:.1f} s"
        + (f": {decision['reason']}" if decision else "")
    )
    return outputs


def _data_step(
    store: Any,
    manifest: dict[str, Any],
    keys: Sequence[str],
    eval_fraction: float,
    include_earlier: bool,
    say: Callable[[str], None],
) -> Callable[[Any], dict[str, Any]]:
    def data(ctx: Any) -> dict[str, Any]:
        from llama_index_ragtune.pipeline.queries import carve_dev, save_queries
        from llama_index_ragtune.pipeline.refresh_data import (
            earlier_queries,
            feedback_split,
            merge_queries,
        )
        from llama_index_ragtune.pipeline.steps import write_training_pairs
        from llama_index_ragtune.pipeline.training_data import describe_dataset

        config = ctx.config
        with store.snapshot() as view:  # the questions and the count of one moment
            feedback = feedback_split(view, ctx.nodes, keys, eval_fraction, config.seed, say)
            records = len(view)
        earlier = earlier_queries(manifest, ctx.nodes, say) if include_earlier else []
        queries = merge_queries(feedback, earlier, say)
        train = [q for q in queries if q.split == "train"]
        _, dev = carve_dev(train, config.dev_fraction, config.seed)
        save_queries(queries, ctx.path("data", "queries.json"))
        ctx.__dict__.pop("queries", None)
        held_out = {q.id for q in dev}  # they choose the refusal policy: not trained on
        dataset = write_training_pairs(ctx, [q for q in train if q.id not in held_out])
        counts = {
            f"{origin}_{split}": sum(
                1 for q in queries if q.split == split and (q.source == "feedback") == fb
            )
            for origin, fb in (("feedback", True), ("earlier", False))
            for split in ("train", "test")
        }
        say(
            "[refresh] questions: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
        )
        return {
            "queries_source": "feedback",
            "feedback_records": records,  # the records these questions were read from
            "train": len(train),
            "test": len(queries) - len(train),
            "dev_ids": [q.id for q in dev],
            "counts": counts,
            "pairs": describe_dataset(dataset),
        }

    return data


def _check_still_served(root: Path, expected: str | None, champion: str, work: Path) -> None:
    """``RefreshError`` when ``CURRENT`` no longer names ``expected`` (a rollback, another
    refresh or a tuning run moved it while this refresh trained): the refreshed stack was
    compared with bundle ``champion``, not with what is served now, so it must not replace it."""
    from llama_index_ragtune.pipeline.bundle_folders import current_version

    now = current_version(root)
    if now != expected:
        raise RefreshError(
            f"{root / 'CURRENT'} moved from {expected} to {now} while this refresh ran (a "
            f"rollback, another refresh or a tuning run); the refreshed parts were compared with "
            f"bundle {champion}, not with the one served now, so nothing was written: run the "
            f"refresh again (this refresh's parts stay in {work})"
        )


def _keep_champion_parts(ctx: Any, champion: Any, champion_dir: Path) -> None:
    """A part the refresh did not promote stays the bundle's (fusion and reranker; the
    encoder and decoder already start from the bundle's). The fusion is the manifest's
    ``retrieval.fusion``, or, where that optional field is missing or null, the one the
    bundle's index was saved with (what the bundle serves)."""
    manifest = champion.manifest
    steps = ctx.state.data["steps"]
    fusion = steps.get("fusion") or {}
    if not fusion.get("promoted"):
        recorded = (manifest.get("retrieval") or {}).get("fusion")
        params = dict(recorded if recorded is not None else champion.retriever.params())
        params.pop("similarity_top_k", None)
        fusion["params"] = params
        steps["fusion"] = fusion
    reranker = manifest["models"].get("reranker")
    if reranker and not (steps.get("reranker") or {}).get("promoted"):
        steps.setdefault("reranker", {})["served"] = {
            "path": str(champion_dir / reranker["path"]),
            "retrieval_weight": reranker.get("retrieval_weight"),
        }
    ctx.state.save()
