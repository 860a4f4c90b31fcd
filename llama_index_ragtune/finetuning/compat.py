"""Compatibility with the (deprecated) ``llama-index-finetuning`` package.

When ``llama-index-finetuning`` is installed (extra ``finetuning-compat``), our
engines become virtual subclasses of its abstract bases, so code written
against them keeps working:

- ``EncoderFinetuneEngine`` -> ``BaseEmbeddingFinetuneEngine``
- ``RerankerFinetuneEngine`` -> ``BaseCrossEncoderFinetuningEngine``
- ``DecoderFinetuneEngine`` -> ``BaseLLMFinetuneEngine``

All offer its method names (``finetune()``, ``get_finetuned_model()``), and
datasets saved by its tools (``EmbeddingQAFinetuneDataset.save_json``) load with
``RetrievalDataset.load_json``.

Nothing happens at import time: importing ``llama_index.finetuning`` costs about
3 s, a ``DeprecationWarning`` and (its MistralAI module) a ``logging.basicConfig``
on stdout, so our modules never import it on their own. Registration happens

- when an engine is created and ``llama_index.finetuning.types`` is already
  imported (the user imported it: code written against its bases), or
- when ``register_engines()`` is called; it imports the package (restoring the
  root logger afterwards) and registers every engine.

Example::

    from llama_index.finetuning.types import BaseEmbeddingFinetuneEngine
    from llama_index_ragtune.finetuning import EncoderFinetuneEngine
    from llama_index_ragtune.finetuning.compat import register_engines

    register_engines()
    issubclass(EncoderFinetuneEngine, BaseEmbeddingFinetuneEngine)   # True
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from types import ModuleType

logger = logging.getLogger(__name__)

TYPES_MODULE = "llama_index.finetuning.types"
INSTALL_HINT = "pip install 'llama-index-ragtune[finetuning-compat]'"
#: engine kind -> llama-index-finetuning base class name
BASES = {
    "encoder": "BaseEmbeddingFinetuneEngine",
    "reranker": "BaseCrossEncoderFinetuningEngine",
    "decoder": "BaseLLMFinetuneEngine",
}
#: our engines, by module and class name (imported only by ``register_engines``)
ENGINES = (
    ("llama_index_ragtune.finetuning.encoder", "EncoderFinetuneEngine"),
    ("llama_index_ragtune.finetuning.reranker", "RerankerFinetuneEngine"),
    ("llama_index_ragtune.finetuning.decoder", "DecoderFinetuneEngine"),
)


def _register_into(module: ModuleType, cls: type) -> bool:
    name = BASES.get(getattr(cls, "kind", ""))
    base = getattr(module, name, None) if name else None
    if base is None or not hasattr(base, "register"):
        logger.debug("%s has no ABC for %s; not registered", TYPES_MODULE, cls.__name__)
        return False
    if not issubclass(cls, base):
        base.register(cls)
    return True


def register_if_loaded(cls: type) -> bool:
    """Register ``cls`` when ``llama_index.finetuning.types`` is already imported (no import here)."""
    module = sys.modules.get(TYPES_MODULE)
    return False if module is None else _register_into(module, cls)


def finetuning_types() -> ModuleType | None:
    """Import ``llama_index.finetuning.types``, or ``None`` when it is missing or broken.

    A broken install is logged with the reinstall hint, never raised. The root
    logger's handlers and level are restored after the import.
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
        module = sys.modules.get(TYPES_MODULE)
        if module is not None:  # the package __init__ failed after types loaded
            return module
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


def register_engines() -> bool:
    """Import llama-index-finetuning and register every engine (``False`` when it is not installed)."""
    types = finetuning_types()
    if types is None:
        return False
    for module_name, class_name in ENGINES:
        _register_into(types, getattr(importlib.import_module(module_name), class_name))
    return True
