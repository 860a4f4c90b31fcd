"""Glob patterns and path keys: how ``metadata.json`` names the files of a docs folder.

``glob_match`` matches a relative path against a glob (``*`` stays inside a folder, ``**``
crosses folders) in time proportional to ``len(pattern) * len(path)``; ``path_key`` is
the one spelling that ``./grocery\\returns.md`` and ``grocery/returns.md`` share.

Example::

    from llama_index_ragtune.pipeline.path_globs import glob_match, path_key

    glob_match("grocery/**/*.md", path_key("./grocery/fresh/apples.md"))   # True
"""

from __future__ import annotations

import unicodedata


def _glob_tokens(pattern: str) -> list[str]:
    """``**/``, ``**``, ``*``, ``?`` or one literal character per token."""
    tokens, i = [], 0
    while i < len(pattern):
        for token in ("**/", "**", "*", "?"):
            if pattern.startswith(token, i):
                break
        else:
            token = pattern[i]
        if not (token == "**/" and tokens[-1:] == ["**/"]):  # a run of **/ is one **/
            tokens.append(token)
        i += len(token)
    return tokens


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern`` (``*`` = any characters but ``/``, ``**/`` = any
    folders or none, ``**`` = anything, ``?`` = one character but ``/``).

    Runs in time proportional to ``len(pattern) * len(path)`` whatever the pattern
    (a regular expression backtracks for minutes on ``**/**/**/...`` against a deep path).

    Example::

        glob_match("grocery/**/*.md", "grocery/fresh/apples.md")      # True
    """
    tokens = _glob_tokens(pattern)
    end = len(tokens)
    # States: token index i (about to match tokens[i]) or -1 - i (inside the ".*" of a
    # "**/" at i, which must still end in "/").

    def closure(states: set[int]) -> set[int]:
        todo, out = list(states), set(states)
        while todo:
            i = todo.pop()
            if 0 <= i < end and tokens[i] in ("**/", "**", "*") and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return out

    states = closure({0})
    for ch in path:
        step: set[int] = set()
        for i in states:
            if i < 0:  # inside a "**/"
                step.add(i)
                if ch == "/":
                    step.add(-i)  # -1 - i is the token; its successor is -i
                continue
            if i == end:
                continue
            token = tokens[i]
            if token == "**/":
                step.add(-1 - i)
                if ch == "/":
                    step.add(i + 1)
            elif token == "**" or (token == "*" and ch != "/"):
                step.add(i)
            elif (token == "?" and ch != "/") or token == ch:
                step.add(i + 1)
        if not step:
            return False
        states = closure(step)
    return end in states


def path_key(name: str) -> str:
    """The form two spellings of one relative path share: NFC, ``/`` separators, no ``./``.

    A leading ``/`` is kept: an absolute path is not the relative path after it (with
    the docs folder at ``/a``, ``/a/x.md`` is its ``x.md``, not ``a/x.md``).

    Example::

        path_key("./grocery\\returns.md"), path_key("/grocery/returns.md")
        # ('grocery/returns.md', '/grocery/returns.md')
    """
    text = unicodedata.normalize("NFC", name).replace("\\", "/")
    relative = "/".join(part for part in text.split("/") if part not in ("", "."))
    return "/" + relative if text.startswith("/") else relative
