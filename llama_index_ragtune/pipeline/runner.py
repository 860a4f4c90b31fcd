"""``TuningPipeline``: documents (+ questions) in, a tuned, evaluated, versioned bundle out.

Runs the steps of :mod:`~llama_index_ragtune.pipeline.config` in order, records
each in the work folder's state file (``<out>/work/state.json``), prints a cost
estimate before training and the before/after tables at the end, and writes the
bundle (:mod:`~llama_index_ragtune.pipeline.bundle`). With ``resume=True`` a
rerun skips finished steps and resumes training from the engines' checkpoints.

Example::

    from llama_index_ragtune.pipeline import PipelineConfig, TuningPipeline, load_bundle

    result = TuningPipeline(
        "help_centre/docs", out="runs/shop", queries="help_centre/queries.jsonl",
        config=PipelineConfig.from_time_budget(20),
    ).run()
    print(result.summary())                      # where the bundle and report are, the tables
    engine = load_bundle("runs/shop").query_engine
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.config import STEPS, PipelineConfig, check_skip
from llama_index_ragtune.pipeline.context import RunContext
from llama_index_ragtune.pipeline.state import (
    FEEDBACK_FINGERPRINT,
    RESUMABLE_STEPS,
    RunState,
    hash_inputs,
    remove_step_outputs,
    work_folder_lock,
)

logger = logging.getLogger(__name__)

WORK_DIR = "work"


@dataclass
class PipelineResult:
    """What a run produced.

    Attributes:
        out: the run's output folder; ``bundle_path`` the version folder written
            (``None`` when the run stopped before the bundle step).
        version: the bundle version (``"v1"``...).
        report: the HTML report's path (``None`` when skipped).
        evaluation: the ``EvaluationResults`` measured (``None`` when skipped).
        timings: seconds per step (from the state file).
    """

    out: Path
    work: Path
    bundle_path: Path | None = None
    version: str | None = None
    report: Path | None = None
    evaluation: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Where the bundle and the report are, and the before/after tables."""
        from llama_index_ragtune.pipeline.summary import format_tables

        lines = []
        if self.bundle_path is not None:
            lines.append(f"Bundle {self.version}: {self.bundle_path}")
            lines.append(f"  load it with: load_bundle({str(self.out)!r}).query_engine")
        if self.report is not None:
            lines.append(f"Report: {self.report}")
        if self.evaluation is not None:
            lines += ["", format_tables(self.evaluation)]
        total = sum(self.timings.values())
        if total:
            lines.append(
                f"\nStep times: {', '.join(f'{k} {v:.0f}s' for k, v in self.timings.items())}"
            )
        return "\n".join(lines)


