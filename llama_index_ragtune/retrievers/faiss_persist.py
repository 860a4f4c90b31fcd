"""The two files of a persisted :class:`~llama_index_ragtune.retrievers.faiss_store.FilterableFaissVectorStore`:
the FAISS index (FAISS' own binary format) and, beside it, ``<name>.metadata.json``.

Both are opened without blocking and checked to be plain files on the opened
descriptor (a named pipe, a device, a link to ``/dev/zero`` is named, never read), and
the metadata file is read through the shared capped reader
(:func:`llama_index_ragtune._atomic_reads.read_capped`): never past
:func:`metadata_cap` bytes, 16 MiB plus 256 KiB per stored vector. ``persist`` refuses
metadata over that cap before writing, so what it writes always loads.

Example::

    write_faiss_file(faiss.IndexFlatIP(8), Path("idx/vectors.faiss"))
    index = read_faiss_file(Path("idx/vectors.faiss"))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_path
from llama_index_ragtune._atomic_reads import open_plain_fd, read_capped
from llama_index_ragtune.retrievers.persist_errors import PersistenceError

__all__ = [
    "METADATA_SUFFIX",
    "header_vector_count",
    "metadata_cap",
    "nonfinite_vectors",
    "read_faiss_file",
    "write_faiss_file",
]

METADATA_SUFFIX = ".metadata.json"
_BASE_CAP = 16 << 20
_PER_VECTOR = 256 << 10


def metadata_cap(num_vectors: int) -> int:
    """The most bytes a metadata file of ``num_vectors`` vectors may hold (16 MiB + 256 KiB
    per vector: node metadata is short, LlamaIndex keeps it under the chunk size).

    Example::

        metadata_cap(1000)   # 278921216 (266 MiB)
    """
    return _BASE_CAP + max(0, int(num_vectors)) * _PER_VECTOR


def check_metadata_size(text: str, metadata: list[dict[str, Any]], num_vectors: int) -> None:
    """Refuse (``ValueError``, before anything is written) metadata that no loader would read."""
    size, cap = len(text.encode("utf-8")), metadata_cap(num_vectors)
    if size <= cap:
        return
    sizes = [len(str(m)) for m in metadata] or [0]
    largest = max(range(len(sizes)), key=sizes.__getitem__)
    raise ValueError(
        f"FilterableFaissVectorStore.persist: the filterable metadata of the {num_vectors} vectors "
        f"takes {size >> 20} MiB, more than the {cap >> 20} MiB a loader reads (16 MiB + 256 KiB "
        f"per vector; the largest is at position {largest}, about {sizes[largest] >> 10} KiB); "
        "nothing was written: keep long text in the node text, not in its metadata"
    )


def write_faiss_file(index: Any, path: str | os.PathLike) -> None:
    """Write the FAISS ``index`` to ``path`` atomically, streamed through a Python file.

    ``faiss.write_index`` takes a file name only as a UTF-8 ``str``: a folder named in
    another encoding (Latin-1 ``caf\\xe9`` on Linux, seen by Python as a surrogate escape)
    was a bare ``TypeError``. Streaming writes any path the system accepts, without a
    second copy of the index in memory (``faiss.serialize_index`` would make one).

    Example::

        write_faiss_file(faiss.IndexFlatIP(8), Path("idx/vectors.faiss"))
    """
    import faiss

    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))


def read_faiss_file(path: str | os.PathLike) -> Any:
    """The FAISS index in the file ``path`` (any path the system accepts; see
    :func:`write_faiss_file`). A damaged file is FAISS' ``RuntimeError``; anything but a
    plain file (a named pipe, a device) is a ``PersistenceError`` naming it, never read.

    Example::

        index = read_faiss_file(Path("idx/vectors.faiss"))
    """
    import faiss

    fd = open_plain_fd(
        path,
        lambda kind: PersistenceError(
            f"{os.fspath(path)} is {kind}, not a FAISS index file; it was not read (it could "
            "block or never end): rebuild the index and persist again"
        ),
    )
    with os.fdopen(fd, "rb") as src:
        return faiss.read_index(faiss.PyCallbackIOReader(src.read))


def header_vector_count(path: str | os.PathLike) -> int:
    """The vector count in the header of the FAISS file ``path`` (every index type FAISS
    writes starts with a four-letter code, the dimension and the count), read without
    parsing the index; at most the file's size, 0 when there is no such header."""
    try:
        with open(path, "rb") as src:
            head, size = src.read(16), os.fstat(src.fileno()).st_size
    except OSError:
        return 0
    if len(head) < 16:
        return 0
    return max(0, min(int.from_bytes(head[8:16], "little", signed=True), size))


