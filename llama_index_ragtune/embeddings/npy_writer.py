"""Write a 2-D float array to a ``.npy`` file row block by row block, without knowing its length.

The ``.npy`` header of a 2-D array whose shape has fewer than ~25 digits is
always 128 bytes (numpy pads headers to 64-byte multiples), so the writer
reserves it, appends rows, and writes the real header last. The file goes to a
temporary sibling and is renamed into place only when complete, so a crash never
leaves a truncated ``.npy`` under the final name. Memory use is one block.

Example::

    with NpyRowWriter("vectors.npy", dim=384) as writer:
        for block in blocks:                  # float32 arrays of shape (n_i, 384)
            writer.write(block)
    vectors = np.load("vectors.npy", mmap_mode="r")
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path
from types import TracebackType

import numpy as np

from llama_index_ragtune._atomic import check_file_target

__all__ = ["NpyRowWriter"]

_HEADER_BYTES = 128


def _header(rows: int, dim: int, dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer,
        {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (rows, dim),
        },
    )
    data = buffer.getvalue()
    if len(data) != _HEADER_BYTES:  # pragma: no cover - shapes beyond ~10^20 rows
        raise ValueError(f"cannot stream an array of shape ({rows}, {dim}) into a .npy file")
    return data


class NpyRowWriter:
    """Append row blocks to ``path`` (a ``.npy`` of shape ``(rows, dim)``), committed on close.

    Args:
        path: the final ``.npy`` file; it is replaced only when :meth:`close` succeeds.
        dim: number of columns.
        dtype: element type of the file (blocks are converted to it).

    Example::

        writer = NpyRowWriter("out.npy", dim=3)
        writer.write(np.ones((2, 3)))
        writer.close()        # out.npy now holds a (2, 3) float32 array
    """

    def __init__(
        self, path: str | os.PathLike, dim: int, dtype: str | np.dtype = "float32"
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.path = Path(path).expanduser()
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        check_file_target(self.path)  # before any row is computed and written, not at close
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(
            f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}.npy"
        )
        self._handle: io.BufferedRandom | None = open(self._tmp, "wb+")  # noqa: SIM115
        self._handle.write(_header(0, self.dim, self.dtype))

    def write(self, block: np.ndarray) -> None:
        """Append the rows of ``block`` (shape ``(n, dim)``)."""
        if self._handle is None:
            raise ValueError(f"NpyRowWriter for {self.path} is closed")
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(
                f"block for {self.path} must have shape (n, {self.dim}), got {tuple(block.shape)}"
            )
        np.ascontiguousarray(block, dtype=self.dtype).tofile(self._handle)
        self.rows += int(block.shape[0])

    def close(self) -> Path:
        """Write the header, flush to disk and rename the file into place; returns ``path``."""
        if self._handle is None:
            return self.path
        handle, self._handle = self._handle, None
        try:
            handle.seek(0)
            handle.write(_header(self.rows, self.dim, self.dtype))
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            handle.close()
        try:
            os.replace(self._tmp, self.path)
        except OSError:
            self._tmp.unlink(missing_ok=True)  # never leave a corpus-sized temporary behind
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
