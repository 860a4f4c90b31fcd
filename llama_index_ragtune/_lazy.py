"""Lazy package exports (PEP 562): a name is imported from its module on first use.

A package lists its public names once, as ``name -> module`` (a module relative to
the package, or a full dotted path), and gets a ``__getattr__`` that imports the
module when the name is first read and a ``__dir__`` that lists the names before
they are loaded. The same names are imported under ``if TYPE_CHECKING:`` in the
package's ``__init__.py`` so type checkers and IDEs see them.

Example::

    # in llama_index_ragtune/retrievers/__init__.py
    from typing import TYPE_CHECKING

    from llama_index_ragtune._lazy import lazy_exports

    if TYPE_CHECKING:
        from llama_index_ragtune.retrievers.hybrid import HybridRetriever

    _EXPORTS = {"HybridRetriever": "hybrid"}
    __all__ = list(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in ``exports``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> module, relative to ``package`` (``"hybrid"``) or a
            full dotted path (``"llama_index_ragtune.data"``).

    Example::

        __getattr__, __dir__ = lazy_exports(__name__, {"HybridRetriever": "hybrid"})
    """

    def module_of(name: str) -> str:
        module = exports[name]
        return module if "." in module else f"{package}.{module}"

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_of(name)), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
