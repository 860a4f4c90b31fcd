"""The grounded format: the refusal sentence, the prompt, the citation grammar and answer parsing.

One module at the bottom of the package: the citation query engine, the
grounded training data, the local LLM and the evaluators all use it, so a
tuned decoder is trained on the prompt it is later asked with, and every part
reads its ``[n]`` citations by the same rules.

Prompt: source text is fenced as data inside ``<source id="n">`` blocks that
the system message says never to obey; sources are cut by :func:`truncate_source`.
The question is data too: neither a source nor the question can open or close
a fence (``<source`` and ``</source`` inside them, in any case, are written
``< source`` and ``</ source``), so a question holding ``<source id="9">...</source>`` cannot
pass for a source, and :func:`read_grounded_prompt` reads the question and the
sources back exactly as the model saw them.

Quotes: :func:`check_quotes` verifies each quoted span of an answer against the
source it cites (normalised substring, else a fuzzy match; see
:class:`QuoteCheck`).

Citation grammar (what :class:`CitationFilter`, :func:`parse_answer`,
:func:`parse_citations` and :func:`strip_citations` read):

=====================================  ==========================================================
Written                                Read as
=====================================  ==========================================================
``[1]``, ``[1, 2]``, ``[1;2]``,        a citation of each number; ``[1][2]`` is two citations
``[1 2]``, ``[ 1 ]``, ``[1][2]``
``[1-3]``, ``[3–1]`` (any dash)        a range: 1, 2 and 3
``[1-500]``                            text: a range names at most ``MAX_RANGE`` numbers
``[Source 7]``, ``[sources: 1, 2]``    the same as ``[7]``, ``[1, 2]`` (any case; ``:``, ``#``)
full-width ``［1］``, ``【1】``, ``[１]``  the same as ``[1]`` (full-width separators too; digits of
                                       any script, ``[١]``, read as their value)
``[1\\u200b]``, ``[¹]``, ``[①]``        the same as ``[1]``: invisible characters (zero-width,
                                       joiners, BOM, soft hyphen) inside a marker are read as
                                       nothing, digit forms NFKC-equal to digits as the digits
``[0]``, ``[9]`` with 3 sources        out of range: removed with the space before it, reported
``[1, 9]``, ``[2-5]`` with 3 sources   the valid part stays (``[1]``, ``[2, 3]``), the rest reported
``[1](https://...)``                   a Markdown link: kept, not a citation
``[a](https://x/[9])``, ``<…[9]>``     in a link's address: kept, not a citation
``https://x.com/a[1]``                 a citation (a bare URL cannot hold a bracket)
``\\[1]``                               an escaped bracket: kept, not a citation
``(1)``, ``[^1]``, ``[x]``, ``[]``     not citations: kept as written
``"Smith [1] found"`` quoted from a    the source's own footnote: kept, not a citation (with
source that holds ``[1]``              ``source_texts``, as the query engine reads answers)
``Smith [1] found it`` unquoted, the   the same: a marker with the source's words around it
words around ``[1]`` in a source       (one each side, a third on either) is its footnote
inside inline code or a fenced block   code: kept as written, never a citation
=====================================  ==========================================================

A fenced block opens at a line that starts (after at most 3 spaces) with three
or more backticks or tildes, and runs to a line starting with at least as many
of the same character, or to the end; a backtick line with another backtick on
it is inline code instead. An inline code span is a run of backticks closed by
a run of the same length within ``MAX_CODE_SPAN_CHARS`` characters and before a
blank line; unclosed backticks are text. Bracket groups longer than
``MAX_MARKER_CHARS`` are text. A removed citation never joins the text around it
into a new citation or backtick run, so cleaning a cleaned answer changes nothing.

Refusals: an answer is a refusal when it opens with the refusal sentence (case,
spacing and a final full stop ignored, followed by a non-word character or the
end) and cites no source, or when it says nothing but the refusal sentence
around citation markers (``"[2] Insufficient information in the provided
sources."``: the markers are dropped; citing a source does not make "the sources
lack the answer" an answer). An answer that opens with the refusal and goes on
to a cited claim is an answer: ``refused`` and ``citations`` are never both set,
and ``uncited`` is "neither" (an answer of markers alone, ``"[1] [2]"``, says
nothing and so backs no source: ``uncited``).

Example::

    from llama_index_ragtune.grounding import build_messages, parse_answer

    messages = build_messages("apple return policy?", ["Opened iPhones: 14 days."])
    messages[-1].content.splitlines()[0]           # 'Sources:'
    answer = parse_answer("14 days [1][4]. See `arr[2]`.", n_sources=1)
    answer.text, answer.citations, answer.invalid_citations
    # ('14 days [1]. See `arr[2]`.', (1,), (4,))
"""

# ruff: noqa: F401  (the public names of the grounded format, from the modules that define them)
from __future__ import annotations

from llama_index_ragtune._invisible import is_blank  # a text with no visible character
from llama_index_ragtune.grounding._scanner import (
    MAX_CODE_SPAN_CHARS,
    MAX_HELD_CHARS,
    MAX_MARKER_CHARS,
    MAX_RANGE,
)
from llama_index_ragtune.grounding.answers import (
    AnswerStream,
    GroundedAnswer,
    cited_claims,
    is_refusal,
    parse_answer,
    says_nothing,
    sentence_spans,
    split_claims,
)
from llama_index_ragtune.grounding.citations import (
    Citation,
    CitationFilter,
    cite,
    find_citations,
    parse_citations,
    strip_citations,
)
from llama_index_ragtune.grounding.prompt import (
    DEFAULT_REFUSAL,
    DEFAULT_SYSTEM_PROMPT,
    GroundedPrompt,
    build_messages,
    check_refusal,
    format_sources,
    read_grounded_prompt,
    truncate_source,
    valid_unicode,
)
from llama_index_ragtune.grounding.quotes import (
    DEFAULT_FUZZY_THRESHOLD,
    DEFAULT_MIN_QUOTE_WORDS,
    QuoteCheck,
    check_quotes,
    copied_from_sources,
    footnotes_from_sources,
    normalize_quote,
    quoted_from_sources,
)

__all__ = [
    "DEFAULT_FUZZY_THRESHOLD",
    "DEFAULT_MIN_QUOTE_WORDS",
    "DEFAULT_REFUSAL",
    "DEFAULT_SYSTEM_PROMPT",
    "MAX_CODE_SPAN_CHARS",
    "MAX_HELD_CHARS",
    "MAX_MARKER_CHARS",
    "MAX_RANGE",
    "AnswerStream",
    "Citation",
    "CitationFilter",
    "GroundedAnswer",
    "GroundedPrompt",
    "QuoteCheck",
    "build_messages",
    "check_quotes",
    "check_refusal",
    "cite",
    "cited_claims",
    "copied_from_sources",
    "says_nothing",
    "sentence_spans",
    "find_citations",
    "footnotes_from_sources",
    "format_sources",
    "is_blank",
    "is_refusal",
    "normalize_quote",
    "parse_answer",
    "parse_citations",
    "quoted_from_sources",
    "read_grounded_prompt",
    "split_claims",
    "strip_citations",
    "truncate_source",
    "valid_unicode",
]
