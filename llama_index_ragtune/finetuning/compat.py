"""Compatibility with the (deprecated) ``llama-index-finetuning`` package.

When ``llama-index-finetuning`` is installed (extra ``finetuning-compat``), our
engines are virtual subclasses of its abstract bases, so code written against
them keeps working:

- ``EncoderFinetuneEngine`` -> ``BaseEmbeddingFinetuneEngine``
- ``RerankerFinetuneEngine`` -> ``BaseCrossEncoderFinetuningEngine``

Both offer its method names (``finetune()``, ``get_finetuned_model()``), and
datasets saved by its tools (``EmbeddingQAFinetuneDataset.save_json``) load with
``RetrievalDataset.load_json``.

Importing ``llama_index.finetuning`` is not free: about 3 s on top of
sentence-transformers, a ``DeprecationWarning``, and its MistralAI module calls
``logging.basicConfig(level=INFO)`` on stdout. So our engine modules never
import it: if it is already imported they register at once, otherwise a one-shot
import hook registers them the moment anything imports
``llama_index.finetuning.types``. ``register_engines_now()`` forces the import.

Example::

    from llama_index.finetuning.types import BaseEmbeddingFinetuneEngine
    from llama_index_ragtune.finetuning import EncoderFinetuneEngine

    issubclass(EncoderFinetuneEngine, BaseEmbeddingFinetuneEngine)   # True
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
import warnings
from types import ModuleType
from typing import Any, Literal

logger = logging.getLogger(__name__)

TYPES_MODULE = "llama_index.finetuning.types"
INSTALL_HINT = "pip install 'llama-index-ragtune[finetuning-compat]'"
_BASES = {
    "embedding": "BaseEmbeddingFinetuneEngine",
    "cross_encoder": "BaseCrossEncoderFinetuningEngine",
}
_pending: list[tuple[type, str]] = []
_lock = threading.Lock()


def _register_into(module: ModuleType, cls: type, kind: str) -> bool:
    base = getattr(module, _BASES[kind], None)
    if base is None or not hasattr(base, "register"):
        logger.warning(
            "%s has no ABC %s; %s not registered", TYPES_MODULE, _BASES[kind], cls.__name__
        )
        return False
    base.register(cls)
    return True


class _WrappedLoader(importlib.abc.Loader):
    """Runs the real loader, then registers the pending engines into the fresh module."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        with _lock:
            for cls, kind in _pending:
                _register_into(module, cls, kind)
            _pending.clear()

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package...
        return getattr(self._loader, name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Meta-path finder that only intercepts ``llama_index.finetuning.types``, once."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != TYPES_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _WrappedLoader(spec.loader)
        return spec


_hook = _RegisterOnImport()


def register_engine(cls: type, kind: Literal["embedding", "cross_encoder"]) -> bool:
    """Make ``cls`` a virtual subclass of llama-index-finetuning's base for ``kind``.

    Registers now when ``llama_index.finetuning.types`` is already imported (returns
    ``True``), else on its import (returns ``False``; nothing happens if it never is).
    """
    if kind not in _BASES:
        raise ValueError(f"unknown engine kind {kind!r}; use one of {sorted(_BASES)}")
    module = sys.modules.get(TYPES_MODULE)
    if module is not None:
        return _register_into(module, cls, kind)
    with _lock:
        _pending.append((cls, kind))
        if _hook not in sys.meta_path:
            sys.meta_path.insert(0, _hook)
    return False


def finetuning_types() -> ModuleType | None:
    """Import ``llama_index.finetuning.types`` (pending engines get registered), or ``None``.

    ``None`` when llama-index-finetuning is missing or does not import (a broken
    install is logged with the reinstall hint, never raised). The root logger's
    handlers and level are restored after the import.
    """
    if importlib.util.find_spec("llama_index") is None:
        return None
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import llama_index.finetuning.types as types
    except ImportError as err:
        if getattr(err, "name", None) not in {"llama_index.finetuning", TYPES_MODULE}:
            logger.warning(
                "llama-index-finetuning is installed but does not import (%s); reinstall it with: %s",
                err,
                INSTALL_HINT,
            )
        return None
    except Exception as err:  # noqa: BLE001 - a broken optional install must not break training
        logger.warning(
            "llama-index-finetuning does not import (%s: %s); reinstall it with: %s",
            type(err).__name__,
            err,
            INSTALL_HINT,
        )
        return None
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    return types


def register_engines_now() -> bool:
    """Import llama-index-finetuning now so that every engine imported so far is registered."""
    return finetuning_types() is not None
