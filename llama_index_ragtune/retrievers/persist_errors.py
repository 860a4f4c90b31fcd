"""The error of a persisted retriever folder that cannot be loaded, and the default fix.

Example::

    from llama_index_ragtune.retrievers.persist_errors import PersistenceError

    raise PersistenceError("idx/docstore.json is missing; " + DEFAULT_HINT)
"""

from __future__ import annotations

__all__ = ["DEFAULT_HINT", "PersistenceError"]

#: The fix named when the caller gives none.
DEFAULT_HINT = "rebuild the retriever and call persist() again"


class PersistenceError(ValueError):
    """A persisted retriever folder is missing, corrupt, edited, or of another format/version."""