class TuningPipeline:
    """Tune both halves of a RAG system on your documents and write a bundle.

    Args:
        documents: a folder of Markdown / HTML / text files, or LlamaIndex ``Document``s.
        out: output folder: ``bundles/`` (versions + ``CURRENT``) and ``work/`` go there.
        queries: a labelled queries JSONL (``pipeline.queries``); else ``feedback``; else
            synthetic questions from ``synthetic_llm`` (default: the bundled decoder).
        metadata: the documents' metadata JSON (default: found beside the folder).
        feedback: a ``FeedbackStore`` or its SQLite path (instead of ``queries``).
        config: a ``PipelineConfig`` (default settings when None).
        skip: steps to leave out (``"reranker,decoder"`` or a sequence; see ``SKIPPABLE``).
        resume: continue the run in the work folder (finished steps are skipped; changed
            settings or ``skip`` redo the first step they shape and every later one).
            A run that fails before any step finished removes the folders it created.
        work_dir: the work folder (default ``<out>/work``).
        echo: where progress lines go (default: the logger); the CLI passes ``print``.
    """

    def __init__(
        self,
        documents: str | Path | Sequence[Any],
        out: str | Path,
        *,
        queries: str | Path | None = None,
        metadata: str | Path | None = None,
        feedback: Any = None,
        synthetic_llm: Any = None,
        config: PipelineConfig | None = None,
        skip: str | Sequence[str] | None = None,
        resume: bool = False,
        work_dir: str | Path | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        if queries is not None and feedback is not None:
            raise ValueError("pass either queries= (a labelled file) or feedback=, not both")
        if isinstance(documents, (str, Path)):
            folder = Path(documents).expanduser()
            if not folder.exists():
                raise FileNotFoundError(f"documents folder not found: {folder}")
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is a file; pass the folder of documents")
        for name, given in (("queries", queries), ("metadata", metadata)):
            if given is not None:
                check_input_file(given, f"{name} file")
        if isinstance(feedback, (str, Path)):
            # a file that is not a feedback store fails now, not after the index is built
            from llama_index_ragtune.pipeline.refresh_data import open_store

            open_store(feedback).close()
        self.out = Path(out).expanduser()
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"--out {self.out} is a file; pass a folder")
        self.config = config or PipelineConfig()
        if not isinstance(self.config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(self.config).__name__}")
        if self.config.device is not None:  # a typo fails now, not when a model is loaded
            from llama_index_ragtune.llms.loading import check_device

            check_device(self.config.device, "TuningPipeline (config.device, --device)")
        self.skip = check_skip(_no_blank_skip(skip))
        self.resume = resume
        self.work = Path(work_dir).expanduser() if work_dir is not None else self.out / WORK_DIR
        if self.work.exists() and not self.work.is_dir():
            raise NotADirectoryError(f"work_dir {self.work} is a file; pass a folder")
        inputs = {"queries file": queries, "metadata file": metadata, "feedback file": feedback}
        if isinstance(documents, (str, Path)):
            inputs["documents folder"] = documents
        _check_layout(
            {k: Path(v).expanduser() for k, v in inputs.items() if isinstance(v, (str, Path))},
            self.out,
            self.work,
        )
        self.echo = echo or logger.info
        self._sources = {
            "documents": documents,
            "metadata": metadata,
            "queries": queries,
            "feedback": feedback,
            "synthetic_llm": synthetic_llm,
        }
        self._ctx: RunContext | None = None
        self._finished: set[str] = set()
        # Folders this run would create: removed again when it fails before any step finished.
        self._new_folders = [f for f in map(_topmost_missing, (self.out, self.work)) if f]

    # ------------------------------------------------------------------ context

    def _queries_key(self) -> bytes | str:
        source = self._sources
        if source["queries"] is not None:
            return Path(source["queries"]).expanduser().read_bytes()
        if source["feedback"] is not None:
            return f"feedback:{getattr(source['feedback'], 'path', source['feedback'])}"
        llm = source["synthetic_llm"]
        return f"synthetic:{type(llm).__name__ if llm is not None else 'bundled'}"

    @property
    def context(self) -> RunContext:
        """The run's shared context (opens the work folder's state on first use)."""
        if self._ctx is None:
            ctx = RunContext(
                self.config,
                self.work,
                state=None,  # type: ignore[arg-type]
                documents=self._sources["documents"],
                metadata=self._sources["metadata"],
                queries=self._sources["queries"],
                feedback=self._sources["feedback"],
                synthetic_llm=self._sources["synthetic_llm"],
                skip=self.skip,
                resume=self.resume,
            )
            key = self._queries_key()
            if isinstance(key, bytes):
                ctx.queries_sha256 = hashlib.sha256(key).hexdigest()
            inputs = hash_inputs(ctx.documents, key)
            with work_folder_lock(self.work):  # a fresh state clears the folder
                ctx.state = RunState.open(
                    self.work,
                    inputs,
                    self.config.fingerprint(),
                    self.resume,
                    settings=self.config.to_dict(),
                )
                self._redo_changed_skips(ctx.state)
                self._redo_if_feedback_changed(ctx.state)
                ctx.state.save()
            ctx.echo = self.echo
            self._ctx = ctx
        return self._ctx

    def _redo_changed_skips(self, state: RunState) -> None:
        """A resumed run whose ``skip`` differs from what a recorded step did (skipped then,
        to run now, or the reverse) redoes that step and every later one: kept, the decoder
        a first run skipped would never be tuned, and the evaluation and bundle would not
        show the parts this run serves."""
        recorded = state.data["steps"]
        changed = [
            name
            for name in STEPS
            if name in recorded
            and (recorded[name].get("status") == "skipped") != (name in self.skip)
        ]
        if changed:
            was = recorded[changed[0]].get("status") == "skipped"
            state.redo_from(
                changed[0],
                f"the step {changed[0]!r} was {'skipped' if was else 'run'} but is "
                f"{'to run' if was else 'skipped'} now (--skip)",
            )

    def _redo_if_feedback_changed(self, state: RunState) -> None:
        """Record the feedback store's content fingerprint; a resumed run whose store changed
        since (the app kept recording: its path alone is the same) redoes the data step and
        every later one, which would otherwise train and judge on the old records."""
        feedback = self._sources["feedback"]
        if feedback is None:
            return
        from llama_index_ragtune.pipeline.refresh_data import open_store

        store = open_store(feedback)
        try:
            now = store.fingerprint()
        finally:
            if store is not feedback:
                store.close()
        before = state.data.get(FEEDBACK_FINGERPRINT)
        if before != now and "data" in state.data["steps"]:
            change = (
                "changed (records, ratings or clicks)"
                if before
                else "may have changed (the release that started the run kept no fingerprint)"
            )
            state.redo_from(
                "data", f"the feedback store {getattr(store, 'path', feedback)} {change}"
            )
        state.data[FEEDBACK_FINGERPRINT] = now

    # ------------------------------------------------------------------ steps

    def _run_step(self, name: str) -> None:
        from llama_index_ragtune.pipeline.steps import STEP_FUNCTIONS

        ctx = self.context
        number = f"[{STEPS.index(name) + 1}/{len(STEPS)}] {name}"
        if ctx.state.done(name):
            if name not in self._finished:  # not this object's own run(until=...) before
                self.echo(f"{number}: done in an earlier run (resumed)")
            self._finished.add(name)
            return
        self._finished.add(name)
        if name in self.skip:
            ctx.state.record(name, status="skipped", promoted=False)
            self.echo(f"{number}: skipped")
            return
        self.echo(f"{number} ...")
        if name not in RESUMABLE_STEPS:  # what a killed run half wrote: never mixed in
            remove_step_outputs(ctx.work, [name])
        start = time.perf_counter()
        if name == "evaluate":
            from llama_index_ragtune.pipeline.evaluate import evaluate

            outputs = evaluate(ctx)
        elif name == "bundle":
            from llama_index_ragtune.pipeline.bundle_writer import write_bundle

            outputs = write_bundle(ctx, self.out, report="report" not in self.skip)
        else:
            outputs = STEP_FUNCTIONS[name](ctx)
        seconds = time.perf_counter() - start
        ctx.state.record(name, seconds=round(seconds, 2), **outputs)
        note = ""
        if "decision" in outputs and outputs["decision"]:
            note = f": {outputs['decision']['reason']}"
        self.echo(f"{number}: done in {seconds:.1f} s{note}")
        if name == "data":
            from llama_index_ragtune.pipeline.summary import questions_text

            with_gold = sum(1 for q in ctx.split("test") if q.has_gold)
            self.echo(questions_text(outputs, with_gold))
            self.echo(self.estimate())

    def estimate(self) -> str:
        """The cost estimate (needs the ``data`` step's output)."""
        from llama_index_ragtune.finetuning.budget import select_positives
        from llama_index_ragtune.pipeline.evaluate import sample_questions
        from llama_index_ragtune.pipeline.summary import estimate_text

        ctx, config = self.context, self.config
        counts: dict[str, Any] = {}
        if ctx.path("data", "retrieval.json").is_file():
            dataset = ctx.retrieval_dataset
            for part, batch in (("encoder", 32), ("reranker", 16)):
                chosen = select_positives(dataset, config.budget(part), seed=config.seed)
                args = getattr(config, f"{part}_args")
                counts[f"{part}_rows"] = sum(len(v) for v in chosen.values())
                counts[f"{part}_batch"] = int(args.get("per_device_train_batch_size", batch))
                counts[f"{part}_epochs"] = float(args.get("num_train_epochs", 1))
                counts[f"{part}_max_steps"] = int(args.get("max_steps", -1))
        dev = {q.id for q in ctx.split("dev")}
        sft = len([q for q in ctx.split("train") if q.id not in dev])
        cap = config.decoder_budget.max_pairs if config.decoder_budget else None
        counts["decoder_rows"] = min(sft, cap) if cap else sft
        counts["decoder_batch"] = int(
            config.decoder_args.get("per_device_train_batch_size", 2)
        ) * int(config.decoder_args.get("gradient_accumulation_steps", 2))
        counts["decoder_epochs"] = float(config.decoder_args.get("num_train_epochs", 1))
        counts["decoder_max_steps"] = int(config.decoder_args.get("max_steps", -1))
        test = ctx.split("test")
        counts["retrieval_test"] = sum(1 for q in test if q.has_gold)
        counts["generation_test"] = len(sample_questions(test, config.max_test_questions, 0))
        counts["dev"] = len(sample_questions(ctx.split("dev"), config.max_dev_questions, 0))
        return estimate_text(config, counts, self.skip)

    def run(self, until: str | None = None) -> PipelineResult:
        """Run every step (or up to and including ``until``); return the :class:`PipelineResult`."""
        if until is not None and until not in STEPS:
            raise ValueError(f"until must be one of {STEPS}, got {until!r}")
        # another run in the work folder at once: an error before anything here is touched
        with work_folder_lock(self.work):
            try:
                limit = self.config.time_limit_minutes
                if limit is not None and self.context.deadline is None:  # the clock starts now
                    self.context.deadline = time.time() + limit * 60
                    self._warn_if_limit_too_short(limit)
                for name in STEPS:
                    self._run_step(name)
                    if name == until:
                        break
            except BaseException:
                self._discard_if_nothing_done()
                raise
        return self.result()

    def _warn_if_limit_too_short(self, limit: float) -> None:
        """Say so up front when the parts trained before the decoder, which keep their own
        budget minutes, would leave the decoder no time under the limit."""
        if "decoder" in self.skip:
            return
        before = sum(
            budget.minutes
            for part in ("encoder", "reranker")
            if part not in self.skip
            and (budget := self.config.budget(part)) is not None
            and budget.minutes
        )
        if before >= limit - 1:
            why = f" (the encoder and reranker budgets alone take {before:g} min)" if before else ""
            self.echo(
                f"warning: the time limit of {limit:g} min leaves the decoder little or no "
                f"time{why}; raise --time-limit or lower --time-budget"
            )

    def _discard_if_nothing_done(self) -> None:
        """Remove the folders this pipeline created when no step has finished (bad input)."""
        if self._ctx is not None and self._ctx.state.data["steps"]:
            return
        for folder in self._new_folders:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)

    def result(self) -> PipelineResult:
        """The outcome recorded so far (bundle, report, evaluation, timings)."""
        from llama_index_ragtune.evaluation.results import EvaluationResults

        state = self.context.state
        result = PipelineResult(out=self.out, work=self.work, timings=state.timings())
        bundle = state.step("bundle")
        if bundle.get("status") == "done":
            result.bundle_path = Path(bundle["path"])
            result.version = bundle["version"]
            result.report = Path(bundle["report"]) if bundle.get("report") else None
            evaluation = result.bundle_path / "evaluation.json"
        else:
            evaluation = self.work / "evaluation.json"
        if evaluation.is_file():
            result.evaluation = EvaluationResults.load(evaluation)
        return result


