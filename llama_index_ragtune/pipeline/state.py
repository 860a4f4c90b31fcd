"""The work folder's state file: which steps finished, what they produced, and for which inputs.

``<work>/state.json`` (format ``ragtune-pipeline-state``, version 1) is rewritten
atomically after every step::

    {"format": "ragtune-pipeline-state", "format_version": 1,
     "inputs": "<sha256 of the documents and queries>", "config": "<config fingerprint>",
     "steps": {"parse": {"status": "done", "seconds": 1.9, "finished": "...", "nodes": 212},
               "reranker": {"status": "skipped", ...}}}

A run with ``resume=True`` skips steps recorded as done, provided the inputs are
the same; with other settings (``settings``, compared field by field) or another
``--skip`` it redoes the first step they shape and every later one, removing their
outputs (``STEP_FILES``); a step that did not finish starts from an empty output, except
the engines' checkpoints (``RESUMABLE_STEPS``). A run without it starts over and clears the work folder (only a folder
that holds a state file, or nothing, is ever cleared). A run holds the folder's lock
(:func:`work_folder_lock`, ``<work>/.lock``) while it works there, so a second run in the
same folder at once stops with a ``PipelineStateError`` instead of clearing the first's
files.

Example::

    state = RunState.open("runs/work", inputs="ab12...", config="cd34...", resume=True)
    if not state.done("parse"):
        ...
        state.record("parse", seconds=1.9, nodes=212)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_write_json

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
FORMAT = "ragtune-pipeline-state"
FORMAT_VERSION = 1
STEP_OUTPUTS = {"parse": "nodes.json", "index": "index/baseline", "data": "data/queries.json"}
"""What a finished step leaves in the work folder, which later steps read back."""
WORK_LOCK = ".lock"
"""The file a run locks in its work folder (:func:`work_folder_lock`); kept when it is cleared."""
_HELD = threading.local()  # .depth {work folder: how many times this thread entered its lock}


class PipelineStateError(ValueError):
    """The work folder cannot be used: foreign files, a damaged state file, changed inputs,
    another run working in it."""


@contextlib.contextmanager
def work_folder_lock(work: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of a run's work folder (``<work>/.lock``, created with the
    folder); yield the folder.

    Another process or thread holding it is a ``PipelineStateError`` at once, naming the
    folder and the process: two runs in one folder would clear and overwrite each other's
    files. The same thread may enter it again. The lock is released when its holder exits,
    even on ``SIGKILL``; without ``flock`` (Windows), or where the lock file cannot be made
    (a read-only folder) or locked, the run goes on unlocked.

    Example::

        with work_folder_lock("runs/shop/work"):
            state = RunState.open("runs/shop/work", inputs, config, resume=False)
    """
    folder = Path(work).expanduser().resolve()
    depth = _HELD.__dict__.setdefault("depth", {})
    key = str(folder)
    if depth.get(key):
        depth[key] += 1
        try:
            yield folder
        finally:
            depth[key] -= 1
        return
    _check_work_folder(folder)  # another program's folder: no lock file left in it
    fd = _lock_file(folder)
    if fd is None:
        yield folder
        return
    try:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise PipelineStateError(
                f"{folder} is the work folder of another run in progress (process {holder}, "
                f"lock file {folder / WORK_LOCK}); two runs there would delete each other's "
                "files: wait for it to finish or stop it, or pass another --out"
            ) from None
        except OSError:  # a file system without locks
            pass
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        depth[key] = 1
        try:
            yield folder
        finally:
            depth[key] = 0
    finally:
        os.close(fd)  # releases the lock


def _check_work_folder(work: Path) -> None:
    """``PipelineStateError`` when ``work`` holds files but no state file (not a work folder).

    The lock and temporary copies of the state file (``.state.json.tmp-*``: a run killed
    while it wrote its first state) are a run's own, so a folder holding only those is one.
    """
    if (
        work.is_dir()
        and any(not is_own_leftover(entry.name) for entry in work.iterdir())
        and not (work / STATE_FILE).is_file()
    ):
        raise PipelineStateError(
            f"{work} holds files but no {STATE_FILE}: it is not a pipeline work folder, and "
            "nothing in it is touched; choose an empty or new folder"
        )


def is_own_leftover(name: str) -> bool:
    """Whether ``name`` in a work folder is the run's lock or a temporary copy of its state
    file (``_atomic.atomic_path``), what a run killed before its first state leaves.

    Example::

        is_own_leftover(".state.json.tmp-4242-0a1b2c.json")     # True
    """
    return name == WORK_LOCK or name.startswith(f".{STATE_FILE}.tmp-")


