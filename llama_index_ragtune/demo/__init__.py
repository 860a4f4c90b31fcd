"""The demo corpus shipped with the package: two retailers' help centres and labelled questions.

Example::

    from llama_index_ragtune.demo import demo_dir, load_demo_documents, load_demo_queries

    docs = load_demo_documents()            # LlamaIndex Documents, id_ = path under docs/
    test = load_demo_queries("test")        # dicts with question, store, gold, answer, ...
    demo_dir()                              # the folder, laid out like a user's own corpus
"""

from llama_index_ragtune.demo.corpus import (
    SPLITS,
    demo_dir,
    load_demo_documents,
    load_demo_queries,
)

__all__ = ["SPLITS", "demo_dir", "load_demo_documents", "load_demo_queries"]
