"""Hostile inputs to the answer's parts, round s41: the reranker on long texts and from many
threads, answers naming thousands of citation numbers, non-text arguments to the grounded
format, and the local LLM given images, stop strings or wrong token ids."""

from __future__ import annotations

import threading
import time

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.grounding import (
    AnswerStream,
    build_messages,
    check_quotes,
    cited_claims,
    parse_answer,
    parse_citations,
    truncate_source,
)
from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.postprocessor import CrossEncoderRerank
from llama_index_ragtune.postprocessor.pair_input import fit_pairs
from tests.postprocessor.conftest import untrained_dir  # noqa: F401 (a tiny reranker folder)

WORDS = [
    "statins",
    "lower",
    "ldl",
    "cholesterol",
    "cats",
    "purr",
    "the",
    "of",
    "a",
    "naive",
    "cafe",
    "unbelievably",
    "tokyo",
    ",",
]


def words(n: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def reranker(untrained_dir):  # noqa: F811
    return CrossEncoderRerank(untrained_dir, top_n=None)


# ------------------------------------------------------------------ the reranker
def test_long_query_and_long_nodes_are_fast_and_score_as_whole(reranker):
    # was: each text tokenised whole once per pair, and a pair of two long texts made the
    # tokenizer build every overflowing piece of both (a 10,000-character query over such
    # nodes was killed after 5 minutes; 0.8 s for one pair of 2,000 words each)
    model = reranker.cross_encoder
    texts = [words(5, 1), words(3000, 2), words(40, 3), "tokyo" * 2000, words(600, 4)]
    for query in ("what lowers ldl?", words(40, 5), words(600, 6)):
        mine = reranker.score(query, texts)
        whole = model.predict([(query, t) for t in texts], show_progress_bar=False)
        assert mine == pytest.approx([float(x) for x in whole], abs=1e-6)
    nodes = [
        NodeWithScore(node=TextNode(id_=str(i), text=f"node {i} " * 30_000), score=0.5)
        for i in range(20)
    ]
    start = time.perf_counter()
    out = reranker.postprocess_nodes(nodes, query_str="word " * 200_000)  # 1 MB
    assert time.perf_counter() - start < 10
    assert len(out) == 20


def test_fit_pairs_cuts_only_what_the_model_cannot_read(reranker):
    model = reranker.cross_encoder
    query, texts = fit_pairs(model, "short question", ["short text", "x " * 100_000])
    assert query == "short question" and texts[0] == "short text"
    assert 0 < len(texts[1]) < 5_000 and ("x " * 100_000).startswith(texts[1])
    unbroken, _ = fit_pairs(model, "東京" * 100_000, [])  # no whitespace at all
    assert 0 < len(unbroken) < 20_000


def test_one_reranker_serves_many_threads(reranker):
    # was: 5 of 8 threads failed ("Unable to create tensor", mismatched tensor sizes): the
    # tokenizer's padding and truncation were switched under each other
    nodes = [
        NodeWithScore(node=TextNode(id_=str(i), text=f"node text {i} " * (5 + 3 * i)), score=0.5)
        for i in range(12)
    ]
    expected = {q: reranker.postprocess_nodes(nodes, query_str=q) for q in ("a b", "c " * 40)}
    errors: list[BaseException] = []
    results: list[bool] = []

    def work(query: str) -> None:
        try:
            for _ in range(4):
                got = reranker.postprocess_nodes(nodes, query_str=query)
                same = [n.node.node_id for n in got] == [n.node.node_id for n in expected[query]]
                results.append(same)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(q,)) for q in list(expected) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results and all(results)


# ------------------------------------------------------------- citations at scale
def test_thousands_of_distinct_citation_numbers_are_linear():
    # was quadratic: 8 s for 190 kB, 110 s (parse_citations) / 183 s (parse_answer) for 790 kB
    text = " ".join(f"x [{i}]" for i in range(1, 40_000))
    start = time.perf_counter()
    assert parse_citations(text)[:3] == [1, 2, 3]
    answer = parse_answer(text, n_sources=3)
    claims = cited_claims(text)
    assert time.perf_counter() - start < 20
    assert answer.citations == (1, 2, 3) and len(answer.invalid_citations) == 39_996
    assert len(claims[0][1]) == 39_999