def read_metadata_bytes(meta_path: Path, num_vectors: int, fix: str) -> bytes:
    """The metadata file's bytes, at most :func:`metadata_cap` (``PersistenceError`` naming
    the file when it is longer, or not a plain file)."""
    cap = metadata_cap(num_vectors)
    try:
        raw = read_capped(meta_path, cap, fix, error=PersistenceError)
    except FileNotFoundError:
        raise PersistenceError(f"{meta_path} (metadata for filters) is missing; {fix}") from None
    if len(raw) > cap:
        raise PersistenceError(
            f"{meta_path} holds more than {cap >> 20} MiB (16 MiB + 256 KiB for each of the "
            f"{num_vectors} vectors; persist() writes less): it was not written for this index "
            f"and was not read whole; {fix}"
        )
    return raw


def _flat_storage(index: Any) -> Any:
    """The ``IndexFlat`` holding ``index``'s full vectors (itself, or an HNSW graph's storage);
    ``None`` for index types that keep only codes (IVF lists, product quantisation)."""
    import faiss

    if isinstance(index, faiss.IndexHNSW):
        index = faiss.downcast_index(index.storage)
    return index if isinstance(index, faiss.IndexFlat) else None


def _bad_rows(vectors: Any, chunk_rows: int) -> list[int]:
    import numpy as np

    bad: list[int] = []
    for start in range(0, len(vectors), chunk_rows):
        rows = vectors[start : start + chunk_rows]
        bad.extend(int(i) + start for i in np.flatnonzero(~np.isfinite(rows).all(axis=1)))
    return bad


def _ivf_problems(index: Any, chunk_rows: int) -> list[int]:
    """Stored ids of an IVF index whose full vector (IVF-flat lists) holds NaN / infinity;
    ``[-1]`` when the coarse centroids or product-quantisation codebooks do (every search
    through them is wrong)."""
    import faiss
    import numpy as np

    quantizer = _flat_storage(faiss.downcast_index(index.quantizer))
    if (
        quantizer is not None
        and quantizer.ntotal
        and _bad_rows(_flat_vectors(quantizer), chunk_rows)
    ):
        return [-1]
    if isinstance(index, faiss.IndexIVFPQ):
        books = faiss.vector_to_array(index.pq.centroids)
        return [-1] if not np.isfinite(books).all() else []
    if not isinstance(index, faiss.IndexIVFFlat):
        return []
    lists, dim, bad = index.invlists, int(index.d), []
    for number in range(int(index.nlist)):
        size = int(lists.list_size(number))
        if not size:
            continue
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * dim * 4)
        rows = _bad_rows(codes.view(np.float32).reshape(size, dim), chunk_rows)
        if rows:
            ids = faiss.rev_swig_ptr(lists.get_ids(number), size)
            bad.extend(int(ids[row]) for row in rows)
    return sorted(bad)


def _flat_vectors(flat: Any) -> Any:
    import faiss

    total, dim = int(flat.ntotal), int(flat.d)
    return faiss.rev_swig_ptr(flat.get_xb(), total * dim).reshape(total, dim)


def nonfinite_vectors(index: Any, chunk_rows: int = 65_536) -> list[int]:
    """Positions of stored vectors holding NaN or infinity (flat, HNSW, IVF-flat: read in
    place, a chunk at a time); ``[-1]`` when an IVF index's centroids or codebooks do;
    ``[]`` for sound indexes and types that keep no floats.

    ``add`` refuses such vectors, so one in a loaded file is damage or an edit: it is
    never found (every score with it is NaN) and could come out of a search in any order.

    Example::

        index = faiss.IndexFlatIP(4); index.add(np.ones((2, 4), dtype="float32"))
        nonfinite_vectors(index)   # []
    """
    import faiss

    if isinstance(index, faiss.IndexIVF):
        return _ivf_problems(index, chunk_rows)
    flat = _flat_storage(index)
    if flat is None or flat.ntotal == 0:
        return []
    return _bad_rows(_flat_vectors(flat), chunk_rows)
