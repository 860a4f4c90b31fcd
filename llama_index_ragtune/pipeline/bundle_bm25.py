"""The bundle's BM25 settings: the index it serves must read text as its manifest says.

A bundle records its run's BM25 settings in ``manifest.json`` (``config.bm25_analyzer``,
``config.bm25_language``, ``config.bm25_stopwords``; absent: the defaults) and its index
records the tokenizer its BM25 was built with. A refresh retunes on the manifest's
settings, so a bundle whose index reads text otherwise (a manifest edited by hand: the
manifest cannot list its own hash) is refused when it loads, naming the setting, instead
of serving one BM25 and tuning on another.

Example::

    from llama_index_ragtune.pipeline.bundle_bm25 import check_served_bm25

    check_served_bm25(folder, manifest, retriever)   # BundleError when they disagree
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.bundle_folders import BundleError
from llama_index_ragtune.pipeline.bundle_names import MANIFEST

_FIX = (
    "the manifest (or the index) was edited: roll back to another version "
    "(set_current_version) or run the tuning again to write a fresh bundle"
)


def manifest_bm25_tokenizer(folder: Path, manifest: dict[str, Any]) -> Any:
    """The ``BM25Tokenizer`` the manifest's BM25 settings describe; ``BundleError`` naming
    the manifest when they are not valid.

    Example::

        manifest_bm25_tokenizer(folder, {"config": {"bm25_stopwords": ["sku"]}}).stopwords_spec
        # ['sku']
    """
    from llama_index_ragtune.retrievers.bm25_index import (
        BM25Text,
        BM25Tokenizer,
        bm25_stopwords_value,
    )

    recorded = manifest.get("config")
    recorded = recorded if isinstance(recorded, dict) else {}
    name = "bm25_analyzer"
    try:
        analyzer = recorded.get(name, "plain")
        name = "bm25_language"
        language = recorded.get(name, "english")
        name = "bm25_stopwords"
        stopwords = bm25_stopwords_value(recorded.get(name, "language"))
        name = "BM25 settings"
        text = BM25Text(analyzer, language, stopwords)
        return BM25Tokenizer(**text.tokenizer_kwargs())
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"{folder / MANIFEST}: 'config.{name}' is not valid: {str(exc)[:300]}; {_FIX}"
        ) from None


def check_served_bm25(folder: Path, manifest: dict[str, Any], retriever: Any) -> None:
    """``BundleError`` naming the setting when the BM25 of ``retriever`` (loaded from the
    bundle's ``index/``) reads text otherwise than the manifest's settings say (analyzer,
    stemmer language, the stopwords it drops). A retriever without our BM25 is left alone.

    Example::

        check_served_bm25(bundle.path, bundle.manifest, bundle.retriever)   # None: they agree
    """
    from llama_index_ragtune.retrievers.bm25_index import BM25Tokenizer

    tokenizer = getattr(getattr(retriever, "sparse_retriever", None), "tokenizer", None)
    if not isinstance(tokenizer, BM25Tokenizer):
        return
    expected = manifest_bm25_tokenizer(folder, manifest)
    served = {
        "bm25_analyzer": (tokenizer.analyzer, expected.analyzer),
        "bm25_language": (tokenizer.language, expected.language),
        # compared as the words dropped: "en" and "english" are one list
        "bm25_stopwords": (tokenizer._stopwords, expected._stopwords),
    }
    for name, (index_value, manifest_value) in served.items():
        if index_value == manifest_value:
            continue
        if name == "bm25_stopwords":
            index_value = shown_stopwords(tokenizer.stopwords_spec)
            manifest_value = shown_stopwords(expected.stopwords_spec)
        raise BundleError(
            f"{folder / MANIFEST}: 'config.{name}' says {manifest_value!r} but the BM25 of "
            f"{folder / 'index'} was built with {index_value!r}: the served retriever and a "
            f"refresh would read text differently; {_FIX}"
        )


def shown_stopwords(value: Any) -> Any:
    """A stopword setting for a message: a long list as its first words and its length.

    Example::

        shown_stopwords([f"w{i}" for i in range(100)])[-1]   # '... (100 words)'
    """
    if isinstance(value, list) and len(value) > 8:
        return [*value[:8], f"... ({len(value)} words)"]
    return value
