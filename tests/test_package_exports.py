"""The lazily loaded package names: listed by dir(), seen by type checkers, importable, cheap."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import llama_index_ragtune

LAZY_PACKAGES = [
    "llama_index_ragtune",
    "llama_index_ragtune.data",
    "llama_index_ragtune.embeddings",
    "llama_index_ragtune.evaluation",
    "llama_index_ragtune.finetuning",
    "llama_index_ragtune.llms",
    "llama_index_ragtune.postprocessor",
    "llama_index_ragtune.retrievers",
]


def _type_checking_names(package: str) -> dict[str, str]:
    """``{name: module}`` imported under ``if TYPE_CHECKING:`` in the package's ``__init__``."""
    source = Path(importlib.import_module(package).__file__).read_text()
    names: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.dump(stmt)
                names.update({alias.name: stmt.module for alias in stmt.names})
    return names


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_are_listed_typed_and_importable(package):
    module = importlib.import_module(package)
    exports = module._EXPORTS
    assert set(exports) <= set(dir(module))
    assert set(exports) <= set(module.__all__)
    typed = _type_checking_names(package)
    assert set(typed) == set(exports), "the TYPE_CHECKING imports and _EXPORTS disagree"
    for name, target in exports.items():
        full = target if "." in target else f"{package}.{target}"
        assert typed[name] == full, f"{package}.{name}: {typed[name]} vs {full}"
        assert getattr(module, name) is getattr(importlib.import_module(full), name)


def test_dir_lists_names_before_they_are_loaded():
    code = (
        "import sys, llama_index_ragtune.retrievers as r\n"
        "assert 'HybridRetriever' in dir(r)\n"
        "assert 'llama_index_ragtune.retrievers.hybrid' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="'llama_index_ragtune' has no attribute 'Nope'"):
        llama_index_ragtune.Nope  # noqa: B018


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, llama_index_ragtune, llama_index_ragtune.retrievers, "
        "llama_index_ragtune.finetuning, llama_index_ragtune.data\n"
        "heavy = {'torch', 'transformers', 'trl', 'sentence_transformers', "
        "'llama_index.core', 'llama_index.finetuning'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_public_name_is_shadowed_by_a_submodule_of_the_same_name():
    # importing a submodule sets the package attribute of its name: a public function
    # named like its module would turn into that module once the module is imported
    for package in LAZY_PACKAGES:
        module = importlib.import_module(package)
        clashes = [n for n, target in module._EXPORTS.items() if target.rsplit(".", 1)[-1] == n]
        assert not clashes, f"{package}: {clashes} share their module's name"
    import llama_index_ragtune.evaluation.generation_report  # noqa: F401
    from llama_index_ragtune.evaluation import trust_score

    assert callable(trust_score) and trust_score.__name__ == "trust_score"
