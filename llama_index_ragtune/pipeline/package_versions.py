"""The versions of the packages a bundle depends on, recorded in its manifest.

Example::

    from llama_index_ragtune.pipeline.package_versions import package_versions

    package_versions()["torch"]        # e.g. "2.5.1"; None when not installed
"""

from __future__ import annotations


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a bundle depends on (None: not installed)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    names = (
        "llama-index-ragtune",
        "llama-index-core",
        "sentence-transformers",
        "transformers",
        "trl",
        "peft",
        "torch",
        "faiss-cpu",
        "bm25s",
        "onnxruntime",
    )
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
