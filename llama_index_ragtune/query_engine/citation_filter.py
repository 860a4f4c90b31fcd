"""Removing citations to sources that do not exist, from whole answers and from streams.

``CitationQueryEngine`` numbers its sources ``1..n``; a model may still cite
``[7]``. :class:`CitationFilter` removes such citations (keeping the valid part
of a group: ``[1, 9]`` -> ``[1]``) and gives the same text whether the answer
arrives whole or in streamed chunks, so a reader never sees an invalid citation.

Example::

    from llama_index_ragtune.query_engine.citation_filter import CitationFilter

    cleaner = CitationFilter(n_sources=2)
    cleaner.clean("Paris [1][9]. Rome [2, 7].")     # 'Paris [1]. Rome [2].'
    cleaner.invalid                                 # [9, 7]
"""

from __future__ import annotations

import re

__all__ = ["CitationFilter", "StreamCleaner"]

_CITATION_GROUP = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_OPEN_GROUP = re.compile(r"\[[\d,\s]*")


class CitationFilter:
    """Removes citations to sources outside ``1..n_sources`` from text, also when fed chunk by chunk.

    ``[9]`` disappears together with the whitespace before it; ``[1, 9]``
    becomes ``[1]``; text in brackets that is not a citation (``[x]``, ``[ 1 ]``)
    is kept as written. Feeding a text in any chunks gives the same output as
    feeding it whole, so streamed and non-streamed answers read the same.
    ``invalid`` lists the removed numbers in order of first appearance.

    Example::

        chunks = CitationFilter(n_sources=1)
        "".join(chunks.feed(part) for part in ["Paris [", "1][", "4]."]) + chunks.flush()
        # 'Paris [1].'
    """

    def __init__(self, n_sources: int) -> None:
        self.n_sources = n_sources
        self.invalid: list[int] = []
        self._space = ""
        self._bracket: str | None = None
        # (whitespace, text) of outer "[..." runs held back while an inner "[" is read: once
        # an inner citation is removed, the outer run may turn out to be a citation too.
        self._held: list[tuple[str, str]] = []

    def _resolve(self, group: str) -> str:
        match = _CITATION_GROUP.fullmatch(group)
        if match is None:
            return group  # "[x]", "[ 1 ]": not a citation, kept as written
        numbers = [int(p) for p in match.group(1).split(",")]
        bad = [n for n in numbers if not 1 <= n <= self.n_sources]
        for n in bad:
            if n not in self.invalid:
                self.invalid.append(n)
        if not bad:
            return group
        good = [str(n) for n in numbers if n not in bad]
        return f"[{', '.join(good)}]" if good else ""

    def feed(self, chunk: str) -> str:
        """Filter the next chunk; text that may still become a citation is held back."""
        out: list[str] = []
        for ch in chunk:
            if self._bracket is not None:
                if ch == "[":  # "[[9]7]": hold the outer run, read the inner citation first
                    self._held.append((self._space, self._bracket))
                    self._space, self._bracket = "", "["
                    continue
                self._bracket += ch
                if ch == "]":
                    resolved = self._resolve(self._bracket)
                    if resolved:
                        out.append(self._release() + self._space + resolved)
                        self._space, self._bracket = "", None
                    elif self._held:  # removed: read on as the outer run ("[" + "7]" -> "[7]")
                        self._space, self._bracket = self._held.pop()
                    else:
                        self._space, self._bracket = "", None
                elif not _OPEN_GROUP.fullmatch(self._bracket):
                    out.append(self._release() + self._space + self._bracket)
                    self._space, self._bracket = "", None
            elif ch == "[":
                self._bracket = "["
            elif ch.isspace():
                self._space += ch
            else:
                out.append(self._space + ch)
                self._space = ""
        return "".join(out)

    def flush(self) -> str:
        """The text held back at the end of the input (whitespace, an unclosed ``[``)."""
        rest = self._release() + self._space + (self._bracket or "")
        self._space, self._bracket = "", None
        return rest

    def _release(self) -> str:
        held = "".join(space + text for space, text in self._held)
        self._held.clear()
        return held

    def clean(self, text: str) -> str:
        """Filter a whole text (``feed`` then ``flush``)."""
        return self.feed(text) + self.flush()


class StreamCleaner:
    """Streams ``CitationFilter`` output with the same outer whitespace stripping as a whole answer.

    Example::

        stream = StreamCleaner(n_sources=1)
        "".join([stream.feed(" Paris [1]"), stream.feed("[3]. "), stream.finish()])  # 'Paris [1].'
        stream.raw, stream.filter.invalid        # (' Paris [1][3]. ', [3])
    """

    def __init__(self, n_sources: int) -> None:
        self.filter = CitationFilter(n_sources)
        self._raw: list[str] = []
        self._out: list[str] = []

    def _emit(self, text: str) -> str:
        if not self._out:
            text = text.lstrip()
        if text:
            self._out.append(text)
        return text

    def feed(self, delta: str) -> str:
        """The cleaned text to show for the next streamed ``delta``."""
        self._raw.append(delta)
        return self._emit(
            self.filter.feed(delta)
        )  # trailing whitespace stays pending in the filter

    def finish(self) -> str:
        """The cleaned rest once the stream has ended (trailing whitespace dropped)."""
        return self._emit(self.filter.flush().rstrip())

    @property
    def raw(self) -> str:
        """Everything fed so far, unfiltered (the model's own text)."""
        return "".join(self._raw)

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._out)
