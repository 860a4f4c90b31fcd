"""Moved to :mod:`llama_index_ragtune.grounding` (this module is removed in the next change)."""

from llama_index_ragtune.grounding import *  # noqa: F403
