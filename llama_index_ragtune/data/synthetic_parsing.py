"""Reading an LLM's answer to the synthetic-question prompt, and fitting the prompt to its window.

Users' LLMs answer in many shapes; :func:`parse_questions` keeps the questions and only them:

* reasoning blocks (``<think>``, ``<thinking>``, ``<reasoning>``, ``<reflection>``...; closed,
  left open at the end, several, or only a closing tag whose opening was in the prompt) are
  thoughts, never questions (:func:`strip_reasoning`);
* numbering, bullets and labels (``1.``, ``2)``, ``a)``, ``iv.``, ``- ``, ``Q3:``,
  ``**Question 2:**``), code fences, JSON arrays or objects (one per line or spread over
  lines), ``Q: ... A: ...`` pairs (the answers are dropped) and an answer written after the
  question on its line (cut at the last question mark);
* preambles ("Here are 3 questions:"), closing remarks ("I hope these help!"), lines of the
  prompt's own instructions echoed back (``echo``) and lines with no letter or digit;
* terminal colour codes (ANSI escape sequences) and other control characters (NUL, BEL...)
  are removed, a run of them read as one space.

The answer is read lazily up to :data:`MAX_ANSWER_CHARS` characters and each line is cut to
:data:`MAX_QUESTION_CHARS`, so a runaway answer (1 MB on one line, 100k lines) costs bounded
time and memory.

:func:`query_tokens` counts words the way the filters do, with the scripts written without
spaces (Chinese, Japanese, Thai...) read as character bigrams, as the BM25 analyzer does: a
Chinese question is not one "word".

Example::

    from llama_index_ragtune.data.synthetic_parsing import parse_questions

    parse_questions("<think>They want dates.</think>\\n1) When is it due? Friday.\\nA: Friday")
    # ['When is it due?']
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.records import normalize_text, twin_key

if TYPE_CHECKING:
    from llama_index.core.prompts import BasePromptTemplate

logger = logging.getLogger(__name__)

#: Characters of an answer (reasoning blocks removed) that are read; the rest is ignored.
MAX_ANSWER_CHARS = 64_000
#: A line longer than this is cut to it (and then dropped as ``too_long``): no search question.
MAX_QUESTION_CHARS = 1_000
#: Appended to a passage cut to fit the LLM's context window.
CUT_NOTE = "\n[... passage cut to fit the context window]"

_REASONING_TAG = re.compile(
    r"<\s*(/?)\s*(?:think|thinking|thought|thoughts|reasoning|reflection|scratchpad)\b[^<>\n]{0,80}>",
    re.IGNORECASE,
)

_BULLETS = "-*\u2022\u2023\u2043\u00b7\u2013\u2014\u2219\u25aa-\u25cf\u25e6\u30fb\u00bb\u203a\u2192"
_CJK_NUMERALS = "\u3007\u4e00\u4e8c\u4e09\u56db\u4e94\u516d\u4e03\u516b\u4e5d\u5341"  # 〇一二...十
_LABELS = (
    "q|question|query|sentence|example|item|frage|pregunta|pergunta|domanda|soru|vraag"
    "|\u0432\u043e\u043f\u0440\u043e\u0441|\u0633\u0624\u0627\u0644"  # вопрос, سؤال
    "|\u092a\u094d\u0930\u0936\u094d\u0928|\uc9c8\ubb38"  # प्रश्न, 질문
    "|[\u554f\u95ee\u984c\u9898]{1,2}"  # 問 问 題 题 (問題, 问题)
)
_PREFIX = re.compile(
    rf"^\s*(?:[{_BULLETS}]+\s*)?(?:\*\*)?"
    r"(?:[\(\uff08]?\d+\s?[\).:\]\uff09\uff0e\u3001\uff1a](?!\d)|#\d+(?=\s)|\d+[-\u2013\u2014](?=\s)"
    rf"|[\(\uff08]?[{_CJK_NUMERALS}]+[\)\uff09\u3001\uff0e.:\uff1a]"
    rf"|\u7b2c[\d{_CJK_NUMERALS}]+(?:[\u9898\u984c\u554f\u95ee]\s*[:.\uff1a\uff0e\u3001]?|\s*[:.\uff1a\uff0e\u3001])"
    r"|[\u2460-\u24ff\u2776-\u2793\u3251-\u325f\u32b1-\u32bf][.\uff0e\u3001]?"
    rf"|(?:{_LABELS})\s*(?:#|n[o\u00b0\u00ba]\.?)?\s*\d*\s*[:.)\uff1a\uff0e\uff09]"
    r"|\(?(?:[a-h]|[ivx]{1,4})\)(?=\s)|(?:i|[ivx]{2,4})\.(?=\s))"
    rf"(?:\*\*)?\s*|^\s*[{_BULLETS}]+\s*",
    re.IGNORECASE,
)
"""A line's numbering, bullet or label ("1.", "a)", "iv.", "- ", "Q2:", "**Question 3:**"), in
other scripts too: full-width ("１．", "（2）", "3、"), circled ("①"), Chinese numerals
("一、", "第2题："), "問1：", "Вопрос 1:", "سؤال ١:", "・"; a letter with a full stop is not
one ("E. coli", "J. Smith")."""

# an answer line of a Q/A pair ("A: ...", "**Answer 2:** ..."), not a question
_ANSWER_LABEL = re.compile(r"^\W{0,3}(?:a|ans|answer|response)\s*\d*\s*(?:\*\*)?\s*:", re.I)
# a line of chatter around the questions, not a question (when it has no question mark)
_CHATTER = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|okay|absolutely|great)\s*[!.,]"
    r"|(?:here\s+(?:are|is)|below\s+(?:are|is)|i\s+hope|hope\s+(?:this|these)|let\s+me\s+know"
    r"|feel\s+free|these\s+questions|i(?:'ve|\s+have)\s+(?:written|generated|created))\b)",
    re.IGNORECASE,
)
_CONTROLS = re.compile(
    r"[ \t]*(?:\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?"
    r"|\x9b[0-?]*[ -/]*[@-~]|[\x00-\x08\x0e-\x1a\x1f\x7f-\x84\x86-\x9a\x9c-\x9f])+[ \t]*"
)
"""Terminal colour codes (ANSI escape sequences: ``ESC [ 1 m``, ``ESC ] ... BEL``) and other
control characters but tabs and line breaks, with the spaces around them: what an LLM wrapped
in a terminal tool, or a broken decoder, adds to its answer; never part of a question."""
_LINE = re.compile(r"[^\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")  # str.splitlines' breaks
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_JSON_FIELD = re.compile(r'^\s*"([^"]{1,20})"\s*:\s*(.*?)\s*,?\s*$')
_QUESTION_FIELDS = frozenset({"question", "query", "q", "text", "search_query"})
_QUESTION_MARKS = "?\uff1f\u061f"  # ASCII, full-width (CJK), Arabic


def strip_reasoning(text: str) -> str:
    """``text`` without its reasoning blocks: a closed block, one left open (the rest is
    thought), and everything before a closing tag that has no opening one (the opening tag
    was part of the prompt, as some reasoning models' chat templates do).

    Example::

        strip_reasoning("<think>hmm</think>\\nWhat is X?")   # '\\nWhat is X?'
    """
    kept: list[str] = []
    depth, start = 0, 0
    for tag in _REASONING_TAG.finditer(text):
        if tag.group(1):  # a closing tag
            if depth == 0:
                kept.clear()  # it closes thoughts whose opening tag the prompt held
            depth = max(depth - 1, 0)
        else:
            if depth == 0:
                kept.append(text[start : tag.start()])
            depth += 1
        start = tag.end()
    if depth == 0:
        kept.append(text[start:])
    return "".join(kept)


def answer_text(answer: Any) -> str:
    """The text of what an LLM call returned: ``None`` is empty, bytes are decoded, a
    ``CompletionResponse`` / ``ChatResponse`` gives its text.

    Example::

        answer_text(None), answer_text(b"What is X?")   # ('', 'What is X?')
    """
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (bytes, bytearray)):
        return bytes(answer).decode("utf-8", errors="replace")
    message = getattr(answer, "message", None)
    if message is not None and hasattr(message, "content"):
        return answer_text(message.content)
    if isinstance(getattr(answer, "text", None), str):
        return answer.text
    return str(answer)


def parse_questions(text: Any, limit: int | None = None, echo: str = "") -> list[str]:
    """Split an LLM answer into its questions (module docstring): at most ``limit``; a line
    that is a line of ``echo`` (the prompt's own text, as :func:`echo_text` gives it), or
    three words or more of one, is the prompt echoed back, not a question.

    Example::

        parse_questions('```json\\n["What is X?", "Why Y?"]\\n```')   # ['What is X?', 'Why Y?']
    """
    out: list[str] = []
    if limit is not None and limit <= 0:
        return out
    answer = strip_reasoning(answer_text(text))[:MAX_ANSWER_CHARS]
    for line in _lines(_CONTROLS.sub(" ", answer)):
        for question in _questions_of_line(line):
            if echo and _echoed(twin_key(question), echo):
                continue
            out.append(question)
            if limit is not None and len(out) >= limit:
                return out
    return out


def _echoed(key: str, echo: str) -> bool:
    return f"\n {key} \n" in echo or (key.count(" ") >= 2 and f" {key} " in echo)


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text``, one at a time, each cut to ``MAX_QUESTION_CHARS`` (plus "...")."""
    for line in _LINE.finditer(text):
        value = line.group()
        yield value if len(value) <= MAX_QUESTION_CHARS else value[:MAX_QUESTION_CHARS] + "..."


def _questions_of_line(line: str) -> list[str]:
    stripped = line.strip()
    if not stripped or _FENCE.match(stripped):
        return []
    if stripped[0] in "[{" and stripped.rstrip(",")[-1:] in "]}":
        try:
            parsed = json.loads(stripped.rstrip(","))
        except ValueError:
            parsed = None
        if parsed is not None:
            return [q for item in _json_questions(parsed) for q in _questions_of_line(item)]
    field = _JSON_FIELD.match(stripped)
    if field:  # a line of a JSON object spread over lines: "question": "...",
        if field.group(1).lower() not in _QUESTION_FIELDS:
            return []
        stripped = field.group(2)
    if _ANSWER_LABEL.match(stripped):
        return []
    question = _PREFIX.sub("", stripped).strip().rstrip(",").strip()
    question = question.strip("\"'\u201c\u201d`*").strip()  # quotes, Markdown bold
    if not normalize_text(question) or question.endswith(":"):
        return []
    last_mark = max(question.rfind(mark) for mark in _QUESTION_MARKS)
    if last_mark < 0 and _CHATTER.match(question):
        return []
    if 0 <= last_mark < len(question) - 1 and normalize_text(question[last_mark + 1 :]):
        question = question[: last_mark + 1]  # an answer after the question on its line
    return [question]


def _json_questions(parsed: Any) -> list[str]:
    """The question strings of a JSON value: a list of strings or of objects with a question
    field, or an object holding such a list."""
    if isinstance(parsed, str):
        return [" ".join(parsed.split())]
    if isinstance(parsed, list):
        return [q for item in parsed for q in _json_questions(item)]
    if isinstance(parsed, dict):
        for key, value in parsed.items():
            if str(key).lower() in _QUESTION_FIELDS or str(key).lower() in ("questions", "queries"):
                return _json_questions(value)
    return []


def query_tokens(text: str) -> list[str]:
    """The words of ``text`` as the synthetic filters count them: ``normalize_text`` words,
    a run of a script written without spaces as its character bigrams (``no_space_terms``).

    Example::

        query_tokens("What is X?"), query_tokens("退货政策？")   # (['what', 'is', 'x'], ['退货', '货政', '政策'])
    """
    words = normalize_text(text).split()
    if all(word.isascii() for word in words):
        return words
    from llama_index_ragtune.retrievers.bm25_analysis import no_space_terms

    tokens: list[str] = []
    for word in words:
        terms, rest = no_space_terms(word)
        tokens.extend(rest.split())
        tokens.extend(terms)
    return tokens


# --------------------------------------------------------------------------- the prompt


def as_prompt(template: Any, default: str) -> BasePromptTemplate:
    """``template`` (``None``: ``default``) as a prompt, checked once before any LLM call: it
    must hold ``{context_str}`` and no variable this module cannot fill; one without a
    question count (``{num_questions}``) is warned about (the LLM is not told how many)."""
    from llama_index.core.prompts import BasePromptTemplate, PromptTemplate

    if template is None:
        template = default
    if isinstance(template, str):
        template = PromptTemplate(template)
    if not isinstance(template, BasePromptTemplate):
        raise TypeError(
            f"prompt_template must be a str or PromptTemplate, got {type(template).__name__}"
        )
    names = set(template.template_vars)
    if "context_str" not in names:
        raise ValueError(
            "prompt_template must contain {context_str} (the passage); "
            f"it has variables {template.template_vars}"
        )
    filled = set(getattr(template, "kwargs", None) or {})
    unknown = sorted(names - filled - {"context_str", *_COUNT_NAMES})
    if unknown:
        raise ValueError(
            f"prompt_template has variables {unknown} that synthetic generation cannot fill "
            "(it fills {context_str} and {num_questions}); remove them or fill them first "
            "with PromptTemplate(...).partial_format(...)"
        )
    if not names & set(_COUNT_NAMES):
        logger.warning(
            "prompt_template has no {num_questions}: the LLM is not told how many questions "
            "to write (the first num_questions_per_node lines of each answer are read)"
        )
    return template


_COUNT_NAMES = ("num_questions", "num_questions_per_chunk", "num_questions_per_node")


def prompt_args(prompt: BasePromptTemplate, text: str, n: int) -> dict[str, Any]:
    """The variables to format ``prompt`` with for passage ``text`` and ``n`` questions."""
    args: dict[str, Any] = {"context_str": text}
    for name in _COUNT_NAMES:
        if name in prompt.template_vars:
            args[name] = n
    return args


def echo_text(prompt: BasePromptTemplate, n: int) -> str:
    """The prompt's own text (the passage left out) for :func:`parse_questions`: the
    ``twin_key`` of each line, each line framed by spaces and newlines.

    Example::

        "write 2 questions" in echo_text(PromptTemplate("{context_str} Write {num_questions} questions."), 2)   # True
    """
    text = prompt.format(**prompt_args(prompt, "", n))
    keys = [key for line in text.splitlines() if (key := twin_key(line))]
    return "".join(f"\n {key} \n" for key in keys)


def window_fitter(llm: Any, prompt: BasePromptTemplate, n: int) -> Callable[[str], str]:
    """A function giving a passage, or its start with :data:`CUT_NOTE`, so that the prompt
    leaves the LLM its answer budget: the window and the token counting of the grounded
    prompts (``query_engine.prompt_fit``: ``prompt_budget``, ``token_counter``), as
    LlamaIndex's ``PromptHelper`` fits a prompt. ``ValueError`` when the prompt alone does
    not fit. A cut counts O(log len(passage)) prompts; a passage that plainly fits, none.

    Example::

        fit = window_fitter(llm, as_prompt(None, DEFAULT_QUERY_PROMPT), 2)
        fit(long_text)   # long_text's start + CUT_NOTE
    """
    from llama_index_ragtune.query_engine.prompt_fit import prompt_budget, token_counter

    budget = prompt_budget(llm)
    if budget is None:
        return lambda text: text
    window, answer = budget
    room = window - answer
    count = token_counter(llm)

    def tokens(passage: str) -> int:
        return count(prompt_messages(llm, prompt, passage, n))

    bare = tokens(CUT_NOTE)
    if bare > room:
        raise ValueError(
            f"the synthetic-question prompt alone ({bare} tokens) does not fit the LLM's context "
            f"window ({window} tokens, {answer} of them kept for the answer): use a shorter "
            "prompt_template, a smaller num_output / max_new_tokens or an LLM with a larger window"
        )

    def fit(text: str) -> str:
        if bare + len(text.encode("utf-8")) + 8 <= room or tokens(text) <= room:
            return text  # a token holds at least one byte: a short passage fits uncounted
        low, high = 0, len(text)  # text[:low] fits with the note, text[:high] does not
        while high - low > 1:
            middle = (low + high) // 2
            if tokens(text[:middle] + CUT_NOTE) <= room:
                low = middle
            else:
                high = middle
        space = text.rfind(" ", 0, low)
        return text[: space if space > low // 2 else low].rstrip() + CUT_NOTE

    return fit


def prompt_messages(llm: Any, prompt: BasePromptTemplate, text: str, n: int) -> list[Any]:
    """The chat messages ``llm`` is sent for passage ``text`` (its system prompt first)."""
    from llama_index.core.llms import ChatMessage, MessageRole

    messages = prompt.format_messages(llm=llm, **prompt_args(prompt, text, n))
    system = getattr(llm, "system_prompt", None)
    if system:
        messages = [ChatMessage(role=MessageRole.SYSTEM, content=system), *messages]
    return messages
