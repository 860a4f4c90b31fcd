"""Synthetic queries from a user's own LLM that answers in hostile or unusual ways.

Every LLM here is a real LlamaIndex ``CustomLLM`` subclass (what a user's LLM is), answering
each prompt with a function of the prompt.
"""

from __future__ import annotations

import json
import logging
import tracemalloc
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.llms import CompletionResponse
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import TextNode

from llama_index_ragtune.data.synthetic import (
    DEFAULT_QUERY_PROMPT,
    QualityFilter,
    generate_synthetic_queries,
)
from llama_index_ragtune.data.synthetic_parsing import (
    CUT_NOTE,
    MAX_QUESTION_CHARS,
    parse_questions,
    query_tokens,
)
from tests.stub_llm import UserLLM

APPLES = (
    "Fresh apples and other produce bought in our grocery department can be returned "
    "within seven days when you bring the receipt to the customer service desk"
)
IPHONE = "Apple iPhones bought in the electronics department can be returned within fourteen days"
Q1, Q2 = "How long can I return apples?", "Do I need a receipt to return produce?"


def answering(text: str) -> UserLLM:
    return UserLLM(reply=lambda prompt: text, prompts=[])


def kept(llm: UserLLM, nodes: list[TextNode] | None = None, **kwargs: Any) -> list[str]:
    nodes = nodes or [TextNode(id_="grocery", text=APPLES)]
    result = generate_synthetic_queries(nodes, llm=llm, show_progress=False, **kwargs)
    return [q for q, _ in result.pairs]


# --------------------------------------------------------------------------- 1. reasoning


THOUGHT = "What does the user want? Maybe: what is the return window for apples?"


@pytest.mark.parametrize(
    "answer",
    [
        f"<think>\n{THOUGHT}\n</think>\n{Q1}\n{Q2}",
        f"<THINK>{THOUGHT}</THINK><think>\nIs a receipt needed for produce?\n</think>\n{Q1}\n{Q2}",
        f'<reasoning effort="high">\n{THOUGHT}\n</reasoning>\n1. {Q1}\n2. {Q2}',
        f"<thinking>{THOUGHT}<thinking>Nested: returning apples?</thinking></thinking>{Q1}\n{Q2}",
        f"{THOUGHT}\nWhat about the fresh apples receipt?\n</think>\n\n{Q1}\n{Q2}",  # no opening tag
    ],
    ids=["closed", "several", "reasoning-tag", "nested", "only-closing"],
)
def test_reasoning_blocks_never_become_questions(answer):
    assert kept(answering(answer)) == [Q1, Q2]


def test_an_unclosed_reasoning_block_is_all_thought():
    llm = answering(f"{Q1}\n<think>\n{THOUGHT}\nWhat is the apples receipt rule?")
    result = generate_synthetic_queries(
        [TextNode(id_="grocery", text=APPLES)], llm=llm, show_progress=False
    )
    assert [q for q, _ in result.pairs] == [Q1]
    only_thought = generate_synthetic_queries(
        [TextNode(id_="grocery", text=APPLES)],
        llm=answering(f"<think>\n{THOUGHT}"),
        show_progress=False,
    )
    assert only_thought.pairs == [] and only_thought.dropped == []
    assert only_thought.node_stats["empty_answers"] == 1 and only_thought.stats["generated"] == 0