# ------------------------------------------------------- the grounded format's inputs
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_answer(None, 3), r"parse_answer: raw must be a str, got None"),
        (lambda: parse_answer(b"x [1]", 3), r"got bytes.*decode it first"),
        (lambda: parse_citations(None), r"parse_citations: answer must be a str"),
        (lambda: AnswerStream(2).feed(None), r"AnswerStream\.feed: delta must be a str"),
        (lambda: cited_claims(5), r"cited_claims: answer must be a str"),
        (lambda: check_quotes('"a b c d" [1]', "abc"), r"source_texts must be a list of str"),
        (lambda: check_quotes('"a b c d" [1]', [None]), r"source_texts\[0\] must be a str"),
        (lambda: build_messages("q", "abc"), r"build_messages: source_texts must be a list"),
        (lambda: build_messages(None, ["a"]), r"build_messages: question must be a str"),
        (lambda: truncate_source("abc def", True), r"max_chars must be an int or None"),
    ],
)
def test_non_text_arguments_are_named(call, message):
    # were "'NoneType' object is not iterable", an AttributeError, or a string's letters
    # read as numbered sources ("abc": three sources)
    with pytest.raises(TypeError, match=message):
        call()


def test_bad_limits_and_system_prompts_are_named():
    with pytest.raises(ValueError, match="max_chars must be >= 1"):
        truncate_source("abc def", 0)  # was ' ...'
    with pytest.raises(ValueError, match=r"only have the slot \{refusal\}.*\{\{"):
        build_messages("q", ["a"], system_prompt='Reply as {"answer": 1}. {refusal}')
    written = build_messages("q", ["a"], system_prompt='As {{"a": 1}}. {refusal}')
    assert written[0].content.startswith('As {"a": 1}. Insufficient')


# ------------------------------------------------------------------ the local LLM
@pytest.fixture(scope="module")
def tiny_llm(tiny_causal_lm_path) -> LocalChatLLM:
    return LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6, device="cpu")


def test_an_image_is_refused_not_silently_dropped(tiny_llm):
    # was: the image left out, the model answering about a picture it never saw
    message = ChatMessage(
        role="user", blocks=[TextBlock(text="What is here?"), ImageBlock(url="https://x/y.png")]
    )
    for call in (tiny_llm.chat, tiny_llm.stream_chat):
        with pytest.raises(TypeError, match="Chat message 0: holds image content.*text only"):
            call([message])


@pytest.fixture(scope="module")
def smol(decoder_path) -> LocalChatLLM:
    """The bundled SmolLM2 (a tiny random model's answers hold no text to stop at)."""
    return LocalChatLLM(decoder_path, max_new_tokens=12, device="cpu")


def test_stop_strings_work_and_bad_ones_are_named(smol):
    # was: "could not locate a tokenizer" for any stop string; "" stopped every answer
    # after one token; [3] an AttributeError
    hi = [ChatMessage(role="user", content="Count from 1 to 20 with commas.")]
    plain = smol.chat(hi)
    assert smol.chat(hi, stop_strings=[]).message.content == plain.message.content
    alone = smol.chat(hi, stop_strings="3")
    assert alone.message.content.endswith("3") and "3" not in alone.message.content[:-1]
    assert alone.raw["usage"]["completion_tokens"] < plain.raw["usage"]["completion_tokens"]
    assert alone.raw["finish_reason"] == "stop"
    say_hi = [ChatMessage(role="user", content="Say hello.")]
    stopped = smol.generate_batch([hi, say_hi], stop_strings=["3"])
    assert stopped[0].message.content == alone.message.content
    # the padding after a row stopped by a stop string is not counted, nor read as cut
    assert stopped[0].raw["usage"]["completion_tokens"] == alone.raw["usage"]["completion_tokens"]
    assert stopped[0].raw["finish_reason"] == "stop"
    assert [c.delta for c in smol.stream_chat(hi, stop_strings=["3"])][-2] == "3"
    with pytest.raises(ValueError, match="stop_strings holds an empty string"):
        smol.chat(hi, stop_strings=[""])
    with pytest.raises(TypeError, match="stop_strings must be a str or a list of str"):
        smol.chat(hi, stop_strings=[3])


def test_refusal_probabilities_name_prompts_that_are_not_token_ids(tiny_llm):
    # was: "'dict' object cannot be interpreted as an integer", or an IndexError (a
    # device-side assert on a GPU) for an id past the vocabulary
    with pytest.raises(TypeError, match="prompt 0 is not a list of token ids"):
        tiny_llm.refusal_probabilities([[{"role": "user", "content": "x"}]])
    with pytest.raises(ValueError, match="prompt 1 holds token id 10000000, outside"):
        tiny_llm.refusal_probabilities([[1, 2], [1, 10**7]])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        tiny_llm.refusal_probabilities([[]])
    ok = tiny_llm.refusal_probabilities([tiny_llm.encode([{"role": "user", "content": "hi"}])])
    assert len(ok) == 1 and 0.0 <= ok[0] <= 1.0
