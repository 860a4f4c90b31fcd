"""Round s45b of the citation query engine and reranker: an answer of citation markers alone
is the refusal (whole and streamed), ``Settings.llm = None`` is a clear error rather than the
echoed prompt served as an answer, rerankers over one folder share one model, and a node
showing no text never takes a ``top_n`` place from one that does."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from pathlib import Path

import pytest
from llama_index.core import Settings, SummaryIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llama_index_ragtune.grounding import DEFAULT_REFUSAL
from llama_index_ragtune.postprocessor import CrossEncoderRerank
from llama_index_ragtune.query_engine import CitationQueryEngine
from tests.postprocessor.tiny_cross_encoder import save_tiny_cross_encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stub_llm import StubChatLLM  # noqa: E402

TEXTS = ["Paris is the capital of France.", "Rome is the capital of Italy.", "Bern is Swiss."]


class Says(StubChatLLM):
    """Answers ``answer``, whole or streamed in ``chunk``-character deltas."""

    answer: str = ""

    def reply(self, messages):
        return self.answer


def _nodes(texts=TEXTS):
    return [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(texts, 1)]


def _served(llm, question="Capitals?"):
    """``(shown, metadata)`` of ``query``, ``aquery`` and both streamed (the text a reader
    of the stream saw)."""
    out = []
    for streaming in (False, True):
        engine = CitationQueryEngine(
            SummaryIndex(_nodes()).as_retriever(), llm=llm, streaming=streaming
        )
        response = engine.query(question)
        shown = "".join(response.response_gen) if streaming else response.response
        out.append((shown, response.metadata))
        response = asyncio.run(engine.aquery(question))
        if streaming:

            async def read(r=response):
                return "".join([t async for t in r.async_response_gen()])

            shown = asyncio.run(read())
        else:
            shown = response.response
        out.append((shown, response.metadata))
    return out


# ---------------------------------------------------------- 1. markers alone say nothing
@pytest.mark.parametrize("chunk", [1, 3, 100])
@pytest.mark.parametrize(
    ("raw", "invalid"),
    [
        ("[1]", []),
        ("[9]", [9]),
        ("[1] [2]", []),
        ("[12[9]]", [9, 12]),
        ("[1] [2].", []),
        ("  [2]\n", []),
        ("\u200b[1]\u200f", []),
        ("[1, 7]", [7]),
        (".", []),
    ],
)
def test_an_answer_of_markers_alone_is_the_refusal_whole_and_streamed(raw, invalid, chunk):
    # was: served as "" and counted an uncited answer, while a stream showed "[1]"
    for shown, metadata in _served(Says(answer=raw, chunk=chunk)):
        assert shown == DEFAULT_REFUSAL  # the stream never showed a marker first
        assert metadata["empty_answer"] is True and metadata["refused"] is True
        assert metadata["uncited"] is False and metadata["cited_node_ids"] == []
        assert metadata["raw_answer"] == raw and metadata["finished"] is True
        assert sorted(metadata["invalid_citations"]) == invalid  # what it named, kept


@pytest.mark.parametrize("chunk", [1, 3, 100])
@pytest.mark.parametrize(
    ("raw", "text", "cited"),
    [
        ("Paris [1].", "Paris [1].", ["n1"]),
        ("[2] Rome.", "[2] Rome.", ["n2"]),
        ("\u2014 Rome [2].", "\u2014 Rome [2].", ["n2"]),
        ("[1] [2] 3", "[1] [2] 3", ["n1", "n2"]),  # a digit is something said
        ("`[1]` is a list.", "`[1]` is a list.", []),  # code: no citation, but words
        (DEFAULT_REFUSAL, DEFAULT_REFUSAL, []),
    ],
)
def test_answers_that_say_something_are_served_as_before(raw, text, cited, chunk):
    for shown, metadata in _served(Says(answer=raw, chunk=chunk)):
        assert shown == text and metadata["empty_answer"] is False
        assert metadata["cited_node_ids"] == cited and metadata["raw_answer"] == raw


def test_a_stream_shows_an_answer_as_soon_as_it_says_something():
    # markers are held only while nothing is said: the first word releases them
    engine = CitationQueryEngine(
        SummaryIndex(_nodes()).as_retriever(),
        llm=Says(answer="[1] Paris is the capital of France.", chunk=4),
        streaming=True,
    )
    pieces = list(engine.query("Capital of France?").response_gen)
    assert (
        pieces[0].startswith("[1] P") and "".join(pieces) == "[1] Paris is the capital of France."
    )


# ------------------------------------------------------------ 2. Settings.llm = None
def test_settings_llm_none_is_a_clear_error_not_the_echoed_prompt(monkeypatch):
    # was: MockLLM echoed the system prompt and sources, served as an answer citing [1]
    monkeypatch.setattr(Settings, "_llm", Settings._llm)
    Settings.llm = None  # LlamaIndex stands in MockLLM() (it echoes the prompt)
    retriever = SummaryIndex(_nodes()).as_retriever()
    retrieved = []
    monkeypatch.setattr(retriever, "_retrieve", lambda q: retrieved.append(q) or [])
    for streaming in (False, True):
        engine = CitationQueryEngine(retriever, streaming=streaming)
        with pytest.raises(ValueError, match=r"Settings\.llm is None.*Settings\.llm = "):
            engine.query("Capitals?")
        with pytest.raises(ValueError, match=r"engine\.retrieve\(QueryBundle"):
            asyncio.run(engine.aquery("Capitals?"))
    assert retrieved == []  # refused before retrieval: the same answer whatever is found
    engine = CitationQueryEngine(SummaryIndex(_nodes()).as_retriever())
    assert [n.node.node_id for n in engine.retrieve(QueryBundle("x"))] == ["n1", "n2", "n3"]


def test_a_mock_llm_that_does_not_echo_answers_as_before(monkeypatch):
    monkeypatch.setattr(Settings, "_llm", Settings._llm)
    Settings.llm = MockLLM(max_tokens=3)
    engine = CitationQueryEngine(SummaryIndex(_nodes()).as_retriever())
    response = engine.query("Capitals?")
    assert response.response == "text text text" and response.metadata["uncited"] is True
    explicit = CitationQueryEngine(SummaryIndex(_nodes()).as_retriever(), llm=MockLLM(max_tokens=2))
    assert explicit.query("Capitals?").response == "text text"


# --------------------------------------------------------------------- 3. the reranker
def _save_cross_encoder(folder: Path, seed: int) -> Path:
    from llama_index_ragtune.models import default_encoder

    return save_tiny_cross_encoder(folder, default_encoder(), seed=seed, name="model")


def test_rerankers_over_one_folder_share_one_model_across_threads(tmp_path, monkeypatch):
    folder = _save_cross_encoder(tmp_path, seed=0)
    loads = []
    original = CrossEncoderRerank._load

    def counted(self):
        loads.append(self.model)
        return original(self)

    monkeypatch.setattr(CrossEncoderRerank, "_load", counted)
    rerankers = [CrossEncoderRerank(folder, top_n=None) for _ in range(4)]
    nodes = [
        NodeWithScore(node=TextNode(id_=str(i), text=f"text {i} " * (2 + i))) for i in range(6)
    ]
    ranked, errors = {}, []

    def work(i):
        try:
            got = rerankers[i].postprocess_nodes(nodes, query_str="text 3")
            ranked[i] = [(n.node.node_id, n.score) for n in got]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(ranked) == 4 and len(set(map(tuple, ranked.values()))) == 1
    assert len(loads) == 1  # was 4: each reranker held its own copy of the weights
    assert len({id(r.cross_encoder) for r in rerankers}) == 1
    other = CrossEncoderRerank(folder, top_n=None, max_length=16)  # other settings: its own
    assert other.cross_encoder is not rerankers[0].cross_encoder


def test_a_model_saved_again_is_loaded_afresh_and_a_dropped_one_freed(tmp_path):
    import weakref

    folder = _save_cross_encoder(tmp_path, seed=0)
    first = CrossEncoderRerank(folder).cross_encoder
    gone = weakref.ref(first)
    _save_cross_encoder(tmp_path, seed=1)  # retrained into the same folder
    second = CrossEncoderRerank(folder).cross_encoder
    assert second is not first
    del first
    gc.collect()
    assert gone() is None  # no reranker holds it: not kept by the sharing


class ScoresBlankHighest:
    """A stand-in cross-encoder scoring a pair higher the shorter its text (an empty passage
    highest), as a badly trained model may."""

    num_labels = 1
    max_length = 512

    def predict(self, pairs, **kwargs):
        return [1.0 / (1.0 + len(text.strip())) for _, text in pairs]


@pytest.mark.parametrize("retrieval_weight", [0.0, 0.5])
def test_a_node_showing_no_text_never_takes_a_place_from_one_that_does(retrieval_weight):
    reranker = CrossEncoderRerank(ScoresBlankHighest(), top_n=2, retrieval_weight=retrieval_weight)
    texts = {
        "empty": "",
        "space": " \n\t",
        "hidden": "\u200b\u200f\x00",
        "a": "Rome.",
        "b": "Paris is big.",
    }
    nodes = [NodeWithScore(node=TextNode(id_=k, text=t), score=0.5) for k, t in texts.items()]
    nodes[-1].score = 0.9
    ranked = reranker.postprocess_nodes(nodes, query_str="capital?")
    assert [n.node.node_id for n in ranked] in (["a", "b"], ["b", "a"])  # was: the blank ones
    reranker.top_n = None
    everything = reranker.postprocess_nodes(nodes, query_str="capital?")
    assert {n.node.node_id for n in everything[:2]} == {"a", "b"}
    scores = [n.score for n in everything]
    assert scores == sorted(scores, reverse=True)  # still in order of score


def test_rerankers_with_text_everywhere_rank_as_before():
    reranker = CrossEncoderRerank(ScoresBlankHighest(), top_n=None)
    nodes = [NodeWithScore(node=TextNode(id_=t, text=t)) for t in ("ccc", "a", "bb")]
    ranked = reranker.postprocess_nodes(nodes, query_str="q")
    assert [n.node.node_id for n in ranked] == ["a", "bb", "ccc"]
    assert [n.score for n in ranked] == [0.5, 1 / 3, 0.25]
