"""User feedback: a SQLite log of answers, ratings and clicks, and the training data it yields.

- ``FeedbackStore``: the log (WAL mode, safe with concurrent and killed writers);
- ``FeedbackQueryEngine``: wraps any LlamaIndex query engine and records each answer;
- exports: ``store.to_retrieval_dataset()`` (encoder / reranker training),
  ``store.to_evaluation_set()`` (fixed held-out queries), ``store.to_preference_pairs()``
  (DPO pairs for the decoder).

Example::

    from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore

    store = FeedbackStore("feedback.sqlite")
    engine = FeedbackQueryEngine(engine, store, bundle_version="v1")
    response = engine.query("apple return policy?")
    store.rate(response.metadata["feedback_id"], +1)
    train = store.to_retrieval_dataset(split="train")
"""

from llama_index_ragtune.feedback.export import (
    LABEL_RULES,
    feedback_evaluation_set,
    feedback_preference_pairs,
    feedback_query_id,
    feedback_retrieval_dataset,
    is_eval_query,
)
from llama_index_ragtune.feedback.recorder import FeedbackQueryEngine
from llama_index_ragtune.feedback.records import FeedbackRecord, FeedbackStats, RetrievedNode
from llama_index_ragtune.feedback.responses import response_fields
from llama_index_ragtune.feedback.schema import SCHEMA_VERSION, FeedbackStoreError
from llama_index_ragtune.feedback.store import FeedbackStore

__all__ = [
    "LABEL_RULES",
    "SCHEMA_VERSION",
    "FeedbackQueryEngine",
    "FeedbackRecord",
    "FeedbackStats",
    "FeedbackStore",
    "FeedbackStoreError",
    "RetrievedNode",
    "feedback_evaluation_set",
    "feedback_preference_pairs",
    "feedback_query_id",
    "feedback_retrieval_dataset",
    "is_eval_query",
    "response_fields",
]
