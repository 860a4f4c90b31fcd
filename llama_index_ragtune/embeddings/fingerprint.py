"""What a model's vectors depend on, as a short string: the content of its weights.

Every cache of embeddings in the package is keyed by these fingerprints, so a model
retrained in place (same folder, new weights) never answers with its old vectors,
and two copies of the same weights share their cache.

* :func:`model_fingerprint` - a model named by path or hub id: a local file or
  folder by the content of its files (a digest of each, remembered per process
  while the file's size and modification time stay the same), a hub id as given.
* :func:`weights_fingerprint` - a loaded PyTorch module (a ``SentenceTransformer``,
  a ``CrossEncoder``): a digest of every parameter and buffer.
* :func:`encoder_identity` - a sentence-transformers bi-encoder's document vectors:
  its weights, its modules, its maximum length and the document prompt.

Example::

    from sentence_transformers import SentenceTransformer
    from llama_index_ragtune.embeddings.fingerprint import encoder_identity, model_fingerprint
    from llama_index_ragtune.models import default_encoder

    model_fingerprint(str(default_encoder()))          # 'files:3f2a...'
    encoder_identity(SentenceTransformer(str(default_encoder())))
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

__all__ = ["encoder_identity", "model_fingerprint", "weights_fingerprint"]

_CHUNK = 1 << 20
_file_digests: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def model_fingerprint(name_or_path: str) -> str:
    """Identity of a model: a local file or folder by its files' contents; a hub id as given.

    Files named ``README*`` and anything under ``.git`` do not count. Where the model
    lives does not count either: two copies of one model share a fingerprint.

    Example::

        model_fingerprint("runs/encoder/model")     # 'files:<16 hex digits>'
        model_fingerprint("BAAI/bge-small-en-v1.5") # 'hub:BAAI/bge-small-en-v1.5' (no such folder)
    """
    path = Path(name_or_path)
    if not path.exists():
        return f"hub:{name_or_path}"
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts)
    )
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        if file.name.lower().startswith("readme"):
            continue
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        digest.update(f"{name}:{_file_digest(file)};".encode())
    return f"files:{digest.hexdigest()[:16]}"


def _file_digest(file: Path) -> str:
    """A digest of the file's bytes, computed once per (path, size, mtime) in this process."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _file_digests.get(key)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _file_digests[key] = value
    return value


def weights_fingerprint(model: Any) -> str:
    """A digest of a PyTorch module's parameters and buffers (names, dtypes, shapes, bytes).

    Example::

        before = weights_fingerprint(model)
        trainer.train()
        weights_fingerprint(model) != before   # True once any weight moved
    """
    import torch

    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        tensors = [*model.named_parameters(), *model.named_buffers()]
        for name, tensor in tensors:
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{data.dtype}|{tuple(data.shape)};".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"weights:{digest.hexdigest()[:16]}"


def encoder_identity(model: Any, prompt: str | None = None) -> str:
    """What a sentence-transformers bi-encoder's normalised document vectors depend on.

    Args:
        model: a ``SentenceTransformer``.
        prompt: the document prompt passed to ``encode_document`` (``None``: the
            model's own, which ``model.prompts`` holds).

    Example::

        encoder_identity(model) == encoder_identity(copy_of_model)   # True
    """
    modules = ",".join(type(m).__name__ for m in model)
    return (
        f"{type(model).__name__}|{weights_fingerprint(model)}|{modules}|"
        f"{getattr(model, 'max_seq_length', None)}|{prompt}|{getattr(model, 'prompts', None)}"
    )
