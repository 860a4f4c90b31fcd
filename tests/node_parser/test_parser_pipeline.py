"""The parsers inside an IngestionPipeline, and the "apple" scenario across two stores."""

from __future__ import annotations

import pickle

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import NodeRelationship
from np_helpers import fixture, whitespace_tokens

from llama_index_ragtune.node_parser import StructuredHTMLNodeParser, StructuredMarkdownNodeParser

GROCERY = {
    "store": "FreshMart",
    "department": "Grocery",
    "url": "https://freshmart.example/help/returns",
}
ELECTRONICS = {"store": "VoltHub", "department": "Electronics", "brand": "Apple"}


def help_centre_documents() -> list[Document]:
    return [
        Document(text=fixture("grocery_help.html"), id_="freshmart-returns", metadata=GROCERY),
        Document(
            text=fixture("electronics_help.html"), id_="volthub-returns", metadata=ELECTRONICS
        ),
    ]


def html_parser() -> StructuredHTMLNodeParser:
    return StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=128)


def the_node(nodes, doc_id: str, needle: str):
    found = [n for n in nodes if n.ref_doc_id == doc_id and needle in n.text]
    assert len(found) == 1, [n.text for n in found]
    return found[0]


def test_apple_scenario_sections_and_store_metadata():
    nodes = IngestionPipeline(transformations=[html_parser()]).run(
        documents=help_centre_documents()
    )

    perishables = the_node(nodes, "freshmart-returns", "apples")
    assert perishables.metadata["section_path"] == "Returns & refunds > Perishables"
    assert perishables.metadata["section_title"] == "Perishables"
    assert perishables.text.startswith("## Perishables\n\n")
    assert "Report the problem within 48 hours" in perishables.text
    for key, value in GROCERY.items():
        assert perishables.metadata[key] == value
    assert "Non-food" not in perishables.text and "30 days" not in perishables.text

    opened = the_node(nodes, "volthub-returns", "14 days if they are complete")
    assert opened.metadata["section_path"] == "Support > Returns > Opened-box returns (14 days)"
    assert opened.text.startswith("### Opened-box returns (14 days)\n\n")
    assert "Apple iPhone" in opened.text and "| Laptops | Free | 15% |" in opened.text
    for key, value in ELECTRONICS.items():
        assert opened.metadata[key] == value
    assert "fault within the first year" not in opened.text  # the next section is its own node

    # every node carries its own document's store, and no node mixes the two pages
    for node in nodes:
        expected = GROCERY if node.ref_doc_id == "freshmart-returns" else ELECTRONICS
        assert {k: node.metadata[k] for k in expected} == expected
        assert node.relationships[NodeRelationship.SOURCE].node_id == node.ref_doc_id


def test_markdown_parser_in_a_pipeline_with_prev_next():
    doc = Document(text=fixture("store_guide.md"), id_="guide", metadata={"store": "FreshMart"})
    parser = StructuredMarkdownNodeParser(tokenizer=whitespace_tokens, chunk_size=40)
    nodes = IngestionPipeline(transformations=[parser]).run(documents=[doc])
    assert len(nodes) > 3
    for prev, node in zip(nodes[:-1], nodes[1:], strict=True):
        assert node.relationships[NodeRelationship.PREVIOUS].node_id == prev.node_id
        assert prev.relationships[NodeRelationship.NEXT].node_id == node.node_id
    assert all(n.metadata["store"] == "FreshMart" for n in nodes)
    assert any(n.metadata["section_path"].endswith("Perishables") for n in nodes)


async def test_async_pipeline_gives_the_same_nodes():
    parser = html_parser()
    docs = help_centre_documents()
    sync_nodes = IngestionPipeline(transformations=[parser]).run(documents=docs)
    async_nodes = await IngestionPipeline(transformations=[parser]).arun(documents=docs)
    assert [n.text for n in async_nodes] == [n.text for n in sync_nodes]
    assert [n.metadata for n in async_nodes] == [n.metadata for n in sync_nodes]


def test_bad_document_in_a_pipeline_names_it():
    docs = [*help_centre_documents(), Document(text="\x00\x01PK\x03\x04", id_="upload.zip")]
    with pytest.raises(ValueError, match="upload.zip"):
        IngestionPipeline(transformations=[html_parser()]).run(documents=docs)


def test_parsers_pickle_for_multiprocess_pipelines():
    docs = help_centre_documents()
    for parser in (html_parser(), StructuredHTMLNodeParser(chunk_size=64)):
        clone = pickle.loads(pickle.dumps(parser))
        assert [n.text for n in clone(docs)] == [n.text for n in parser(docs)]


def test_unpicklable_tokenizer_fails_clearly_after_a_round_trip():
    parser = StructuredHTMLNodeParser(tokenizer=lambda text: text.split(), chunk_size=64)
    assert parser.to_dict()["tokenizer_callable"].endswith("<lambda>")
    clone = pickle.loads(pickle.dumps(parser))
    with pytest.raises(ValueError, match="lambda"):
        clone(help_centre_documents())


def _doc_id(i: int, doc) -> str:
    return f"{doc.node_id}-part-{i}"


def test_to_dict_from_dict_round_trip():
    docs = help_centre_documents()
    for parser in (StructuredHTMLNodeParser(chunk_size=64), StructuredMarkdownNodeParser()):
        data = parser.to_dict()
        clone = type(parser).from_dict(data)
        assert clone.to_dict() == data
        assert type(parser).from_json(parser.to_json()).to_dict() == data
    html = StructuredHTMLNodeParser(chunk_size=64, parser_features="html.parser")
    assert [n.text for n in StructuredHTMLNodeParser.from_dict(html.to_dict())(docs)] == [
        n.text for n in html(docs)
    ]


def test_from_dict_asks_for_callables_saved_by_name_only():
    parser = StructuredHTMLNodeParser(tokenizer=whitespace_tokens, chunk_size=64, id_func=_doc_id)
    data = parser.to_dict()
    with pytest.raises(ValueError, match="_doc_id.*id_func=my_id_func"):
        StructuredHTMLNodeParser.from_dict(data)
    clone = StructuredHTMLNodeParser.from_dict(data, id_func=_doc_id, tokenizer=whitespace_tokens)
    nodes = clone(help_centre_documents())
    assert nodes[0].node_id == "freshmart-returns-part-0"
    assert [n.text for n in nodes] == [n.text for n in parser(help_centre_documents())]
    no_tokenizer = StructuredHTMLNodeParser.from_dict(data, id_func=_doc_id)
    with pytest.raises(ValueError, match="did not survive serialisation"):
        no_tokenizer(help_centre_documents())