# --------------------------------------------------------------------------- 2. formats


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps([Q1, Q2]),
        f"```json\n{json.dumps([Q1, Q2], indent=2)}\n```",
        f"```\n1. {Q1}\n2. {Q2}\n```",
        json.dumps({"questions": [{"question": Q1, "answer": "7 days"}, {"question": Q2}]}),
        json.dumps(
            [
                {"question": Q1, "answer": "Seven days at the desk"},
                {"question": Q2, "answer": "Yes"},
            ],
            indent=2,
        ),
        f"Q: {Q1}\nA: Apples can be returned within seven days at the desk\n"
        f"Q: {Q2}\nA: Yes, bring the receipt to the customer service desk",
        f"**Question 1:** {Q1}\n**Answer 1:** within seven days\n**Question 2:** {Q2}",
        f"a) {Q1}\nb) {Q2}",
        f"i. {Q1}\nii. {Q2}",
        f"(a) {Q1}\n(b) {Q2}",
        f"1) {Q1} Seven days with the receipt.\n2) {Q2} - Yes, at the service desk",
        f"Sure! Here are 2 questions based on the passage.\n{Q1}\n{Q2}\n"
        "I hope these help! Let me know if you need more apple return questions.",
        "Context information is below.\n---------------------\n---------------------\n"
        "You write search queries for a retrieval test. Using only the context above, write "
        f"2 different questions\n{Q1}\n{Q2}",
    ],
    ids=[
        "json",
        "fenced-json",
        "fenced-list",
        "json-objects",
        "json-objects-over-lines",
        "q-a-pairs",
        "bold-q-a",
        "letters",
        "roman",
        "parenthesised-letters",
        "answer-on-the-line",
        "preamble-and-closing",
        "echoed-instructions",
    ],
)
def test_output_formats_yield_the_questions_only(answer):
    assert kept(answering(answer)) == [Q1, Q2]


def test_plain_output_is_read_as_before():
    text = 'Sure, here you go:\n1. First?\n2) Second?\n- "Third?"\nQ4: Fourth?\n\n3.5 mg daily?'
    assert parse_questions(text) == ["First?", "Second?", "Third?", "Fourth?", "3.5 mg daily?"]
    # keyword queries (one opening like chatter), abbreviations, initials, "I" opening a line
    text = (
        "apple return policy\nGreat Barrier Reef tours refund\nWhat does e.g. mean here?\n"
        "E. coli in fresh apples?\nJ. Smith orchard apples recall\nI bought apples: can I?"
    )
    assert parse_questions(text) == [
        "apple return policy",
        "Great Barrier Reef tours refund",
        "What does e.g. mean here?",
        "E. coli in fresh apples?",
        "J. Smith orchard apples recall",
        "I bought apples: can I?",
    ]


# --------------------------------------------------------------------------- 3. empty / errors


class PredictReturns(UserLLM):
    """A user's LLM whose ``predict`` returns something other than a string."""

    value: Any = None

    def predict(self, prompt: Any, **kwargs: Any) -> Any:
        self.prompts.append("predict")
        return self.value


@pytest.mark.parametrize("answer", ["", "   \n\t \n", "\u200b\n---\n```"])
def test_an_empty_answer_is_counted_not_failed(answer):
    result = generate_synthetic_queries(
        [TextNode(id_="grocery", text=APPLES)], llm=answering(answer), show_progress=False
    )
    assert result.pairs == [] and result.node_stats["empty_answers"] == 1
    assert result.stats["failed_nodes"] == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, []), (Q1.encode(), [Q1]), (CompletionResponse(text=Q1), [Q1])],
    ids=["none", "bytes", "response-object"],
)
def test_a_non_string_answer_is_read_as_text(value, expected):
    llm = PredictReturns(reply=lambda p: "", prompts=[], value=value)
    result = generate_synthetic_queries(
        [TextNode(id_="grocery", text=APPLES)],
        llm=llm,
        num_questions_per_node=1,
        show_progress=False,
    )
    assert [q for q, _ in result.pairs] == expected
    assert result.stats["failed_nodes"] == 0  # None is an empty answer, not a failed call
    assert result.node_stats["empty_answers"] == (not expected)


def test_nodes_the_llm_fails_on_are_counted_and_the_others_kept():
    def reply(prompt: str) -> Any:
        return TimeoutError("read timed out") if "iPhones" in prompt else Q1

    nodes = [TextNode(id_="grocery", text=APPLES), TextNode(id_="phones", text=IPHONE)]
    for use_async in (False, True):
        result = generate_synthetic_queries(
            nodes,
            llm=UserLLM(reply=reply, prompts=[]),
            retries=0,
            use_async=use_async,
            show_progress=False,
        )
        assert result.pairs == [(Q1, "grocery")]
        assert result.stats["failed_nodes"] == 1 and result.stats["kept"] == 1


