"""Model files going into a bundle: hard-linked or copied, readable by a server, never empty.

Example::

    from pathlib import Path
    from llama_index_ragtune.pipeline.bundle_files import copy_tree, empty_weights, link_or_copy

    empty_weights(Path("runs/shop/bundles/v2/encoder"))      # [] when every weight file has bytes
    link_or_copy("runs/encoder/final/model.safetensors", "bundle/encoder/model.safetensors")
    copy_tree(Path("runs/encoder/final"), Path("bundle/encoder"))
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from llama_index_ragtune.pipeline.bundle_folders import BundleError

# model weight files: never empty in a model that loads (an empty one is a save cut short)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf")


def empty_weights(folder: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` model weight files (:data:`WEIGHT_SUFFIXES`) under ``folder`` that are
    empty (0 bytes), as paths relative to ``folder``.

    Example::

        empty_weights(Path("runs/shop/bundles/v2/encoder"))      # ['model.safetensors']
    """
    found = []
    for top, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(top, name)
            with contextlib.suppress(OSError):
                if name.endswith(WEIGHT_SUFFIXES) and os.path.getsize(path) == 0:
                    found.append(os.path.relpath(path, folder))
        if len(found) >= limit:
            break
    return found[:limit]


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link ``src`` to ``dst`` (no second copy of model weights), else copy it.

    The file gets the read permissions the user's umask gives new files: transformers saves
    weights private to their owner (``0600``), which a server running as another user
    (a container's non-root user) could not read from a deployed bundle. An empty weight
    file (:data:`WEIGHT_SUFFIXES`, a save cut short) is a ``BundleError`` naming it: a
    version holding it would verify, then fail to load once served.
    """
    import shutil

    if str(src).endswith(WEIGHT_SUFFIXES) and os.path.getsize(src) == 0:
        raise BundleError(
            f"{src} is empty (0 bytes): the model was saved incompletely, so no bundle version "
            "is written from it (the served version stays); train or save that model again"
        )
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    with contextlib.suppress(OSError):  # a file system without modes, another owner's file
        mode = os.stat(dst).st_mode
        shared = mode | (0o444 & ~_umask())
        if shared != mode:
            os.chmod(dst, shared & 0o7777)
    return dst


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the folder ``src`` to ``dst`` with :func:`link_or_copy`.

    Files that could not be copied (a full disk, an I/O error) are one ``OSError`` naming
    the first of them and its reason, with the count of the others (``shutil.copytree``
    raises a ``shutil.Error`` whose message is the list of every pair).

    Example::

        copy_tree(Path("runs/encoder/final"), Path("bundle.tmp/encoder"))
    """
    try:
        shutil.copytree(src, dst, copy_function=link_or_copy)
    except shutil.Error as exc:
        failed = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        if not failed or not all(isinstance(f, tuple) and len(f) == 3 for f in failed):
            raise
        source, target, why = failed[0]
        code = re.match(r"\[Errno (\d+)\] ([^:]*)", str(why))  # the reason without the paths
        others = f" (and {len(failed) - 1} other file(s))" if len(failed) > 1 else ""
        message = (
            f"cannot copy {source} to {target}{others}: {code.group(2) if code else why}; "
            "nothing was replaced: free space (or fix the disk) and run again"
        )
        raise (OSError(int(code.group(1)), message) if code else OSError(message)) from exc


def _umask() -> int:
    """This process's umask, read without changing it (``0o022`` where it cannot be read)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
