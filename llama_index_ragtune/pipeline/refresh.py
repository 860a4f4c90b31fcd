"""Refresh a bundle from user feedback: retrain, compare with the bundle in use, promote only a win.

``refresh_bundle`` (CLI ``ragtune refresh``):

1. reads the bundle served now (``CURRENT``) and its nodes (or re-parses ``docs``);
2. turns the feedback log into questions (:mod:`~llama_index_ragtune.pipeline.refresh_data`):
   its training side, plus the labelled questions the bundle was tuned on when they are
   still there, and its fixed held-out side;
3. re-runs the pipeline's tuning steps **from the bundle's own models**: the encoder,
   the fusion, the reranker (when the bundle serves one, or ``reranker=True``) and the
   decoder (only with ``decoder=True``); each engine promotes its part only when it
   beats the bundle's part on validation questions carved from the training side,
   and a part not promoted stays the bundle's;
4. measures the bundle in use (champion) and the refreshed stack (challenger) on the
   same held-out questions, the feedback's fixed held-out side and the bundle's earlier
   test questions: the challenger wins when its nDCG@10 is better by more than the
   margin on one of the two and worse by more than the margin on neither;
5. writes the next bundle version and moves ``CURRENT`` to it only when the challenger
   won; either way the decision goes to ``<out>/refresh.json`` and
   ``bundles/history.jsonl``, and the refresh's work folder (``<out>/work``) keeps
   the challenger's parts for inspection.

Its set-up lives in :mod:`~llama_index_ragtune.pipeline.refresh_setup`, its steps in
:mod:`~llama_index_ragtune.pipeline.refresh_steps`, its result in
:mod:`~llama_index_ragtune.pipeline.refresh_result`.

:func:`~llama_index_ragtune.pipeline.rollback.rollback_bundle` (CLI ``ragtune rollback``)
serves an earlier version again.

Example::

    from llama_index_ragtune.pipeline import load_bundle, refresh_bundle, rollback_bundle

    result = refresh_bundle("runs/shop", "feedback.sqlite", out="runs/refresh-1")
    print(result.summary())                 # the decision, before/after on held-out questions
    engine = load_bundle("runs/shop").query_engine      # the new version when it won
    rollback_bundle("runs/shop")            # serve the previous version again
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.refresh_data import RefreshError
from llama_index_ragtune.pipeline.refresh_result import RefreshResult
from llama_index_ragtune.pipeline.refresh_setup import (  # noqa: F401 - importable here too
    _BM25_SETTINGS,
    _bundle_bm25,
    _check_feedback,
    _nodes_from_bundle,
    _refresh_config,
)
from llama_index_ragtune.pipeline.refresh_steps import (  # noqa: F401 - importable here too
    _check_still_served,
    _data_step,
    _keep_champion_parts,
    _run_step,
)

logger = logging.getLogger(__name__)

__all__ = ["RefreshError", "RefreshResult", "check_refresh_out", "refresh_bundle"]


# ---------------------------------------------------------------------- the refresh


def refresh_bundle(
    bundle: str | Path,
    feedback: Any,
    out: str | Path,
    *,
    docs: str | Path | Sequence[Any] | None = None,
    metadata: str | Path | None = None,
    config: Any = None,
    time_budget: float | None = None,
    reranker: bool | None = None,
    decoder: bool = False,
    keys: Sequence[str] = ("store",),
    eval_fraction: float = 0.2,
    include_earlier: bool = True,
    margin: float | None = None,
    force: bool = False,
    device: str | None = None,
    report: bool = True,
    echo: Callable[[str], None] | None = None,
) -> RefreshResult:
    """Retrain from feedback, compare with the bundle in use, promote only a win (module docs).

    Args:
        bundle: a tuning run's ``--out`` folder or its ``bundles/`` folder (its ``CURRENT``
            version is the champion; new versions go beside it).
        feedback: a ``FeedbackStore`` or the path of its SQLite file.
        out: the refresh's folder (``refresh.json`` and ``work/``; a rerun starts over): new,
            empty or an earlier refresh's; one holding anything else (a run's folder, its
            ``work/``) is refused (:func:`check_refresh_out`).
        docs / metadata: re-parse these documents (default: the bundle's own nodes).
        config: a ``PipelineConfig`` (default: the bundle's settings); the starting
            models and the BM25 settings (analyzer, language, stopwords) are always the
            bundle's (the challenger is measured on the retriever the champion serves;
            tune anew to change them).
        time_budget: minutes of training in all (split as ``from_time_budget`` does).
        reranker: retrain the reranker (default: when the bundle serves one).
        decoder: retrain the decoder too (grounded SFT from the bundle's decoder).
        keys: feedback metadata keys that are filters (a list: ``("store",)``).
        eval_fraction: the feedback's held-out share (stable per question).
        include_earlier: also train on (and guard) the bundle's labelled questions.
        margin: how much better (nDCG@10) the challenger must be (default: the config's,
            else ``DEFAULT_MARGIN``).
        force: promote whatever the figures say (recorded as forced).
        device: torch device for training and the reranker (default: the config's).
        report: write the HTML / Markdown report into a new version.
        echo: where progress lines go (default: the logger; the CLI passes ``print``).

    Raises ``BundleError`` for a missing or edited bundle (or an empty ``bundle`` / ``out``),
    ``FileNotFoundError`` for a missing store, ``RefreshError`` when the feedback gives
    nothing to train or judge on, when the version is not in a bundles folder or ``out`` is
    inside it or holds files a refresh did not write, ``TypeError`` / ``ValueError`` naming ``keys``, ``eval_fraction``, a flag that
    is not a bool, ``margin``, ``time_budget``, ``config`` or ``device`` before any work.
    """
    from llama_index_ragtune.feedback.export import check_keys

    # the arguments first: before any heavy import, folder or index
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)):
        raise TypeError(
            f"eval_fraction must be a number between 0 and 1 (exclusive), got "
            f"{type(eval_fraction).__name__} {eval_fraction!r}"
        )
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(
            f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction!r}"
        )
    keys = check_keys(keys, "keys")  # a bare "store" would be split into letters
    _check_options(config, time_budget, reranker, decoder, include_earlier, margin, force, report)
    if device is not None:  # a device this machine lacks: before the champion loads
        from llama_index_ragtune.llms.loading import check_device

        check_device(device, "refresh_bundle")
    from llama_index_ragtune.pipeline.bundle_names import bundle_path

    bundle = bundle_path(bundle, "refresh_bundle: bundle")  # None, "" (an unset setting), ...
    out = bundle_path(out, "refresh_bundle: out")
    if isinstance(docs, (str, os.PathLike)):  # a rerun would parse this run's reports
        from llama_index_ragtune.pipeline.runner import check_outside_documents

        try:
            check_outside_documents(docs, {"--out": out, "--bundle": bundle})
        except ValueError as exc:
            raise RefreshError(str(exc)) from None

    from llama_index.core.llms import MockLLM

    from llama_index_ragtune._atomic import sha256_file
    from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN
    from llama_index_ragtune.pipeline.bundle import load_bundle
    from llama_index_ragtune.pipeline.bundle_folders import (
        MANIFEST,
        bundle_lock,
        current_version,
        resolve_bundle_dir,
    )
    from llama_index_ragtune.pipeline.context import RunContext
    from llama_index_ragtune.pipeline.refresh_data import open_store
    from llama_index_ragtune.pipeline.refresh_eval import (
        decide,
        evaluation_results,
        generation_settings,
        rankers,
        score,
    )
    from llama_index_ragtune.pipeline.refresh_writer import (
        append_history,
        nodes_digest,
        write_refreshed_version,
    )
    from llama_index_ragtune.pipeline.sources import save_nodes
    from llama_index_ragtune.pipeline.state import RunState, hash_inputs, work_folder_lock
    from llama_index_ragtune.pipeline.steps import STEP_FUNCTIONS

    say = echo or logger.info
    champion_dir = resolve_bundle_dir(bundle)
    _check_in_bundles_folder(champion_dir)  # before anything loads or is written
    _check_out_outside_bundles(out, champion_dir.parent)
    check_refresh_out(out)  # a run folder, its work/, a documents folder: nothing cleared
    champion = load_bundle(champion_dir, llm=MockLLM())  # verifies every file
    manifest, version = champion.manifest, champion.version
    # the version CURRENT must still name when the refresh promotes (_check_still_served)
    expected = (
        current_version(champion_dir.parent)
        if (Path(bundle).expanduser() / MANIFEST).is_file()  # a version folder was passed
        else version
    )
    store = open_store(feedback)
    held = contextlib.ExitStack()  # the work folder's lock, once it is known
    try:
        _check_feedback(store)  # before any folder is made or any work is done
        config = _refresh_config(manifest, champion_dir, config, time_budget)
        if device is not None:
            config = dataclasses.replace(config, device=device)
        margin = margin if margin is not None else config.promotion_margin
        margin = DEFAULT_MARGIN if margin is None else float(margin)
        with_reranker = bool(manifest["models"].get("reranker")) if reranker is None else reranker
        skip = tuple(p for p, on in (("reranker", with_reranker), ("decoder", decoder)) if not on)
        out = Path(out).expanduser()
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out {out} is a file; pass a folder")
        work = out / "work"
        key = f"refresh:{sha256_file(champion_dir / MANIFEST)}:{Path(str(store.path)).resolve()}"
        # another refresh (or run) in the same --out at once: an error before its files go
        held.enter_context(work_folder_lock(work))
        check_refresh_out(out)  # again under the lock: nothing put there since is cleared
        state = RunState.open(work, hash_inputs([], key), config.fingerprint(), resume=False)
        state.data[REFRESH_MARK] = True  # the next refresh into `out` knows the folder as its own
        state.save()
        ctx = RunContext(
            config, work, state, documents=docs, metadata=metadata, feedback=store, skip=skip
        )
        say(
            f"[refresh] bundle {version} ({champion_dir}), feedback {store.path}: {len(store)} records"
        )

        if docs is not None:
            _run_step(ctx, "parse", STEP_FUNCTIONS["parse"], say)
        else:
            nodes = _nodes_from_bundle(champion)
            save_nodes(nodes, ctx.path("nodes.json"))
            state.record("parse", seconds=0.0, nodes=len(nodes), source=f"bundle {version}")
        _run_step(ctx, "index", STEP_FUNCTIONS["index"], say)
        _run_step(
            ctx, "data", _data_step(store, manifest, keys, eval_fraction, include_earlier, say), say
        )
        parts: dict[str, Any] = {}
        for name in ("encoder", "fusion", "reranker", "decoder"):
            if name in skip:
                state.record(name, status="skipped", promoted=False)
                say(f"[refresh] {name}: left out")
                parts[name] = None
                continue
            parts[name] = _run_step(ctx, name, STEP_FUNCTIONS[name], say).get("decision")
        _keep_champion_parts(ctx, champion, champion_dir)

        test = [q for q in ctx.split("test") if q.has_gold]
        groups = {
            "feedback": [q for q in test if q.source == "feedback"],
            "earlier": [q for q in test if q.source != "feedback"],
        }
        groups = {k: v for k, v in groups.items() if v}
        if not groups:
            raise RefreshError(
                f"no held-out question to compare the refreshed bundle with bundle {version} on: the "
                f"feedback in {store.path} has none with a positive on its held-out side and the "
                "bundle's own test questions are not available; collect more feedback or raise "
                "eval_fraction"
            )
        champion_rank, challenger_rank = rankers(ctx, champion)
        metrics: dict[str, dict[str, dict[str, float]]] = {}
        latency: dict[str, dict[str, list[float]]] = {}
        for name, questions in groups.items():
            metrics[name], latency[name] = {}, {}
            for side, rank in (("champion", champion_rank), ("challenger", challenger_rank)):
                metrics[name][side], latency[name][side] = score(rank, questions)
        decision = decide(metrics, margin, force, version)
        say(f"[refresh] decision: {decision.reason}")
        results = evaluation_results(ctx, metrics, latency, decision, version)
        counts = dict(ctx.state.get("data", "counts") or {})
        refresh_info = {
            "champion": version,
            "feedback": str(store.path),
            "feedback_records": ctx.state.get("data", "feedback_records"),
            "keys": list(keys),
            "eval_fraction": eval_fraction,
            "questions": counts,
            "metrics": metrics,
            "decision": decision.to_dict(),
            "parts": parts,
            "out": str(out),
        }
        # promoting holds the writer lock from the check that CURRENT did not move to the
        # history line: a rollback or another refresh meanwhile waits, or makes this one stop
        with bundle_lock(champion_dir.parent) if decision.promoted else contextlib.nullcontext():
            served, path, report_path = version, champion_dir, None
            if decision.promoted:
                _check_still_served(champion_dir.parent, expected, version, work)
                data = {
                    "documents": (manifest.get("data") or {}).get("documents")
                    if docs is None
                    else {"count": len(ctx.documents), "sha256": hash_inputs(ctx.documents, None)},
                    "nodes": nodes_digest(ctx),
                    "queries": {"source": "feedback", "feedback_store": str(store.path), **counts},
                }
                written = write_refreshed_version(
                    ctx,
                    champion_dir,
                    manifest,
                    results,
                    refresh_info,
                    generation_settings(ctx, manifest),
                    data,
                    report=report,
                )
                served, path, report_path = written["version"], written["path"], written["report"]
            record = {
                "action": "refresh",
                "promoted": decision.promoted,
                "served": served,
                **refresh_info,
            }
            # logged right after CURRENT moved, before any file of `out`: a write there that
            # fails (a full disk) cannot leave the served version out of the log
            append_history(champion_dir.parent, {**record, "reason": decision.reason})
            if not decision.promoted:
                results.save(out / "evaluation.json")
            from llama_index_ragtune._atomic import atomic_write_json

            atomic_write_json(out / "refresh.json", record, strict=True, default=str)
        return RefreshResult(
            promoted=decision.promoted,
            decision=decision,
            champion_version=version,
            served_version=served,
            bundle_path=Path(path),
            out=out,
            metrics=metrics,
            parts=parts,
            questions={**counts, **{f"{k}_test": len(v) for k, v in groups.items()}},
            report=report_path,
        )
    finally:
        held.close()
        if store is not feedback:  # opened here from a path
            store.close()


REFRESH_MARK = "refresh"
"""The key a refresh's ``work/state.json`` holds (``true``): its work folder, not a tuning run's."""
_REFRESH_FILES = ("refresh.json", "evaluation.json")
"""What a refresh writes in its ``out`` besides ``work/`` (and their temporary copies)."""


def check_refresh_out(out: str | Path) -> None:
    """``RefreshError`` when ``out`` holds anything a refresh did not write: a rerun clears the
    refresh's ``work/`` and rewrites ``refresh.json`` / ``evaluation.json``, so a folder of
    other data passed by mistake (a tuning run's ``--out`` with its bundles, its ``work/``,
    documents) would be emptied. A new or empty folder, or one an earlier refresh wrote, is
    accepted; nothing is read or changed.

    Example::

        check_refresh_out("runs/refresh-1")       # None: new, empty, or a refresh's own
        check_refresh_out("runs/shop")            # RefreshError: holds bundles/ and work/
    """
    out = Path(out)
    if not os.path.isdir(out):  # new (or a file: named later as one)
        return
    try:
        foreign = _foreign_entries(out)
    except OSError as exc:  # an unreadable folder: what it holds cannot be told
        raise RefreshError(
            f"refresh_bundle: out {out} cannot be listed ({exc.strerror or exc}), so whether it "
            "holds other data cannot be told; nothing was done: pass a new or empty folder you "
            "can read"
        ) from None
    if foreign:
        shown = ", ".join(ascii(f)[1:-1] for f in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise RefreshError(
            f"refresh_bundle: out {out} already holds {shown}{more}, which a refresh did not "
            "write; a refresh clears its out folder's work/ and rewrites refresh.json there, so "
            "nothing was done (the bundle's run folder or its work/ passed as --out would be "
            f"emptied): pass a new or empty folder, e.g. {out.parent / 'refresh-1'}"
        )


def _foreign_entries(out: Path) -> list[str]:
    """The entries of ``out`` a refresh did not write (``name/`` for a folder)."""
    from llama_index_ragtune.pipeline.state import STATE_FILE, is_own_leftover

    foreign = []
    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        name = entry.name
        if name in _REFRESH_FILES and entry.is_file(follow_symlinks=False):
            continue
        if name.startswith(tuple(f".{f}.tmp-" for f in _REFRESH_FILES)):
            continue  # a killed writer's temporary copy
        if name == "work" and entry.is_dir(follow_symlinks=False):
            # the lock and a first state file cut short: a refresh killed as it started
            names = {n for n in os.listdir(entry.path) if not is_own_leftover(n)}
            if not names or _refresh_state(Path(entry.path) / STATE_FILE, out):
                continue
            whose = "a tuning run's" if STATE_FILE in names else "not a refresh's"
            foreign.append(f"work/ ({whose})")
            continue
        foreign.append(name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return foreign


def _refresh_state(path: Path, out: Path) -> bool:
    """Whether ``path`` is the state file of a refresh's work folder: marked so, or (a
    refresh of an earlier version, unmarked) with ``refresh.json`` beside its folder."""
    import json

    if not path.is_file() or path.is_symlink():
        return False
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(4 << 20) or b"null")
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    return data.get(REFRESH_MARK) is True or (out / "refresh.json").is_file()


def _check_in_bundles_folder(champion_dir: Path) -> None:
    """``RefreshError`` when the version to refresh is not inside a bundles folder (a version
    copied alone to ``deploy/my-bundle``): the next version and ``CURRENT`` are written
    beside it, so its parent would get them, and a folder there named like the next version
    (``deploy/v1``) would be replaced."""
    from llama_index_ragtune.pipeline.bundle_manifest import read_manifest
    from llama_index_ragtune.pipeline.bundle_names import BUNDLES_DIR, CURRENT, bundles_root

    parent = champion_dir.parent
    if bundles_root(parent) == parent:
        return
    version = read_manifest(champion_dir)["version"]  # a damaged one: BundleError naming it
    raise RefreshError(
        f"{champion_dir} is a bundle version outside a bundles folder ({parent} is not named "
        f"{BUNDLES_DIR!r} and holds no {CURRENT}); a refresh writes the next version and "
        f"{CURRENT} beside the version it refreshes, so nothing was done (it would write into "
        f"{parent}): copy the version into a run folder as <run>/{BUNDLES_DIR}/{version}, serve "
        f"it (`ragtune rollback --bundle <run> --to {version}`) and refresh <run>"
    )


def _check_out_outside_bundles(out: Path, root: Path) -> None:
    """``RefreshError`` when ``out`` is the bundles folder ``root`` or inside it (links
    followed): the refresh's ``work/``, ``refresh.json`` and ``evaluation.json`` in a version
    folder are files its manifest does not list, so the served version would no longer load."""
    try:
        real_out, real_root = out.resolve(), root.resolve()
    except (OSError, RuntimeError):  # a link loop: the folders cannot be compared
        return
    if real_out == real_root or real_root in real_out.parents:
        raise RefreshError(
            f"refresh_bundle: out {out} is inside the bundles folder {root}: the refresh's files "
            "(work/, refresh.json) there are not a bundle's, and in a version folder they would "
            "stop it from loading (files its manifest does not list); nothing was done: choose a "
            f"folder outside it, e.g. {root.parent / 'refresh-1'}"
        )


def _check_options(
    config: Any,
    time_budget: Any,
    reranker: Any,
    decoder: Any,
    include_earlier: Any,
    margin: Any,
    force: Any,
    report: Any,
) -> None:
    """``TypeError`` / ``ValueError`` naming the first argument of ``refresh_bundle`` that
    would be misread (``force="false"`` is true: a losing challenger promoted) or would fail
    only after the champion loaded and every part trained (a negative margin, ``config`` a
    dict)."""
    from llama_index_ragtune.pipeline.config import PipelineConfig, check_minutes

    flags = {"decoder": decoder, "include_earlier": include_earlier, "force": force}
    flags["report"] = report
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"refresh_bundle: {name} must be True or False, got {value!r:.60}")
    if reranker is not None and not isinstance(reranker, bool):
        raise TypeError(
            "refresh_bundle: reranker must be True, False or None (retrain it when the bundle "
            f"serves one), got {reranker!r:.60}"
        )
    if config is not None and not isinstance(config, PipelineConfig):
        raise TypeError(
            "refresh_bundle: config must be a PipelineConfig or None (the bundle's settings), "
            f"got {type(config).__name__}"
        )
    if time_budget is not None:
        check_minutes(time_budget, "refresh_bundle: time_budget")
    if margin is None:
        return
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(
            f"refresh_bundle: margin must be a number from 0 to 1 (an nDCG@10 gain) or None, "
            f"got {type(margin).__name__} {margin!r:.60}"
        )
    if not 0 <= margin <= 1:  # NaN too
        raise ValueError(
            f"refresh_bundle: margin must be from 0 to 1 (an nDCG@10 gain; 1 promotes nothing), "
            f"got {margin!r}"
        )
