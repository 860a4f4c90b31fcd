"""Fixtures for the demo corpus: its documents, their parsed nodes and the labelled queries."""

from __future__ import annotations

import pytest

from llama_index_ragtune.demo import load_demo_documents, load_demo_queries
from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser


@pytest.fixture(scope="session")
def demo_documents():
    return load_demo_documents()


@pytest.fixture(scope="session")
def demo_nodes(demo_documents):
    """Every page parsed with the parser its suffix calls for (default token cap)."""
    markdown, html = StructuredMarkdownNodeParser(), StructuredHTMLNodeParser()
    nodes = []
    for doc in demo_documents:
        parser = html if doc.id_.endswith(".html") else markdown
        nodes.extend(parser.get_nodes_from_documents([doc]))
    return nodes


@pytest.fixture(scope="session")
def demo_queries():
    return load_demo_queries()


def matches_gold(node, ref: dict) -> bool:
    """The gold contract: same document, and a section path equal to ``ref["section"]`` or below it."""
    path = node.metadata["section_path"]
    section = ref["section"]
    return node.ref_doc_id == ref["doc_id"] and (
        path == section or path.startswith(section + " > ")
    )


@pytest.fixture(scope="session")
def gold_match():
    return matches_gold
