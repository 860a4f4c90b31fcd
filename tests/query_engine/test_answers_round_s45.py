"""Round s45 of answering, citations and persisted folders: citation markers written with
invisible characters or Unicode digit forms, lone surrogates in the recorded question, an
LLM answering nothing, sources cut inside a grapheme, metadata nested too deeply to index,
and a persisted node carrying a broken embedding."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from llama_index.core import SummaryIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode

from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    CitationFilter,
    build_messages,
    find_citations,
    parse_answer,
    parse_citations,
    strip_citations,
    truncate_source,
)
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.retrievers import HybridRetriever, PersistenceError
from llama_index_ragtune.retrievers.persistence import MAX_METADATA_DEPTH, check_json_mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stub_llm import StubChatLLM  # noqa: E402


class Says(StubChatLLM):
    """Answers ``answer`` (``None``: a ``ChatResponse`` whose content is None), whole or
    streamed in ``chunk``-character deltas."""

    answer: str | None = ""

    def reply(self, messages):
        return self.answer or ""

    def chat(self, messages, **kwargs):
        return ChatResponse(message=ChatMessage(role="assistant", content=self.answer))


TEXTS = ["Paris is the capital of France.", "Rome is the capital of Italy."]


def _engine(llm, texts=TEXTS, **kwargs):
    nodes = [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(texts, 1)]
    return CitationQueryEngine(SummaryIndex(nodes).as_retriever(), llm=llm, **kwargs)


def _answers(llm, question="Capitals?", texts=TEXTS):
    """``(text, metadata)`` of ``query``, ``aquery`` and both streamed: they must agree."""
    out = []
    for streaming in (False, True):
        engine = _engine(llm, texts, streaming=streaming)
        for response in (engine.query(question), asyncio.run(engine.aquery(question))):
            if streaming and hasattr(response, "async_response_gen"):
                response = asyncio.run(response.get_response())
            elif streaming:
                response = response.get_response()
            out.append((response.response, response.metadata))
    return out


# ------------------------------------- 1. invisible characters and digit forms in markers

READ_AS_ONE = [
    "[1\u200b]",  # zero-width space
    "[\u20601]",  # word joiner
    "[1\ufeff]",  # byte-order mark
    "[1\u00ad]",  # soft hyphen
    "[\u200e1\u200f]",  # direction marks
    "[1\ufe0f]",  # variation selector
    "[\u00b9]",  # superscript one
    "[\u2460]",  # circled one
    "[\u2081]",  # subscript one
    "\uff3b\uff11\uff3d",  # full-width brackets and digit
    "[Source\u200b 1]",
]


@pytest.mark.parametrize("marker", READ_AS_ONE)
def test_invisible_characters_and_digit_forms_in_a_marker_read_as_the_citation(marker):
    # before: "[1\u200b]" (shown as "[1]") and "[¹]" were text: the answer was "uncited"
    text = f"Paris is the capital {marker}."
    assert parse_citations(text) == [1]
    (found,) = find_citations(text, 2)
    assert (found.text, found.cited, found.invalid) == (marker, (1,), ())
    assert strip_citations(text) == "Paris is the capital."
    for answer, metadata in _answers(Says(answer=text)):
        assert answer == text  # kept as written
        assert metadata["cited_node_ids"] == ["n1"] and metadata["uncited"] is False


@pytest.mark.parametrize(
    ("marker", "cited", "invalid"),
    [
        ("[\u00b9\u200b, \u00b2]", (1, 2), ()),
        ("[\u00b9-\u00b2]", (1, 2), ()),
        ("[1\u200b2]", (), (12,)),  # shows as "[12]": read as 12, out of range
        ("[\u2468]", (), (9,)),  # circled nine
        ("[\u00b2\u200b, 9\u2060]", (2,), (9,)),
    ],
)
def test_groups_ranges_and_invalid_numbers_in_digit_forms(marker, cited, invalid):
    (found,) = find_citations(f"Rome {marker}.", 2)
    assert (found.cited, found.invalid) == (cited, invalid)
    answer = parse_answer(f"Rome {marker}.", 2)
    assert answer.citations == cited and answer.invalid_citations == invalid
    if not cited:  # a marker naming only missing sources is removed, as "[9]" always was
        assert answer.text == "Rome."


@pytest.mark.parametrize(
    "text",
    [
        "Option [a] or [b].",
        "A [\u200b] gap.",  # nothing but an invisible character
        "Half [\u00bd] a cup.",  # NFKC "1⁄2": not digits
        "Item [x\u200b] here.",
        "See [\u2474] below.",  # parenthesized one: NFKC "(1)", not a digit
        "prose [as noted\u200b above] goes on.",
        "Code `a[1\u200b]` stays.",
    ],
)
def test_brackets_that_are_not_citations_are_unaffected(text):
    assert find_citations(text, 3) == []
    assert strip_citations(text) == text
    assert parse_answer(text, 3).text == text


def test_streaming_a_digit_form_marker_char_by_char_equals_the_whole():
    text = "Paris [\u00b9\u200b]. Rome [\u2461]. Nowhere [\u2468\u2060]."
    whole = CitationFilter(2)
    expected = whole.clean(text)
    chunked = CitationFilter(2)
    shown = "".join(chunked.feed(ch) for ch in text) + chunked.flush()
    assert shown == expected == "Paris [\u00b9\u200b]. Rome [\u2461]. Nowhere."
    assert (chunked.cited, chunked.invalid) == (whole.cited, whole.invalid) == ([1, 2], [9])
    assert CitationFilter(2).clean(expected) == expected  # cleaning twice changes nothing


# ------------------------------------------------------ 2. lone surrogates in the question


def test_the_recorded_question_is_the_clean_text_the_prompt_holds():
    question = "Capital \ud800 of France \udfff?"
    clean = "Capital \ufffd of France \ufffd?"
    assert clean in build_messages(question, ["Paris."])[-1].content
    for _, metadata in _answers(Says(answer="Paris [1]."), question):
        # before: the lone surrogates stayed, and writing the metadata as UTF-8 (a log, a
        # feedback store) failed with "surrogates not allowed"
        assert metadata["question"] == clean
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")


def test_the_question_is_clean_on_every_refusal_path_too():
    nothing = CitationQueryEngine(SummaryIndex([]).as_retriever(), llm=Says(answer="x"))
    assert nothing.query("Where \udc80?").metadata["question"] == "Where \ufffd?"
    blank = _engine(Says(answer="x")).query(" \ud800 ")  # nothing visible: refused unasked
    assert blank.response == DEFAULT_REFUSAL and blank.metadata["question"] == " \ufffd "
    # an ordinary question is recorded exactly as asked, spaces and all
    assert _engine(Says(answer="Paris [1].")).query("  Capital?  ").metadata["question"] == (
        "  Capital?  "
    )


# ----------------------------------------------------------- 3. an LLM answering nothing


@pytest.mark.parametrize("raw", [None, "", "  \n\t", "\u200b\u2060\ufeff"])
def test_an_answer_with_nothing_visible_is_the_refusal_marked_empty(raw):
    # before: "" served as an answer, metadata uncited=True, as if the model had answered
    for text, metadata in _answers(Says(answer=raw)):
        assert text == DEFAULT_REFUSAL
        assert metadata["refused"] is True and metadata["uncited"] is False
        assert metadata["empty_answer"] is True and metadata["finished"] is True
        assert metadata["raw_answer"] == (raw or "")  # the model's own text, kept
        assert metadata["citations"] == [] and metadata["cited_node_ids"] == []


class NoneChunks(StubChatLLM):
    """Streams chunks carrying neither a delta nor content."""

    def reply(self, messages):
        return ""

    def stream_chat(self, messages, **kwargs):
        return iter([ChatResponse(message=ChatMessage(role="assistant", content=None))] * 3)


def test_a_stream_of_empty_chunks_is_the_refusal():
    response = _engine(NoneChunks(), streaming=True).query("Capitals?")
    assert list(response.response_gen) == [DEFAULT_REFUSAL]
    assert response.metadata["empty_answer"] is True and response.metadata["refused"] is True


class Completes(CustomLLM):
    """A completion-only LLM (``complete`` / ``stream_complete``): core's ``chat`` wraps it."""

    text: str = ""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    @llm_completion_callback()
    def complete(self, prompt, formatted=False, **kwargs):
        return CompletionResponse(text=self.text)

    @llm_completion_callback()
    def stream_complete(self, prompt, formatted=False, **kwargs):
        yield CompletionResponse(text=self.text, delta=self.text)