@pytest.mark.parametrize("use_async", [False, True])
def test_an_llm_that_fails_on_every_node_gets_one_error_naming_it(use_async):
    llm = UserLLM(reply=lambda p: RuntimeError("429 Too Many Requests"), prompts=[])
    nodes = [TextNode(id_="grocery", text=APPLES), TextNode(id_="phones", text=IPHONE)]
    with pytest.raises(RuntimeError) as caught:
        generate_synthetic_queries(
            nodes, llm=llm, retries=1, use_async=use_async, show_progress=False
        )
    message = str(caught.value)
    assert "UserLLM ('user-model')" in message and "every one of the 2 passages" in message
    assert "RuntimeError: 429 Too Many Requests" in message and "'grocery'" in message
    assert len(llm.prompts) == 4  # two tries per node, then one error


class ShortBatchLLM(UserLLM):
    """A user's LLM with ``generate_batch`` (as ``LocalChatLLM`` has) that loses an answer."""

    def generate_batch(self, conversations: list, **kwargs: Any) -> list:
        from llama_index.core.llms import ChatMessage, ChatResponse

        message = ChatMessage(role="assistant", content=Q1)
        return [ChatResponse(message=message) for _ in conversations[1:]]


def test_a_batch_answer_missing_an_answer_is_asked_again_one_at_a_time(caplog):
    llm = ShortBatchLLM(reply=lambda p: Q2, prompts=[])
    nodes = [TextNode(id_="grocery", text=APPLES), TextNode(id_="grocery-2", text=APPLES + "!x")]
    result = generate_synthetic_queries(
        nodes, llm=llm, num_questions_per_node=1, on_duplicate="first", show_progress=False
    )
    assert "1 answers for 2 prompts" in caplog.text and len(llm.prompts) == 2
    assert result.pairs == [(Q2, "grocery")] and result.stats["failed_nodes"] == 0


@pytest.mark.parametrize("count", ["2", 2.0, True, 0])
def test_a_question_count_that_is_no_whole_number_is_refused(count):
    with pytest.raises(ValueError, match="num_questions_per_node must be a whole number >= 1"):
        kept(answering(Q1), num_questions_per_node=count)


# --------------------------------------------------------------------------- 4. unbounded


def _peak_bytes(answer: str, **kwargs: Any) -> tuple[int, Any]:
    llm = answering(answer)
    node = TextNode(id_="grocery", text=APPLES)
    tracemalloc.start()
    try:
        result = generate_synthetic_queries([node], llm=llm, show_progress=False, **kwargs)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_a_megabyte_on_one_line_costs_bounded_memory():
    answer = "apples return " * 80_000  # 1.1 MB, no newline
    peak, result = _peak_bytes(answer)
    # the old code split the whole line into words and 10-grams: over 20 MB
    assert peak < 1_000_000
    (question, _, why) = result.dropped[0]
    assert why == "too_long" and len(question) <= MAX_QUESTION_CHARS + 3
    assert result.stats["generated"] == 1 and result.pairs == []


def test_a_hundred_thousand_lines_cost_bounded_memory():
    answer = "\n".join(f"How long can I return apples bought on day {i}?" for i in range(100_000))
    peak, result = _peak_bytes(answer)
    assert peak < 1_000_000  # the old code held every line: over 10 MB
    assert result.stats["generated"] == 2 and len(result.pairs) == 2
    assert len(parse_questions(answer)) < 2_000  # unlimited reading stops at MAX_ANSWER_CHARS


# --------------------------------------------------------------------------- 5. languages


