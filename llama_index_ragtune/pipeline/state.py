"""The work folder's state file: which steps finished, what they produced, and for which inputs.

``<work>/state.json`` (format ``ragtune-pipeline-state``, version 1) is rewritten
atomically after every step::

    {"format": "ragtune-pipeline-state", "format_version": 1,
     "inputs": "<sha256 of the documents and queries>", "config": "<config fingerprint>",
     "steps": {"parse": {"status": "done", "seconds": 1.9, "finished": "...", "nodes": 212},
               "reranker": {"status": "skipped", ...}}}

A run with ``resume=True`` skips steps recorded as done, provided the inputs are
the same; a run without it starts over and clears the work folder (only a folder
that holds a state file, or nothing, is ever cleared).

Example::

    state = RunState.open("runs/work", inputs="ab12...", config="cd34...", resume=True)
    if not state.done("parse"):
        ...
        state.record("parse", seconds=1.9, nodes=212)
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
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


class PipelineStateError(ValueError):
    """The work folder cannot be used: foreign files, a damaged state file, changed inputs."""


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


class RunState:
    """The state file of one work folder (see the module docstring)."""

    def __init__(self, work: Path, data: dict[str, Any]) -> None:
        self.work = work
        self.data = data

    @property
    def path(self) -> Path:
        return self.work / STATE_FILE

    @classmethod
    def open(cls, work: str | Path, inputs: str, config: str, resume: bool) -> RunState:
        """Read (``resume``) or start the state of ``work``.

        Raises ``PipelineStateError`` when ``work`` holds files but no state file (it is
        not a pipeline work folder: nothing is deleted), when the state file is damaged,
        or when resuming with other documents or queries than the run that wrote it.
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
        if work.exists() and any(work.iterdir()) and not path.is_file():
            raise PipelineStateError(
                f"{work} holds files but no {STATE_FILE}: it is not a pipeline work folder, and "
                "nothing in it is touched; choose an empty or new folder"
            )
        if not path.is_file():
            return cls(work, fresh)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # bad UTF-8/JSON, too deep, digits
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise PipelineStateError(
                f"{path} is damaged ({reason}); delete the work folder and start again"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PipelineStateError(f"{path} is not a {FORMAT} file; choose another work folder")
        if not resume:
            for entry in work.iterdir():
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
        if data.get("config") != config:
            logger.warning(
                "the settings changed since the run in %s started; finished steps keep their "
                "results, the others use the new settings",
                work,
            )
            data["config"] = config
        return cls(work, data)

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
