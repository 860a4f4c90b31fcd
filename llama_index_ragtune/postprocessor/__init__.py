"""Node postprocessors: the cross-encoder reranker.

Example::

    from llama_index_ragtune.postprocessor import CrossEncoderRerank
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.postprocessor.cross_encoder import CrossEncoderRerank

_EXPORTS = {
    "CrossEncoderRerank": "cross_encoder",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