@pytest.mark.parametrize(("text", "empty"), [("", True), (" \u200b", True), ("Paris [1].", False)])
def test_a_completion_llm_answering_nothing_is_the_refusal_too(text, empty):
    for served, metadata in _answers(Completes(text=text)):
        assert (served == DEFAULT_REFUSAL) is empty and metadata["empty_answer"] is empty
        assert metadata["cited_node_ids"] == ([] if empty else ["n1"])


def test_a_stream_holds_leading_invisible_text_until_something_shows():
    llm = Says(answer="\u200b  \u2060Paris [1].", chunk=1)
    response = _engine(llm, streaming=True).query("Capitals?")
    pieces = list(response.response_gen)
    assert "".join(pieces) == "\u200b  \u2060Paris [1]."  # as the whole answer is served
    assert pieces[0].startswith("\u200b  \u2060P")  # held, then shown with the first letter
    assert response.metadata["empty_answer"] is False and response.metadata["cited_node_ids"]


@pytest.mark.parametrize(
    ("raw", "text", "uncited"),
    [
        ("Paris [1].", "Paris [1].", False),
        ("Rome is old.", "Rome is old.", True),
        (DEFAULT_REFUSAL, DEFAULT_REFUSAL, False),
    ],
)
def test_ordinary_answers_are_served_as_before(raw, text, uncited):
    for served, metadata in _answers(Says(answer=raw)):
        assert served == text and metadata["uncited"] is uncited
        assert metadata["empty_answer"] is False


