"""A grounded answer read back: refusal or answer, its citations, its claims, streamed or whole.

Part of :mod:`llama_index_ragtune.grounding` (import the names from there).

Example::

    from llama_index_ragtune.grounding import parse_answer, cited_claims

    answer = parse_answer("14 days [1][4].", n_sources=1)
    answer.text, answer.citations, answer.invalid_citations   # ('14 days [1].', (1,), (4,))
    cited_claims("Opened: 14 days [1]. Sealed: 30 days [2].")
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from llama_index_ragtune.grounding.arguments import require_text, require_texts
from llama_index_ragtune.grounding.citations import (
    CitationFilter,
    find_citations,
    parse_citations,
    strip_citations,
)
from llama_index_ragtune.grounding.prompt import DEFAULT_REFUSAL, check_refusal
from llama_index_ragtune.grounding.quotes import footnotes_from_sources

#: Full stops of the scripts that write their own: CJK and half-width, Devanagari and Bengali
#: (danda, double danda), Urdu, Ethiopic, Myanmar, Armenian, Khmer, Tibetan. A refusal
#: written with one still matches an answer that drops it, as ``.`` always did.
FULL_STOPS = ".\u3002\uff0e\uff61\u0964\u0965\u06d4\u1362\u104b\u0589\u17d4\u0f0d"
#: What ends a sentence: the full stops, and the question and exclamation marks
#: (ASCII, CJK full-width, Arabic, Ethiopic, the Greek question mark).
SENTENCE_STOPS = FULL_STOPS + "!?\uff01\uff1f\u061f\u1367\u1368\u037e"


def _normal(text: str) -> str:
    return " ".join(text.lower().split()).strip(" " + FULL_STOPS)


def _in_word(ch: str) -> bool:
    """``ch`` goes on a word: a letter, a digit or a combining mark (a vowel sign after
    ``है`` makes ``हैं``, another word)."""
    return ch.isalnum() or (bool(ch) and unicodedata.category(ch)[0] == "M")


# What a model wraps its refusal in: Markdown emphasis or code, quotation marks (CJK corner
# brackets too), a quote block or heading mark, and a short apology before it ("Sorry, ...",
# "I'm sorry, but ...").
_WRAP_OPEN = " *_~`\"'\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e\u300c\u300e>#"
_WRAP_CLOSE = " " + FULL_STOPS + "*_~`\"'\u201c\u201d\u2018\u2019\u00ab\u00bb\u300d\u300f"
_APOLOGY = re.compile(
    r"(?:(?:i|we)(?:\s*['\u2019]\s*(?:m|re)|\s+am|\s+are)\s+)?(?:very\s+|so\s+|really\s+)?"
    r"(?:sorry|unfortunately|regrettably|apologies|my\s+apologies|(?:i|we)\s+apologi[sz]e)"
    r"\s*[,:;.!\u2013\u2014-]+\s*(?:but\s+)?"
)


def _bare(text: str) -> str:
    """``_normal(text)`` without the wrapping and apology a refusal may come in."""
    norm = " ".join(text.lower().split()).lstrip(_WRAP_OPEN)
    apology = _APOLOGY.match(norm)
    if apology is not None:
        norm = norm[apology.end() :].lstrip(_WRAP_OPEN)
    return norm.rstrip(_WRAP_CLOSE)


def _opens_with(answer: str, refusal: str) -> bool:
    target = _normal(refusal)
    return any(
        norm.startswith(target) and not _in_word(norm[len(target) : len(target) + 1])
        for norm in (_normal(answer), _bare(answer))
    )


def _refuses(answer: str, cited: bool, refusal: str) -> bool:
    """Uncited and opening with the refusal, or cited and saying nothing but the refusal
    (either way in bold, quotes or code, or after a short apology: still the refusal)."""
    if not cited:
        return _opens_with(answer, refusal)
    said = strip_citations(answer)
    return _normal(refusal) in (_normal(said), _bare(said))


def _says_nothing(text: str) -> bool:
    """No letter or digit: ``""``, ``"."`` (what is left of ``"[1] [2]."`` without its markers)."""
    return not any(c.isalnum() for c in text)


def says_nothing(answer: str) -> bool:
    """True when ``answer`` has no letter or digit once its citation markers are removed
    (``""``, ``"[1] [2] [3]"``): an empty answer, neither answered nor refused.

    Example::

        says_nothing("[1] [2]."), says_nothing("[1] 14 days.")   # (True, False)
    """
    require_text(answer, "says_nothing: answer")
    return not _said_outside_brackets(answer) and _says_nothing(strip_citations(answer))


def _said_outside_brackets(text: str) -> bool:
    """A letter or digit outside every bracket: no marker holds it (a fast sure "said")."""
    depth = 0
    for c in text:
        if c in "[\uff3b\u3010":
            depth += 1
        elif c in "]\uff3d\u3011":
            depth = max(0, depth - 1)
        elif depth == 0 and c.isalnum():
            return True
    return False


def is_refusal(answer: str, refusal: str = DEFAULT_REFUSAL) -> bool:
    """True when ``answer`` opens with the refusal sentence and cites nothing, or says
    nothing but the refusal around its citations (``"[2] Insufficient information ..."``:
    citing a source does not turn "the sources lack the answer" into an answer).

    Case, spacing and a final full stop are ignored, and so are Markdown emphasis or
    code, quotation marks, and a short apology around the sentence (``"**...**"``,
    ``"Sorry, insufficient ..."``); a refusal followed by a cited claim is an answer,
    and so is one that mentions the sentence after other text. On an answer cleaned
    by :func:`parse_answer` this gives its ``refused`` flag.

    Example::

        is_refusal("insufficient information in the provided sources")   # True
        is_refusal("[2] " + DEFAULT_REFUSAL)                              # True
        is_refusal("Sorry, **" + DEFAULT_REFUSAL + "**")                  # True
        is_refusal(DEFAULT_REFUSAL + " But [1] says Paris.")              # False
    """
    require_text(answer, "is_refusal: answer")
    check_refusal(refusal)
    return _refuses(answer, bool(parse_citations(answer)), refusal)


@dataclass(frozen=True)
class GroundedAnswer:
    """An answer read by the grounded format.

    ``text``: the answer with invalid citations removed and outer whitespace
    stripped; ``raw``: the model's own text; ``citations``: the valid source
    numbers, in order of first appearance; ``invalid_citations``: the removed
    ones; ``numbers``: every number cited, valid or not; ``refused``: a refusal
    (see :func:`is_refusal`); ``uncited``: neither refused nor cited. A refusal, and
    an answer of citation markers alone (``"[1] [2] [3]"``: it says nothing, so it backs
    nothing and is ``uncited`` and ``empty``), keep no valid citation: their ``text`` and
    ``numbers`` lose them, though a stream has shown them.

    Example::

        parse_answer("Insufficient information in the provided sources. [1]", 1).refused  # True
        parse_answer(DEFAULT_REFUSAL + " But [1] says Paris.", 1).refused                  # False
        parse_answer("[1] [2]", 2).uncited                                                 # True
    """

    text: str
    raw: str
    citations: tuple[int, ...]
    invalid_citations: tuple[int, ...]
    refused: bool
    numbers: tuple[int, ...]

    @property
    def uncited(self) -> bool:
        """Neither a refusal nor backed by a valid citation."""
        return not self.refused and not self.citations

    @property
    def empty(self) -> bool:
        """Not a refusal, and nothing said: no letter or digit once the markers are removed."""
        return not self.refused and _says_nothing(self.text)


class AnswerStream:
    """:func:`parse_answer` for a streamed answer: cleaned text per delta, the answer at the end.

    The text shown is the same as :func:`parse_answer`'s, whatever the chunks
    (leading and trailing whitespace held back and dropped). With ``source_texts``
    (the ``n_sources`` texts the model was shown), a marker inside a quote copied from
    a source that holds that marker, or copied unquoted with the source's words around
    it, is the source's own footnote, not a citation (:func:`footnotes_from_sources`).

    Example::

        stream = AnswerStream(n_sources=1)
        shown = [stream.feed(" Paris [1]"), stream.feed("[3]. "), stream.finish()]
        "".join(shown), stream.answer.invalid_citations     # ('Paris [1].', (3,))
    """

    def __init__(
        self,
        n_sources: int,
        refusal: str = DEFAULT_REFUSAL,
        *,
        source_texts: Sequence[str] | None = None,
    ) -> None:
        self.refusal = check_refusal(refusal)
        self.filter = CitationFilter(n_sources)
        if source_texts is not None:
            source_texts = require_texts(source_texts, "AnswerStream: source_texts")
            if len(source_texts) != n_sources:
                raise ValueError(
                    f"source_texts holds {len(source_texts)} texts for n_sources={n_sources}; "
                    "pass the texts of the numbered sources the model was shown, in order."
                )
        self.source_texts = source_texts
        self.answer: GroundedAnswer | None = None
        self._raw: list[str] = []
        self._shown: list[str] = []
        self._space: list[str] = []  # trailing whitespace, shown once more text follows

    def _show(self, text: str) -> str:
        if not self._shown:
            text = text.lstrip()
        body = text.rstrip()
        if not body:
            self._space.append(text)
            return ""
        out = "".join(self._space) + body
        self._space = [text[len(body) :]]
        self._shown.append(out)
        return out

    def feed(self, delta: str) -> str:
        """The cleaned text to show for the next streamed ``delta``."""
        require_text(delta, "AnswerStream.feed: delta")
        self._raw.append(delta)
        return self._show(self.filter.feed(delta))

    def finish(self) -> str:
        """The cleaned rest once the stream has ended; sets :attr:`answer`."""
        out = self._show(self.filter.flush())
        text = "".join(self._shown)
        cited = tuple(self.filter.cited)
        numbers, invalid = tuple(self.filter.numbers), tuple(self.filter.invalid)
        if cited and self.source_texts is not None:
            unquoted = _unquoted_citations(text, self.source_texts)
            if unquoted is not None:  # some markers are a source's footnotes, copied
                kept = {*unquoted, *invalid}  # a set: tuples made many numbers quadratic
                numbers = tuple(n for n in numbers if n in kept)
                cited = unquoted
        refused = _refuses(text, bool(cited), self.refusal)
        said = strip_citations(text).strip()
        if cited and (refused or _says_nothing(said)):
            # "[2] Insufficient ...": a refusal; "[1] [2] [3]": says nothing, backs nothing
            text, cited = said, ()
            removed = set(invalid)
            numbers = tuple(n for n in numbers if n in removed)
        self.answer = GroundedAnswer(
            text=text,
            raw="".join(self._raw),
            citations=cited,
            invalid_citations=invalid,
            refused=refused,
            numbers=numbers,
        )
        return out

    @property
    def raw(self) -> str:
        """Everything fed so far, unfiltered (the model's own text)."""
        return "".join(self._raw)

    @property
    def text(self) -> str:
        """Everything shown so far."""
        return "".join(self._shown)


def _unquoted_citations(text: str, source_texts: Sequence[str]) -> tuple[int, ...] | None:
    """The valid numbers of ``text``'s markers other than the sources' footnotes quoted or
    copied with their text, in order of first appearance; ``None`` when no marker is such a
    footnote."""
    quoted = footnotes_from_sources(text, source_texts)
    if not quoted:
        return None
    citations = find_citations(text, len(source_texts))
    return tuple(dict.fromkeys(n for c in citations if c.start not in quoted for n in c.cited))


def parse_answer(
    raw: str,
    n_sources: int,
    refusal: str = DEFAULT_REFUSAL,
    *,
    source_texts: Sequence[str] | None = None,
) -> GroundedAnswer:
    """Read a model's answer over ``n_sources`` numbered sources (module docstring: the rules).

    ``source_texts`` (the sources' texts as shown): a marker inside a quote copied from a
    source that holds it, or copied unquoted with the source's words around it, is that
    source's footnote, kept in the text but not a citation.

    Example::

        answer = parse_answer("Rome [2][5-6].", n_sources=3)
        answer.text, answer.citations, answer.invalid_citations   # ('Rome [2].', (2,), (5, 6))
        quoted = parse_answer('"Smith [1] found it" [2].', 2, source_texts=["Rome.", "Smith [1] found it."])
        quoted.citations                                          # (2,)
    """
    require_text(raw, "parse_answer: raw")
    stream = AnswerStream(n_sources, refusal, source_texts=source_texts)
    stream.feed(raw)
    stream.finish()
    assert stream.answer is not None
    return stream.answer


# --------------------------------------------------------------------- claims
# A sentence ends at a stop (". ! ?", a danda, "\u061f", "\u06d4"... see SENTENCE_STOPS) +
# whitespace (when a capital or caseless letter or an opening quote follows), or at a CJK
# full stop, which takes no space after it.
# A closing quotation mark or bracket right after the stop belongs to the sentence it ends.
_SPACED_STOPS = re.escape(SENTENCE_STOPS.translate(str.maketrans("", "", "\u3002\uff01\uff1f")))
_SENTENCE_BREAK = re.compile(
    rf"(?<=[{_SPACED_STOPS}])\s+|(?<=[{_SPACED_STOPS}][\"'\u201d\u2019)])\s+"
    r"|(?<=[\u3002\uff01\uff1f])\s*"
)
_SENTENCE_OPENERS = frozenset("\"'\u201c\u2018(")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each claim (sentence) of ``text``; see :func:`split_claims`.

    Example::

        sentence_spans("Opened: 14 days [1]. Sealed: 30 days [2].")   # [(0, 20), (21, 41)]
    """
    require_text(text, "sentence_spans: text")
    cuts, start = [], 0
    for match in _SENTENCE_BREAK.finditer(text):
        after = text[match.end() : match.end() + 1]
        cjk = text[match.start() - 1] in "\u3002\uff01\uff1f"
        capital = after.isalpha() and not after.islower()  # caseless scripts count too
        if after and (cjk or capital or after in _SENTENCE_OPENERS):
            cuts.append((start, match.start()))
            start = match.end()
    cuts.append((start, len(text)))
    spans = []
    for a, b in cuts:
        piece = text[a:b]
        if piece.strip():
            spans.append((a + len(piece) - len(piece.lstrip()), a + len(piece.rstrip())))
    return spans


def split_claims(answer: str) -> list[str]:
    """Sentences of ``answer``: split after ``. ! ?`` or another script's stop (``।``, ``؟``,
    ``۔``, ``။``, ``።``: :data:`SENTENCE_STOPS`), and a closing quote or parenthesis right
    after it, before a capital (or caseless) letter or an opening quote or parenthesis, and
    after the CJK full stops ``。！？``.

    A citation written after the full stop (``"Paris is big. [1]"``) stays with its sentence.

    Example::

        split_claims("Paris is in France [1]. É.U. is not [2]. 巴黎很大[1]。罗马也是[2]。")
        # ['Paris is in France [1].', 'É.U. is not [2].', '巴黎很大[1]。', '罗马也是[2]。']
    """
    require_text(answer, "split_claims: answer")
    return [answer[a:b] for a, b in sentence_spans(answer)]


def cited_claims(answer: str) -> list[tuple[str, tuple[int, ...]]]:
    """(claim, numbers) for each sentence of ``answer`` that cites: the sentence without its
    markers (whitespace collapsed) and every number it cites, valid or not, in order.

    Example::

        cited_claims("Paris is in France [1]. Rome is big. It is old [2][1].")
        # [('Paris is in France.', (1,)), ('It is old.', (2, 1))]
    """
    require_text(answer, "cited_claims: answer")
    marks = find_citations(answer)
    out: list[tuple[str, tuple[int, ...]]] = []
    i = 0
    for start, end in sentence_spans(answer):
        pieces, cursor, numbers = [], start, {}  # a dict: ordered, constant-time "seen?"
        while i < len(marks) and marks[i].end - len(marks[i].text) < end:
            mark = marks[i]
            i += 1
            pieces.append(answer[cursor : max(cursor, mark.start)])
            cursor = max(cursor, mark.end)
            numbers.update(dict.fromkeys((*mark.cited, *mark.invalid)))
        pieces.append(answer[cursor:end])
        if numbers:
            out.append((" ".join("".join(pieces).split()), tuple(numbers)))
    return out