NON_ENGLISH = {
    "zh": (
        "新鲜苹果和其他农产品在购买后七天内凭收据可以在客服台退货。",
        ["苹果可以在几天内退货？", "退货需要收据吗？"],
    ),
    "ja": (
        "生鮮食品のりんごは、レシートがあれば購入後七日以内に返品できます。",
        ["りんごは何日以内に返品できますか？", "返品にレシートは必要ですか？"],
    ),
    "de": (
        "Frische Äpfel und anderes Obst können innerhalb von sieben Tagen mit Kassenbon "
        "an der Kundeninformation zurückgegeben werden.",
        ["Wie lange kann ich Äpfel zurückgeben?", "Brauche ich einen Kassenbon für die Rückgabe?"],
    ),
    "ar": (
        "يمكن إرجاع التفاح الطازج خلال سبعة أيام مع الإيصال في مكتب خدمة العملاء.",
        ["كم يوما يمكنني إرجاع التفاح؟", "هل أحتاج إلى الإيصال لإرجاع التفاح؟"],
    ),
}


@pytest.mark.parametrize("language", sorted(NON_ENGLISH))
def test_questions_in_other_languages_are_kept(language):
    passage, questions = NON_ENGLISH[language]
    llm = answering("\n".join(questions))
    assert kept(llm, [TextNode(id_=language, text=passage)]) == questions


def test_filters_read_scripts_without_spaces_by_character_pairs():
    passage = NON_ENGLISH["zh"][0]
    assert query_tokens("退货需要收据吗？") == ["退货", "货需", "需要", "要收", "收据", "据吗"]
    assert query_tokens("What is X?") == ["what", "is", "x"]
    copy = passage[:20] + "？"
    off_topic = "我能帮你做什么？"  # "what can I do for you?": nothing of the passage
    result = generate_synthetic_queries(
        [TextNode(id_="zh", text=passage)],
        llm=answering(f"{copy}\n{off_topic}\n好吗？"),
        num_questions_per_node=3,
        show_progress=False,
    )
    reasons = {q: why for q, _, why in result.dropped}
    assert reasons == {copy: "copied_ngram", off_topic: "off_passage", "好吗？": "too_short"}
    statement = "苹果可以在七天内退货。"  # an answer, ending in the CJK full stop
    assert QualityFilter().reason(statement, passage) == "not_a_question"
    assert QualityFilter().reason("苹果可以在七天内退货吗？", passage) is None


# --------------------------------------------------------------------------- 6. near duplicates


@pytest.mark.parametrize(
    "twin",
    [
        Q1.upper(),
        Q1.rstrip("?") + " ?!",
        Q1.replace("return", "re\u200bturn"),
        "Ｈｏｗ long can I return apples?",
    ],
    ids=["case", "punctuation", "zero-width", "full-width"],
)
def test_questions_differing_by_case_punctuation_or_invisibles_are_duplicates(twin):
    nodes = [
        TextNode(id_="grocery", text=APPLES),
        TextNode(id_="grocery-2", text=APPLES + " Thanks"),
    ]
    llm = UserLLM(reply=lambda p: twin if "Thanks" in p else Q1, prompts=[])
    dropped = generate_synthetic_queries(nodes, llm=llm, show_progress=False)
    assert dropped.pairs == [] and dropped.stats["duplicate"] == 2
    first = generate_synthetic_queries(nodes, llm=llm, on_duplicate="first", show_progress=False)
    assert first.pairs == [(Q1, "grocery")]


# --------------------------------------------------------------------------- 7. context window


def test_a_passage_longer_than_the_context_window_is_cut_to_fit():
    count = Settings.tokenizer

    def reply(prompt: str) -> Any:
        if len(count(prompt)) > 600 - 64:
            return ValueError("This model's maximum context length is 600 tokens")
        return Q1

    long_text = APPLES + " " + " ".join(f"Aisle {i} stocks seasonal fruit." for i in range(800))
    llm = UserLLM(reply=reply, prompts=[], window=600)
    assert kept(llm, [TextNode(id_="grocery", text=long_text)], retries=0) == [Q1]
    (prompt,) = llm.prompts
    assert CUT_NOTE.strip() in prompt and APPLES in prompt
    short = UserLLM(reply=reply, prompts=[], window=600)
    kept(short, [TextNode(id_="grocery", text=APPLES)])
    assert CUT_NOTE.strip() not in short.prompts[0]  # a passage that fits is sent whole