def test_answers_of_markers_alone_are_empty_answers():
    # markers alone say nothing: the refusal, as for an answer with no visible text (s45b)
    response = _engine(Says(answer="[9]")).query("Capitals?")
    assert response.response == DEFAULT_REFUSAL and response.metadata["invalid_citations"] == [9]
    assert response.metadata["uncited"] is False and response.metadata["empty_answer"] is True


# ------------------------------------------------ 4. sources cut inside a grapheme cluster

THAI = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่ใหญ่ที่สุด"
HINDI = "दिल्लीभारतकीराजधानीहैऔरसबसेबड़ाशहरमुंबईहै"


@pytest.mark.parametrize(
    "text",
    [THAI, HINDI, "e\u0301" * 30, "👨‍👩‍👧" * 12 + "🇫🇷" * 10],
    ids=["thai", "hindi", "accents", "emoji"],
)
def test_a_cut_never_parts_a_mark_from_its_letter(text):
    import regex

    boundaries = {0} | {m.end() for m in regex.finditer(r"\X", text)}
    first = min(boundaries - {0})  # a shorter limit cannot keep one grapheme whole
    for max_chars in range(first, len(text)):
        cut = truncate_source(text, max_chars)
        assert cut.endswith(" ...")
        kept = cut[: -len(" ...")]
        # before: "กร ..." for 2 (the vowel sign of "กรุ" cut off), a flag halved
        assert text.startswith(kept) and len(kept) <= max_chars
        assert len(kept) in boundaries and kept
        assert not unicodedata.category(text[len(kept)]).startswith("M")


def test_cuts_of_spaced_text_are_as_before():
    assert truncate_source("one two three four", 9) == "one two ..."
    assert truncate_source("abcdefghij", 4) == "abcd ..."
    assert truncate_source("กรุงเทพ มหานคร เป็นเมืองหลวง", 16) == "กรุงเทพ มหานคร ..."
    # a first grapheme longer than the limit cannot be kept whole: cut at the limit
    assert truncate_source("e" + "\u0301" * 20 + " x", 5) == "e\u0301\u0301\u0301\u0301 ..."


# ----------------------------------------------- 5. metadata nested too deeply to index


class WordEmbedding(BaseEmbedding):
    """Bag-of-words vectors over a small vocabulary; counts the texts it embeds."""

    calls: int = 0
    vocab: tuple[str, ...] = ("apple", "return", "milk", "phone", "store", "hours", "gift")

    @classmethod
    def class_name(cls) -> str:
        return "WordEmbedding"

    def _vector(self, text: str) -> list[float]:
        words = re.findall(r"\w+", text.lower())
        vec = np.array([words.count(v) for v in self.vocab], dtype=np.float32) + 1e-3
        return (vec / np.linalg.norm(vec)).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self.calls += 1
        return self._vector(text)


def _nodes():
    return [
        TextNode(id_="a", text="apple return within 14 days", metadata={"store": "s1"}),
        TextNode(id_="b", text="milk return within 2 days", metadata={"store": "s2"}),
        TextNode(id_="c", text="store hours 8 to 9", metadata={"store": "s1"}),
    ]


def _nested(levels: int) -> dict:
    """Metadata whose value nests ``levels`` dicts inside the top one."""
    value: object = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return {"deep": value}