def _no_blank_skip(skip: Any) -> Any:
    """``skip`` as given (an iterator as a list, read once); ``ValueError`` when it holds a
    blank step name (``""``, ``","``, ``"encoder,"``, ``["encoder", ""]``: an unset variable
    or a stray comma, which would otherwise skip nothing without a word), as ``--skip``."""
    from llama_index_ragtune.pipeline.config import SKIPPABLE

    given = skip
    if isinstance(skip, str):
        parts: Any = skip.split(",")
    elif isinstance(skip, Iterable) and not isinstance(skip, (bytes, bytearray, Mapping)):
        skip = parts = list(skip)
        given = skip if iter(given) is given else given  # an iterator is shown as read
    else:
        return skip  # None, or a wrong type check_skip names
    if any(isinstance(part, str) and not part.strip() for part in parts):
        raise ValueError(
            f"skip={given!r} holds a blank step name; give step names (a list, or one string "
            f"separated by commas) from {', '.join(SKIPPABLE)}, or leave skip out (skip=None) "
            "to run every step"
        )
    return skip


def check_input_file(path: str | Path, what: str) -> Path:
    """``path`` with ``~`` expanded, when it is a regular file (links followed); else the
    error of :func:`llama_index_ragtune.data.paths.check_file` naming ``what`` and the kind
    (``FileNotFoundError``, ``IsADirectoryError``, ``DataError`` for a named pipe or device;
    all were "not found", and reading a named pipe would wait for a writer for ever).

    Example::

        check_input_file("help_centre", "queries file")   # IsADirectoryError: ... a folder
    """
    from llama_index_ragtune.data.paths import check_file

    return check_file(Path(path).expanduser(), what)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_outside_documents(docs: str | Path, folders: dict[str, str | Path]) -> None:
    """``ValueError`` when a folder a run writes (``{"--out": path}``) is the documents folder
    ``docs`` or inside it (links followed): the next run would read its bundles and reports
    as documents. ``TuningPipeline`` and ``refresh_bundle`` check their folders with it.

    Example::

        check_outside_documents("shop/docs", {"--out": "shop/docs/run"})   # ValueError
        check_outside_documents("shop/docs", {"--out": "shop/runs"})       # fine
    """
    for name, folder in folders.items():
        if _inside(Path(folder).expanduser(), Path(docs).expanduser()):
            raise ValueError(
                f"{name} {folder} is inside the documents folder {docs}: the next run would read "
                "its bundles and reports as documents; choose a folder outside it"
            )


def _check_layout(inputs: dict[str, Path], out: Path, work: Path) -> None:
    """``ValueError`` when the output would mix with the inputs: ``out`` or the work folder
    inside the documents folder (the next run would read its bundles and reports as
    documents), or an input inside the work folder (a fresh run clears it)."""
    docs = inputs.get("documents folder")
    if docs is not None:
        check_outside_documents(docs, {"--out": out, "the work folder": work})
    for name, path in inputs.items():
        if _inside(path, work):
            raise ValueError(
                f"the {name} {path} is inside the work folder {work}, which a run clears; move "
                "it out, or choose another --out"
            )


def _topmost_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def tune(documents: str | Path | Sequence[Any], out: str | Path, **kwargs: Any) -> PipelineResult:
    """One call: ``TuningPipeline(documents, out, **kwargs).run()``.

    Example::

        result = tune("help_centre/docs", "runs/shop", queries="help_centre/queries.jsonl")
    """
    return TuningPipeline(documents, out, **kwargs).run()
