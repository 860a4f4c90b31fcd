"""Hostile answering, round s40: streams without deltas, sources that cannot be cut at a
sentence, metadata that overflows the window, refusal policies saved with NaN."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence

from llama_index.core import SummaryIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.schema import MetadataMode, TextNode
from stub_llm import StubChatLLM

from llama_index_ragtune.llms.refusal_policy import DecoderRefusalPolicy
from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy
from llama_index_ragtune.query_engine import CitationQueryEngine


class Scripted(StubChatLLM):
    """Answers ``text``; counts its calls; with ``no_delta`` its stream chunks carry
    ``delta=None`` and the answer so far (``cumulative``) or each piece as ``message.content``."""

    text: str = "Rome [1]."
    calls: int = 0
    no_delta: bool = False
    cumulative: bool = True

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        self.calls += 1
        return self.text

    def stream_chat(self, messages, **kwargs):
        if not self.no_delta:
            return super().stream_chat(messages, **kwargs)
        answer = self.reply(messages)
        pieces = [answer[i : i + self.chunk] for i in range(0, len(answer), self.chunk)]

        def gen():
            so_far = ""
            for piece in pieces:
                so_far += piece
                content = so_far if self.cumulative else piece
                yield ChatResponse(message=ChatMessage(role="assistant", content=content))

        return gen()


def _nodes() -> list[TextNode]:
    return [
        TextNode(id_="rome", text="Rome is the capital of Italy."),
        TextNode(id_="paris", text="Paris is the capital of France."),
    ]


def _engine(llm: Scripted, nodes=None, **kwargs) -> CitationQueryEngine:
    return CitationQueryEngine(SummaryIndex(nodes or _nodes()).as_retriever(), llm=llm, **kwargs)


# ----------------------------------------------------------- streams without deltas
def test_stream_of_chunks_without_delta_reads_their_content():
    llm = Scripted(text="Rome is the capital [1] and [9] Paris [2].", no_delta=True, chunk=1)
    response = _engine(llm, streaming=True).query("Capitals?")
    text = "".join(response.response_gen)
    # was '' and no citation: every chunk's delta was None, the answer silently lost
    assert text == "Rome is the capital [1] and Paris [2]."
    assert response.metadata["cited_node_ids"] == ["rome", "paris"]
    assert response.metadata["invalid_citations"] == [9]
    assert text == _engine(Scripted(text=llm.text)).query("Capitals?").response


def test_stream_of_pieces_as_content_without_delta_keeps_every_piece():
    llm = Scripted(text="Rome [1]. Paris [2].", no_delta=True, cumulative=False, chunk=4)
    response = _engine(llm, streaming=True).query("Capitals?")
    assert "".join(response.response_gen) == "Rome [1]. Paris [2]."
    assert response.metadata["cited_node_ids"] == ["rome", "paris"]


def test_async_stream_without_delta_reads_their_content():
    llm = Scripted(text="Paris [2].", no_delta=True, chunk=2)

    async def run():
        response = await _engine(llm, streaming=True).aquery("Capital of France?")
        return "".join([x async for x in response.async_response_gen()]), response.metadata

    text, metadata = asyncio.run(run())
    assert text == "Paris [2]."
    assert metadata["cited_node_ids"] == ["paris"] and metadata["finished"]


# ----------------------------------------- a top source that cannot be cut at a sentence
def _fit_case(big_text: str, **node_kwargs) -> tuple[Scripted, object]:
    nodes = [TextNode(id_="big", text=big_text, **node_kwargs), *_nodes()]
    llm = Scripted(text="Rome [1].")
    return llm, _engine(llm, nodes, **({"metadata_mode": MetadataMode.LLM} if node_kwargs else {}))


def test_one_huge_sentence_on_top_is_left_out_and_the_next_sources_answer():
    llm, engine = _fit_case("Rome is the capital of Italy and " + "a long clause, " * 2500)
    response = engine.query("Capital of Italy?")
    # was: the sources after it left out too, the refusal served without calling the LLM
    assert llm.calls == 1 and not response.metadata["refused"]
    assert response.metadata["left_out_node_ids"] == ["big"]
    assert [n.node.node_id for n in response.source_nodes] == ["rome", "paris"]
    assert response.metadata["cited_node_ids"] == ["rome"]
    assert response.metadata["prompt"]["prompt_tokens"] <= 3900 - 256


def test_text_without_sentence_breaks_on_top_leaves_the_others_shown_streamed():
    nodes = [TextNode(id_="big", text="罗马是意大利的首都" * 2500), *_nodes()]
    llm = Scripted(text="Paris [2].")
    response = _engine(llm, nodes, streaming=True).query("Capital of France?")
    assert "".join(response.response_gen) == "Paris [2]."
    assert llm.calls == 1 and response.metadata["left_out_node_ids"] == ["big"]
    assert response.metadata["cited_node_ids"] == ["paris"]


def test_metadata_overflowing_the_window_leaves_the_text_shown_without_it():
    llm, engine = _fit_case("Rome is the capital of Italy.", metadata={"tags": "tag " * 20000})
    response = engine.query("Capital of Italy?")
    assert llm.calls == 1 and not response.metadata["refused"]
    assert response.metadata["cut_node_ids"] == ["big"]
    node = response.source_nodes[0].node
    assert node.node_id == "big" and node.metadata["tags"].startswith("tag tag")  # kept
    # the prompt shows the text, not a cut run of metadata
    assert engine.source_texts(response.source_nodes)[0] == "Rome is the capital of Italy."


# ------------------------------------------------------------- refusal policy files
def test_refusal_policy_saved_with_nan_calibration_is_strict_json(tmp_path):
    policy = DecoderRefusalPolicy(0.4)
    policy.calibration = {"auc": float("nan"), "cv_spread": float("inf"), "threshold": 0.4}
    path = policy.save(tmp_path / "policy.json")

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    record = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert record["calibration"] == {"auc": None, "cv_spread": None, "threshold": 0.4}
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]  # no temporary left
    loaded = load_refusal_policy(path)
    assert math.isclose(loaded.threshold, 0.4) and loaded.calibration["auc"] is None