def test_metadata_deeper_than_the_persist_limit_is_refused_before_anything_is_built():
    embed = WordEmbedding()
    deep = TextNode(id_="deep", text="gift cards", metadata=_nested(985))
    # before: RecursionError from inside LlamaIndex (node hash / get_metadata_str)
    message = rf"from_defaults: the metadata of node 'deep' .* more than {MAX_METADATA_DEPTH}"
    with pytest.raises(ValueError, match=message):
        HybridRetriever.from_defaults(nodes=[*_nodes(), deep], embed_model=embed)
    assert embed.calls == 0  # refused up front: nothing embedded


def test_insert_and_update_refuse_it_and_leave_the_index_as_it_was():
    retriever = HybridRetriever.from_defaults(nodes=_nodes(), embed_model=WordEmbedding())
    before = [n.node.node_id for n in retriever.retrieve("apple return")]
    too_deep = _nested(MAX_METADATA_DEPTH)  # one level past the limit persist holds to
    with pytest.raises(ValueError, match=r"insert_nodes: the metadata of node 'new'"):
        retriever.insert_nodes([TextNode(id_="new", text="gift", metadata=too_deep)])
    with pytest.raises(ValueError, match=r"update_nodes: the metadata of node 'a'"):
        retriever.update_nodes([TextNode(id_="a", text="apple", metadata=too_deep)])
    assert [n.node.node_id for n in retriever.retrieve("apple return")] == before
    assert {n.node_id for n in retriever.sparse_retriever.nodes} == {"a", "b", "c"}
    # the same limit as persist: it refuses that metadata, and takes one level less
    with pytest.raises(ValueError, match="nested too deeply"):
        check_json_mapping(too_deep, "node 'new'", "persist")
    check_json_mapping(_nested(MAX_METADATA_DEPTH - 1), "node 'new'", "persist")


def test_metadata_at_the_limit_is_built_persisted_and_loaded(tmp_path):
    embed = WordEmbedding()
    node = TextNode(id_="d", text="gift cards", metadata=_nested(MAX_METADATA_DEPTH - 1))
    retriever = HybridRetriever.from_defaults(nodes=[*_nodes(), node], embed_model=embed)
    retriever.persist(tmp_path / "h")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=embed)
    assert loaded.sparse_retriever.nodes[-1].metadata == node.metadata


# ------------------------------------------- 6. a persisted node with a broken embedding


def _rehash(folder: Path) -> None:
    """Record the files' current SHA-256 in the manifest, as an editor knowing the format
    would: only the loader's own checks remain."""
    path = folder / "hybrid_retriever.json"
    data = json.loads(path.read_text())
    for rel in data["files"]:
        raw = (folder / rel).read_bytes()
        data["files"][rel] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    path.write_text(json.dumps(data))


def _persisted(tmp_path, embedding) -> tuple[Path, WordEmbedding]:
    """A hybrid folder whose docstore gives node 'b' the stored ``embedding``."""
    embed = WordEmbedding()
    folder = tmp_path / "h"
    HybridRetriever.from_defaults(nodes=_nodes(), embed_model=embed).persist(folder)
    path = folder / "storage" / "docstore.json"
    data = json.loads(path.read_text())
    data["docstore/data"]["b"]["__data__"]["embedding"] = embedding
    path.write_text(json.dumps(data))  # NaN written as JSON's NaN token
    _rehash(folder)
    return folder, embed


@pytest.mark.parametrize(
    ("embedding", "problem"),
    [
        ([math.nan] * 7, "holds NaN or infinite values"),
        ([0.5, math.inf, 0, 0, 0, 0, 0], "holds NaN or infinite values"),
        ([0.5, 0.5, 0.5], "has 3 values where the index has 7"),
    ],
)
def test_a_broken_stored_embedding_is_refused_naming_the_node(tmp_path, embedding, problem):
    folder, embed = _persisted(tmp_path, embedding)
    # before: loaded as is; the node was served carrying it, and inserting it into another
    # index failed there ("NaN or infinite values", "different sizes")
    with pytest.raises(PersistenceError, match=rf"node 'b', whose stored embedding {problem}"):
        HybridRetriever.from_persist_dir(folder, embed_model=embed)


def test_a_sound_stored_embedding_loads_as_before(tmp_path):
    folder, embed = _persisted(tmp_path, WordEmbedding()._vector("milk return"))
    loaded = HybridRetriever.from_persist_dir(folder, embed_model=embed)
    assert [n.node.node_id for n in loaded.retrieve("milk return")][0] == "b"
