"""Round s44 of answering and citations: scripts with their own full stops (danda, Urdu,
Arabic, Myanmar, Ethiopic), scripts written without spaces (Thai, Chinese, Japanese) in
quotes, refusals written with such stops or followed by a vowel sign, lone surrogates in
the prompt, and node templates with slots core cannot fill."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest
from llama_index.core import SummaryIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.schema import MetadataMode, TextNode

from llama_index_ragtune.grounding import (
    build_messages,
    check_quotes,
    is_refusal,
    parse_answer,
    read_grounded_prompt,
    split_claims,
)
from llama_index_ragtune.grounding.quotes import quote_words
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.query_engine.post_check import check_citations

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stub_llm import StubChatLLM  # noqa: E402


class Says(StubChatLLM):
    """Answers ``answer``; ``finish`` is reported as the finish reason (None: not reported)."""

    answer: str = ""
    finish: str | None = None

    def reply(self, messages):
        return self.answer

    def chat(self, messages, **kwargs):
        raw = {"finish_reason": self.finish} if self.finish else None
        return ChatResponse(message=ChatMessage(role="assistant", content=self.answer), raw=raw)


def _engine(texts, llm, **kwargs):
    nodes = [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(texts, 1)]
    return CitationQueryEngine(SummaryIndex(nodes).as_retriever(), llm=llm, **kwargs)


def _both(engine, question):
    """The response of ``query`` and of ``aquery`` (they must agree)."""
    return engine.query(question), asyncio.run(engine.aquery(question))


# ------------------------------------------- 1. sentences ended by other scripts' stops

HINDI = "दिल्ली भारत की राजधानी है [1]। मुंबई सबसे बड़ा शहर है।"


@pytest.mark.parametrize(
    ("answer", "claims"),
    [
        (HINDI, ["दिल्ली भारत की राजधानी है [1]।", "मुंबई सबसे बड़ा शहर है।"]),
        ("लाहौर [1]॥ कराची बड़ा है।", ["लाहौर [1]॥", "कराची बड़ा है।"]),
        ("لاہور بڑا ہے [1]۔ کراچی بڑا ہے۔", ["لاہور بڑا ہے [1]۔", "کراچی بڑا ہے۔"]),
        ("القاهرة عاصمة [1]؟ نعم.", ["القاهرة عاصمة [1]؟", "نعم."]),
        ("ရန်ကုန် [1]။ မန္တလေး", ["ရန်ကုန် [1]။", "မန္တလေး"]),
        ("አዲስ አበባ [1]። ጎንደር", ["አዲስ አበባ [1]።", "ጎንደር"]),
        # good input as before: English, CJK, and no split before a lower-case word
        ("Paris [1]. Rome is old.", ["Paris [1].", "Rome is old."]),
        ("巴黎很大[1]。罗马也是。", ["巴黎很大[1]。", "罗马也是。"]),
        ("It costs 3 p.m. prices [1].", ["It costs 3 p.m. prices [1]."]),
    ],
)
def test_claims_split_at_the_stops_of_other_scripts(answer, claims):
    # before: one claim per answer for every non-CJK script, so an uncited claim hid behind
    # a cited one and a cut answer ending in a danda read as cut mid-sentence
    assert split_claims(answer) == claims


def test_engine_flags_the_uncited_hindi_claim_sync_and_async():
    for response in _both(_engine(["दिल्ली भारत की राजधानी है।"], Says(answer=HINDI)), "राजधानी?"):
        assert response.metadata["post_check"]["uncited_claims"] == ["मुंबई सबसे बड़ा शहर है।"]
        assert response.metadata["cited_node_ids"] == ["n1"]


def test_the_post_check_cites_before_a_danda_as_before_a_full_stop():
    choose = lambda prefix: [0.1, 0.9]  # noqa: E731  (the source the model finds likeliest)
    hindi = check_citations("दिल्ली राजधानी है [1]। मुंबई बड़ा है।", 2, "cite", choose=choose)
    assert hindi.text == "दिल्ली राजधानी है [1]। मुंबई बड़ा है [2]।"  # was "... है। [2]" or none
    english = check_citations("Paris [1]. Rome is old.", 2, "cite", choose=choose)
    assert english.text == "Paris [1]. Rome is old [2]."


def test_a_cut_answer_ending_with_a_danda_is_whole_sentences():
    llm = Says(answer="दिल्ली भारत की राजधानी है [1]।", finish="length")
    response = _engine(["दिल्ली भारत की राजधानी है।"], llm).query("राजधानी?")
    assert response.metadata["truncated"] is True
    assert response.metadata["cut_claim"] is None  # the limit fell after a whole sentence
    assert response.metadata["cited_node_ids"] == ["n1"]  # was dropped as "only in the cut claim"


# -------------------------------------------- 2. quotes in scripts written without spaces

SOURCES = [
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่ใหญ่ที่สุด",
    "東京は日本の首都であり、最大の都市です。",
    "北京是中华人民共和国的首都。",
]


@pytest.mark.parametrize(
    ("answer", "verified"),
    [
        ('ตอบ [1]: "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"', True),
        ('ตอบ [1]: "เชียงใหม่เป็นเมืองหลวงของประเทศลาว"', False),
        ('答え [2]: "東京は日本の首都であり"', True),
        ('答え [2]: "大阪は中国の首都であり"', False),
        ('答案 [3]: "北京是中华人民共和国的首都"', True),
        ('答案 [3]: "上海是日本最大的城市"', False),
    ],
)
def test_thai_chinese_japanese_quotes_are_checked(answer, verified):
    # before: a whole Thai or CJK sentence was one whitespace "word" < min_words=3, so no
    # quote of these scripts was ever checked: a made-up quote passed silently
    checks = check_quotes(answer, SOURCES)
    assert len(checks) == 1
    assert checks[0].verified is verified


@pytest.mark.parametrize(
    ("answer", "quote", "match"),
    [
        ("答え [2]:「東京は日本の首都であり」", "東京は日本の首都であり", "exact"),
        ("答え [2]:『東京は日本の最大の港町です』", "東京は日本の最大の港町です", "none"),
        (
            "Antwort [4]: \u201eBerlin ist die Hauptstadt\u201c",
            "Berlin ist die Hauptstadt",
            "exact",
        ),
        (
            "Antwort [4]: \u201eM\u00fcnchen ist die Hauptstadt\u201d",
            "M\u00fcnchen ist die Hauptstadt",
            "none",
        ),
    ],
)
def test_corner_brackets_and_low_quotes_are_quotes(answer, quote, match):
    # before: Japanese 「」『』 and German „“ quotes were never found, so never checked
    checks = check_quotes(answer, [*SOURCES, "Berlin ist die Hauptstadt von Deutschland."])
    assert [(c.quote, c.match) for c in checks] == [(quote, match)]


def test_a_refusal_in_corner_brackets():
    assert is_refusal("「信息不足。」", "信息不足。")
    assert not is_refusal("「信息不足」但是[1]说北京。", "信息不足。")


def test_short_cjk_scare_quotes_stay_unchecked_and_word_counts():
    assert check_quotes('它很"好"[3]。', SOURCES) == []  # one word, as an English "good"
    assert quote_words("the capital of Normandy") == 4
    assert quote_words("東京は日本の首都") == 4  # 8 kana/Han characters, two a word
    assert quote_words("เมืองหลวง") == 2  # 8 Thai letters (vowel signs not counted)
    assert quote_words("iPhone 15 是最新的") == 4


def test_engine_reports_a_made_up_thai_quote_sync_and_async():
    llm = Says(answer='ตอบ [1]: "เชียงใหม่เป็นเมืองหลวงของประเทศลาว"')
    for response in _both(_engine(SOURCES[:1], llm), "เมืองหลวง?"):
        assert response.metadata["unverified_quotes"] == 1
        assert response.metadata["quotes"][0]["matched_source"] == 1


# ------------------------------------------------------ 3. refusals in other scripts


@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        ("信息不足", "信息不足。"),
        ("स्रोतों में पर्याप्त जानकारी नहीं है", "स्रोतों में पर्याप्त जानकारी नहीं है।"),
        ("معلومات ناکافی ہیں", "معلومات ناکافی ہیں۔"),
        ("信息不足。", "信息不足"),
        ("**信息不足**", "信息不足。"),
    ],
)
def test_a_refusal_read_without_its_own_full_stop(answer, refusal):
    # before: "." was the only full stop ignored, so a model dropping "。" or "।" answered
    assert is_refusal(answer, refusal)
    assert parse_answer(answer, 2, refusal).refused


def test_engine_refusal_with_cjk_full_stop_sync_and_async():
    engine = _engine(["北京是首都。"], Says(answer="信息不足"), refusal="信息不足。")
    for response in _both(engine, "上海?"):
        assert response.metadata["refused"] is True
        assert response.metadata["uncited"] is False


def test_a_vowel_sign_after_the_refusal_makes_another_word():
    # "है" + "ं" is "हैं": the answer goes on with another word, it does not open with the
    # refusal (a combining mark was read as the end of the word)
    refusal = "जानकारी पर्याप्त नहीं है"
    assert not is_refusal("जानकारी पर्याप्त नहीं हैं", refusal)
    assert is_refusal("जानकारी पर्याप्त नहीं है, क्षमा करें", refusal)
    assert not is_refusal("Insufficient information in the provided sourcesx")
    assert is_refusal("Insufficient information in the provided sources")


# ------------------------------------------------------- 4. lone surrogates in the prompt


class HttpLike(StubChatLLM):
    """Encodes each request as an HTTP LLM client does (httpx, JSON body), sends nothing."""

    def reply(self, messages):
        body = {"messages": [{"role": m.role.value, "content": m.content} for m in messages]}
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat", json=body)
        self.__dict__["sent"] = json.loads(request.content)
        return "Paris [1]."


def test_lone_surrogates_reach_an_http_llm_as_replacement_characters():
    # before: UnicodeEncodeError "surrogates not allowed" inside the client, after retrieval
    llm = HttpLike()
    engine = _engine(["Paris \udcff is the capital."], llm)
    for response in _both(engine, "Capital \ud800 of France?"):
        assert response.response == "Paris [1]."
        user = llm.__dict__["sent"]["messages"][-1]["content"]
        assert "Paris \ufffd is the capital." in user and "Capital \ufffd of France?" in user


def test_surrogate_pairs_are_joined_and_read_back():
    messages = build_messages("Smile \ud83d\ude00?", ["Lone \udc80 here."])
    for message in messages:
        message.content.encode("utf-8")  # what every client does
    prompt = read_grounded_prompt(messages)
    assert prompt.question == "Smile \U0001f600?"
    assert prompt.source_texts == ("Lone \ufffd here.",)
    plain = build_messages("Capital?", ["Rome."])  # good input unchanged
    assert plain[-1].content.endswith("Question: Capital?")


# ------------------------------------------------------- 5. node templates with bad slots


@pytest.mark.parametrize(
    "template",
    [{"metadata_template": "{key}: {value} ({unit})"}, {"text_template": "{content} [{source}]"}],
)
def test_a_template_slot_core_cannot_fill_names_the_node(template):
    node = TextNode(id_="price-list", text="Opened: 14 days.", metadata={"shop": "A"}, **template)
    engine = CitationQueryEngine(
        SummaryIndex([node]).as_retriever(),
        llm=Says(answer="14 days [1]."),
        metadata_mode=MetadataMode.LLM,
    )
    # before: a bare KeyError: 'unit' from inside core
    with pytest.raises(ValueError, match=r"node 'price-list'.*\{\{ and \}\}"):
        engine.query("How long?")
    with pytest.raises(ValueError, match="node 'price-list'"):
        asyncio.run(engine.aquery("How long?"))


def test_literal_braces_in_templates_and_metadata_values_still_work():
    node = TextNode(
        id_="a",
        text="Opened: 14 days.",
        metadata={"shop": "{A}"},
        metadata_template="{key}: {value} {{unit}}",
    )
    llm = Says(answer="14 days [1].")
    engine = CitationQueryEngine(
        SummaryIndex([node]).as_retriever(), llm=llm, metadata_mode=MetadataMode.LLM
    )
    response = engine.query("How long?")
    assert response.response == "14 days [1]."
    assert "shop: {A} {unit}" in engine.source_texts(response.source_nodes)[0]