def _lock_file(folder: Path) -> int | None:
    """The open lock file of ``folder`` (made with it), or None where there can be no lock."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # Windows
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # never through a link: O_CREAT would create the file it names, wherever that is
        return os.open(
            folder / WORK_LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644
        )
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ELOOP):
            what = "a folder" if exc.errno == errno.EISDIR else "a symbolic link"
            raise PipelineStateError(
                f"{folder / WORK_LOCK} is {what}; it must be the file runs lock: remove it and "
                "run again"
            ) from None
        return None  # read-only or not a folder: reported by the run's own first write


STEP_FILES = {
    "parse": ("nodes.json",),
    "index": ("index",),
    "data": ("data",),
    "encoder": ("encoder", "index/served"),
    "fusion": ("index/served",),
    "reranker": ("reranker",),
    "decoder": ("decoder", "evaluate"),
    "evaluate": ("evaluation.json", "answers.json"),
}
"""What each step writes in the work folder: removed when the step is to be redone, so an
engine never resumes a checkpoint of the old settings."""


def _served_models(steps: dict[str, Any]) -> list[tuple[str, str]]:
    """``(step, folder)`` of each tuned model a finished step serves (``"served"``: a
    folder, or ``{"path": folder}`` for the reranker)."""
    found = []
    for step, record in steps.items():
        served = record.get("served") if record.get("status") == "done" else None
        if isinstance(served, dict):
            served = served.get("path")
        if isinstance(served, str) and served:
            found.append((step, served))
    return found


RESUMABLE_STEPS = ("encoder", "reranker", "decoder")
"""Steps whose unfinished work (the engines' checkpoints) a rerun continues; every other
step starts from an empty output when it runs (a killed run's half-written files removed)."""


def remove_step_outputs(work: Path, steps: Iterable[str]) -> None:
    """Remove what ``steps`` wrote in the work folder (``STEP_FILES``; links, not their targets)."""
    for step in steps:
        for name in STEP_FILES.get(step, ()):
            entry = work / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()


def hash_inputs(documents: Iterable[Any], queries: bytes | str | None) -> str:
    """SHA-256 over every document (id, text, metadata) and the queries' bytes (or a label)."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(str(doc.id_).encode("utf-8") + b"\x00")
        digest.update(doc.text.encode("utf-8") + b"\x00")
        digest.update(json.dumps(doc.metadata, sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\x01")
    digest.update(b"\x02")
    if queries is not None:
        digest.update(queries if isinstance(queries, bytes) else queries.encode("utf-8"))
    return digest.hexdigest()


FEEDBACK_FINGERPRINT = "feedback_fingerprint"
"""The state file's key for ``FeedbackStore.fingerprint()`` of a run's feedback store."""
MAX_STATE_BYTES = 64 << 20
"""The largest ``state.json`` read (64 MiB; a run writes some KB): a bigger one is refused
after reading 64 MiB + 1 byte, not read whole into memory."""


def _read_state(path: Path) -> str:
    """The text of the state file ``path``: a plain file (a link to one is followed, a pipe
    or a device is never opened for reading) of at most :data:`MAX_STATE_BYTES`."""
    from llama_index_ragtune._atomic_reads import read_capped

    fix = "delete the work folder (or run without --resume) and start again"
    raw = read_capped(path, MAX_STATE_BYTES, fix, error=PipelineStateError)
    if len(raw) > MAX_STATE_BYTES:
        raise PipelineStateError(
            f"{path} is over {MAX_STATE_BYTES >> 20} MiB, far more than a run's state file "
            f"(some KB): not read; {fix}"
        )
    return raw.decode("utf-8")


class RunState:
    """The state file of one work folder (see the module docstring)."""

    def __init__(self, work: Path, data: dict[str, Any]) -> None:
        self.work = work
        self.data = data

    @property
    def path(self) -> Path:
        return self.work / STATE_FILE

    @classmethod
    def open(
        cls,
        work: str | Path,
        inputs: str,
        config: str,
        resume: bool,
        settings: dict[str, Any] | None = None,
    ) -> RunState:
        """Read (``resume``) or start the state of ``work``.

        ``settings``: the run's ``PipelineConfig.to_dict()``, recorded so that a resumed
        run with other settings redoes the first step they shape and every later one
        (``config.first_changed_step``; their outputs are removed), instead of mixing
        results made under both. Raises ``PipelineStateError`` when ``work`` holds files
        but no state file (it is not a pipeline work folder: nothing is deleted), when the
        state file is damaged, or when resuming with other documents or queries than the
        run that wrote it.
        """
        work = Path(work)
        path = work / STATE_FILE
        fresh = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "inputs": inputs,
            "config": config,
            "steps": {},
        }
        if settings is not None:  # as JSON reads it back, to compare with a recorded one
            fresh["settings"] = json.loads(json.dumps(settings, sort_keys=True, default=str))
        _check_work_folder(work)
        if not path.is_file():
            return cls(work, fresh)
        try:
            data = json.loads(_read_state(path))
        except PipelineStateError:
            raise
        except (OSError, ValueError, RecursionError) as exc:  # bad UTF-8/JSON, too deep, digits
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise PipelineStateError(
                f"{path} is damaged ({reason}); delete the work folder and start again"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PipelineStateError(f"{path} is not a {FORMAT} file; choose another work folder")
        if not resume:
            # the state file last: a run killed while clearing leaves a folder that still
            # reads as a work folder, which the next run clears (not refused as foreign)
            entries = sorted(work.iterdir(), key=lambda entry: entry.name == STATE_FILE)
            for entry in entries:
                if entry.name == WORK_LOCK:  # the lock this run (or none) holds
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            return cls(work, fresh)
        if data.get("format_version") != FORMAT_VERSION:
            raise PipelineStateError(
                f"{path} was written by another version of llama-index-ragtune; start without resume"
            )
        steps = data.get("steps")
        if not isinstance(steps, dict) or not all(isinstance(v, dict) for v in steps.values()):
            raise PipelineStateError(
                f"{path} is damaged (its 'steps' are not an object of step records); run again "
                "without --resume to start over"
            )
        missing = [
            f"{step} ({output})"
            for step, output in STEP_OUTPUTS.items()
            if steps.get(step, {}).get("status") == "done" and not (work / output).exists()
        ]
        missing += [
            f"{step} ({served})"
            for step, served in _served_models(steps)
            if not Path(served).is_dir()  # the tuned model that later steps load and bundle
        ]
        if missing:
            raise PipelineStateError(
                f"{path} records steps as finished whose output is gone: {', '.join(missing)}; "
                "run again without --resume to start over"
            )
        if data.get("inputs") != inputs:
            raise PipelineStateError(
                f"the documents or queries changed since the run in {work} started; resuming would "
                "mix the two; run again without --resume to start over"
            )
        state = cls(work, data)
        if data.get("config") != config:
            state._settings_changed(config, fresh.get("settings"))
        elif "settings" in fresh and not isinstance(data.get("settings"), dict):
            data["settings"] = fresh["settings"]  # the same settings, now recorded
        return state

    def _settings_changed(self, config: str, settings: dict[str, Any] | None) -> None:
        """Redo the steps the new settings shape (a resumed run must not mix results made
        under two settings: nodes of one chunking indexed under another, an encoder trained
        with one seed's split evaluated on another's)."""
        from llama_index_ragtune.pipeline.config import STEPS, first_changed_step

        before = self.data.get("settings")
        if settings is None:
            first, changed = None, []
        elif not isinstance(before, dict):  # an older state file: which changed is unknown
            first, changed = STEPS[0], ["(not recorded by the run that started it)"]
        else:
            first, changed = first_changed_step(before, settings)
        if first is not None:
            self.redo_from(first, f"the settings changed ({', '.join(changed)})")
        self.data["config"] = config
        if settings is not None:
            self.data["settings"] = settings
        self.save()

    def redo_from(self, first: str, why: str) -> list[str]:
        """Forget ``first`` and every later recorded step, removing what they wrote in the
        work folder (``STEP_FILES``), so a resumed run redoes them; return the steps forgotten.

        Example::

            state.redo_from("data", "the seed changed")   # ['data', 'encoder', ...]
        """
        from llama_index_ragtune.pipeline.config import STEPS

        steps = self.data["steps"]
        redo = [s for s in STEPS[STEPS.index(first) :] if s in steps]
        if redo:
            logger.warning(
                "%s since the run in %s started: redoing %s and every later step so that no "
                "result mixes the two runs",
                why,
                self.work,
                first,
            )
            for step in redo:
                steps.pop(step, None)
            remove_step_outputs(self.work, redo)
            self.save()
        return redo

    def done(self, step: str) -> bool:
        """Whether ``step`` finished (or was skipped) in this state."""
        return self.data["steps"].get(step, {}).get("status") in ("done", "skipped")

    def step(self, step: str) -> dict[str, Any]:
        """What ``step`` recorded (empty when it has not run)."""
        return dict(self.data["steps"].get(step, {}))

    def get(self, step: str, key: str, default: Any = None) -> Any:
        return self.data["steps"].get(step, {}).get(key, default)

    def record(self, step: str, status: str = "done", **outputs: Any) -> None:
        """Mark ``step`` as ``status`` with its outputs, and write the file atomically."""
        self.data["steps"][step] = {
            "status": status,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **outputs,
        }
        self.save()

    def forget(self, steps: Iterable[str]) -> None:
        """Mark ``steps`` as not run (their inputs changed)."""
        for step in steps:
            self.data["steps"].pop(step, None)
        self.save()

    def save(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data, strict=True, indent=2, default=str)

    def timings(self) -> dict[str, float]:
        """Seconds per finished step."""
        return {
            name: float(info["seconds"])
            for name, info in self.data["steps"].items()
            if isinstance(info.get("seconds"), (int, float))
        }
