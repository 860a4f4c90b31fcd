"""Moved to :mod:`llama_index_ragtune.grounding` (this module is removed in the next change)."""

from llama_index_ragtune.grounding import *  # noqa: F403
from llama_index_ragtune.grounding import _CITATION  # noqa: F401