def test_a_prompt_that_alone_overflows_the_window_fails_before_any_call():
    llm = UserLLM(reply=lambda p: Q1, prompts=[], window=80)
    long_text = APPLES + " more" * 500
    with pytest.raises(
        ValueError,
        match=r"prompt alone \(\d+ tokens\) does not fit the LLM.s context window \(80 tokens",
    ):
        kept(llm, [TextNode(id_="grocery", text=long_text)])
    assert llm.prompts == []


# --------------------------------------------------------------------------- 8. blank nodes


def test_blank_nodes_are_not_sent_and_are_counted():
    llm = answering(Q1)
    nodes = [
        TextNode(id_="grocery", text=APPLES),
        TextNode(id_="blank", text=" \n\t"),
        TextNode(id_="invisible", text="\u200b\ufeff \u2060\n"),
    ]
    result = generate_synthetic_queries(nodes, llm=llm, show_progress=False)
    assert len(llm.prompts) == 1 and result.pairs == [(Q1, "grocery")]
    assert result.node_stats["blank"] == 2 and result.stats["nodes"] == 3
    with pytest.raises(ValueError, match="all 2 nodes are blank"):
        generate_synthetic_queries(nodes[1:], llm=llm, show_progress=False)


# --------------------------------------------------------------------------- 9. prompt template


def test_a_template_with_a_variable_nobody_fills_fails_before_any_call():
    llm = answering(Q1)
    nodes = [TextNode(id_="grocery", text=APPLES), TextNode(id_="phones", text=IPHONE)]
    with pytest.raises(ValueError, match=r"variables \['language'\].*partial_format"):
        generate_synthetic_queries(
            nodes, llm=llm, prompt_template="{context_str} {num_questions} in {language}"
        )
    assert llm.prompts == []
    filled = PromptTemplate("{context_str} write {num_questions} in {language}").partial_format(
        language="English"
    )
    assert kept(llm, nodes[:1], prompt_template=filled) == [Q1]
    assert llm.prompts[-1].endswith("write 2 in English")


def test_a_template_without_a_question_count_is_warned_about_once(caplog):
    llm = answering(f"{Q1}\n{Q2}")
    nodes = [TextNode(id_="grocery", text=APPLES), TextNode(id_="grocery-2", text=APPLES + "!!!x")]
    with caplog.at_level(logging.WARNING):
        generate_synthetic_queries(
            nodes, llm=llm, prompt_template="Questions about: {context_str}", show_progress=False
        )
    assert caplog.text.count("has no {num_questions}") == 1
    with pytest.raises(ValueError, match="must contain {context_str}"):
        generate_synthetic_queries(nodes, llm=llm, prompt_template="Write {num_questions}")
    assert "{num_questions}" in DEFAULT_QUERY_PROMPT


# --------------------------------------------------------------------------- 10. same text


def test_nodes_with_the_same_text_are_asked_once_and_each_is_gold():
    footer = "Returns of fresh apples need the receipt within seven days at the service desk."
    nodes = [
        TextNode(id_="page-1#footer", text=footer),
        TextNode(id_="phones", text=IPHONE),
        TextNode(id_="page-2#footer", text=footer.upper()),  # the same text, up to case
        TextNode(id_="page-3#footer", text=footer.replace("apples", "app\u00adles")),
    ]

    def reply(prompt: str) -> str:
        return "How long is the phone return window?" if "iPhones" in prompt else Q1

    llm = UserLLM(reply=reply, prompts=[])
    result = generate_synthetic_queries(nodes, llm=llm, show_progress=False)
    assert len(llm.prompts) == 2  # one prompt for the three footers
    assert [n for q, n in result.pairs if q == Q1] == [
        "page-1#footer",
        "page-2#footer",
        "page-3#footer",
    ]
    assert result.stats["duplicate"] == 0 and result.stats["kept"] == 2
    assert result.node_stats["same_text"] == 2
