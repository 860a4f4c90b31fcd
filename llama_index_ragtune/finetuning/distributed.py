"""How an engine runs under ``torchrun`` / ``accelerate launch``: one main process decides.

``DistributedMixin`` holds these steps of ``BaseFinetuneEngine``
(:mod:`~llama_index_ragtune.finetuning.base`); use an engine, not the mixin.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Mapping
from typing import Any

# the engines' one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.finetuning.base")


class DistributedMixin:
    """The engines' main-process checks and the values they share across DDP processes."""

    # ------------------------------------------------------------------ distributed

    @property
    def is_main_process(self) -> bool:
        """Whether this process evaluates, decides and writes ``final/``, ``challenger/`` and
        ``decision.json``: always in a single process; under ``torchrun`` / ``accelerate
        launch`` only rank 0 (every rank trains).

        Example::

            result = engine.finetune()          # every process returns the same result
            if engine.is_main_process:
                print(result.format_table())    # printed once under torchrun
        """
        return self.args.process_index == 0

    def _distributed(self) -> bool:
        """Whether training runs in several processes (DDP through ``torchrun`` / ``accelerate``).

        Raises ``RuntimeError`` when the launcher started several processes but ``args``
        sees only one (on a machine without a GPU, DDP needs ``use_cpu=True``): each
        process would then train alone on all the data and write the same folders.
        """
        launched = int(os.environ.get("WORLD_SIZE") or 1)
        world = self.args.world_size
        if launched > 1 and world == 1:
            raise RuntimeError(
                f"{type(self).__name__}: the launcher started {launched} processes "
                f"(WORLD_SIZE={launched}) but args.world_size is 1, so each process would train "
                "alone; without a GPU pass use_cpu=True in args (DDP over the gloo backend), "
                "e.g. default_args(output_dir, use_cpu=True), or ragtune train ... --device cpu"
            )
        return world > 1

    def _from_main(self, value: Any) -> Any:
        """The main process's ``value`` on every process (``value`` itself in a single process)."""
        if not self._distributed():
            return value
        from torch import distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _on_main(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` run by the main process only; its return value reaches every process.

        Under DDP the other processes serve the model inference that ``fn`` asks for
        (sentence-transformers' ``distributed_evaluation``: encode/predict calls are
        sharded over the ranks), and raise too when ``fn`` raises on the main process,
        so no rank waits forever.
        """
        if not self._distributed():
            return fn(*args)

        from sentence_transformers.util.distributed import distributed_evaluation

        value = None
        with distributed_evaluation(self.model) as run:
            if run:
                value = fn(*args)
                pickle.dumps(value)  # an unpicklable value fails here, stopping the other ranks
        return self._from_main(value)

    def _same_on_every_process(self, columns: Mapping[str, Any]) -> Any:
        """``columns`` (the training rows), checked to be identical on every DDP process.

        Row selection is seeded, so the processes normally build the same rows; rows
        that differ (a dataset built differently per process, scores computed on
        different devices) are replaced by the main process's, with a warning.
        """
        if not self._distributed():
            return columns

        from torch import distributed as dist

        text = json.dumps(columns, sort_keys=True, default=str).encode("utf-8")
        digests: list[Any] = [None] * self.args.world_size
        dist.all_gather_object(digests, hashlib.sha256(text).hexdigest())
        if len(set(digests)) == 1:
            return columns
        if self.is_main_process:
            logger.warning(
                "%s: the training rows differ across the %d processes; every process trains "
                "on the main process's rows (build the dataset the same way in every process)",
                type(self).__name__,
                len(digests),
            )
        return self._from_main(columns)
