"""The benchmark harness of llama-index-ragtune (a source checkout only, not installed with the package).

Each module is a script that uses only the public API of ``llama_index_ragtune`` and
writes its results (JSON + Markdown, paths relative to the repository, the exact
command recorded) into ``--out``. Run them as ``python -m benchmarks.<name>`` from
the repository root, or through ``ragtune bench <name>``.
"""

HARNESS_OF = "llama-index-ragtune"
