"""Option types of the ``ragtune`` commands and benchmarks: what a value must be, checked
when the command line is parsed (a usage error naming the option, exit status 2) instead
of a traceback once data and models are loaded.

Example::

    import argparse
    from llama_index_ragtune.commands.options import bounded, existing_file, seed_number

    parser = argparse.ArgumentParser()
    parser.add_argument("--top-k", type=bounded(int, 1), default=3)
    parser.add_argument("--seed", type=seed_number, default=0)
    parser.add_argument("evaluation", type=existing_file)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic_reads import path_kind

MAX_MINUTES = 1_000_000
"""Most minutes a ``--time-budget`` / ``--time-limit`` may be (``finetuning.budget.MAX_MINUTES``,
repeated here because that module imports torch): more overflowed to infinite seconds mid-run."""
MAX_WHOLE_NUMBER = 2**63 - 1
"""The largest whole number a ``bounded(int, ...)`` option takes (what torch and NumPy hold;
a larger one raised ``OverflowError`` as a traceback while the command line was read)."""
MAX_SEED = 2**32 - 1
"""The largest ``--seed`` (NumPy's and so the trainers' limit; a seed is never negative)."""


class DeprecatedNames(argparse.Action):
    """``store`` that accepts old option names and says the current one on stderr.

    Example::

        parser.add_argument("--out", "--output", dest="out", action=DeprecatedNames,
                            deprecated=("--output",), help="output folder")
        # `--output runs/x` works and prints: warning: --output is deprecated; use --out
    """

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        deprecated: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.deprecated = tuple(deprecated)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from llama_index_ragtune.commands.parser import refuse_second_value

        refuse_second_value(self, parser, values, option_string)
        if option_string in self.deprecated:
            current = next(o for o in self.option_strings if o not in self.deprecated)
            print(
                f"{parser.prog}: warning: {option_string} is deprecated; use {current}",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


class _GivenList(str):
    """A ``CommaList`` value given on the command line (not the default)."""


class CommaList(argparse.Action):
    """A comma-separated list option that may be given more than once: ``--skip encoder
    --skip decoder`` is ``"encoder,decoder"`` (a plain option kept only the last, so the
    encoder was trained). The first use replaces the default.

    Example::

        parser.add_argument("--skip", action=CommaList, metavar="STEP,...")
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        earlier = getattr(namespace, self.dest, None)
        joined = f"{earlier},{values}" if isinstance(earlier, _GivenList) else values
        setattr(namespace, self.dest, _GivenList(joined))


class UsageError(Exception):
    """A command-line argument is wrong; ``main`` prints the message and exits with status 2."""


def number_text_problem(text: str) -> str | None:
    """Why ``text`` is not a number as a command line writes one, or None. Python's ``int`` and
    ``float`` also read other digits (``'٣'``, ``'５'``), spaces or a line break around the
    number (``' 5 '``, ``'5\\n'``) and ``_`` between digits (``'5_000'``): a pasted or mistyped
    value was used as some number, silently; only ASCII digits, a sign, ``.``, ``e`` and
    ``inf`` / ``nan`` pass here (the option's type then says which values it takes).

    Example::

        number_text_problem("5"), number_text_problem("5_000")   # (None, "write it without '_' ...")
    """
    if not text.isascii():
        return "write it in ASCII digits 0-9 (it holds other characters)"
    if text != text.strip():
        return "remove the spaces or line breaks around it"
    if "_" in text:
        return "write it without '_' (5000, not 5_000)"
    return None


def existing_file(text: str) -> str:
    """``argparse`` type: a path to an existing file (checked without opening it).

    Example::

        parser.add_argument("evaluation", type=existing_file)
    """
    refuse_empty_path(text, "file")
    text = os.path.expanduser(text)  # `--docs=~/shop`: the shell left the ~
    kind, shown = path_kind(text), shown_path(text)
    if kind is None:
        raise argparse.ArgumentTypeError(f"file not found: {shown}")
    if kind == "a folder":
        raise argparse.ArgumentTypeError(f"{shown} is a folder, expected a file")
    if kind != "a file":
        stream = "link" not in kind and "unreachable" not in kind
        hint = "; pass a file (save a stream to one first)" if stream else "; pass a file"
        raise argparse.ArgumentTypeError(f"{shown} is {kind}, not a regular file{hint}")
    return text


def refuse_empty_path(text: str, what: str) -> None:
    """An empty path (``--docs ""``, an unset shell variable) is ``Path("")``, the current
    folder: refused instead of reading (or writing into) wherever the command was started;
    ``-`` too (stdin / stdout to most tools; it made a folder named ``-``)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError(f"the path is empty; pass a {what}")
    if str(text).strip() == "-":  # "-" is stdin / stdout to most tools: never a file here
        raise argparse.ArgumentTypeError(
            f"'-' (standard input / output) is not read or written here; pass a {what} "
            "(./- for one named '-')"
        )


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a message shows it: as it is, or quoted with escapes (``'a\\nb.jsonl'``)
    when it holds a character that does not print as itself (a line break, a tab, another
    control character, a no-break space): printed raw they split the one-line error, or,
    folded to spaces, named another path.

    Example::

        shown_path("docs/a.md"), shown_path("a\\nb")   # ('docs/a.md', "'a\\\\nb'")
    """
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


def seed_number(text: str) -> int:
    """``argparse`` type of ``--seed``: a whole number in [0, 2**32 - 1], what the trainers'
    ``set_seed`` accepts (``-1`` used to fail with a traceback once training started).

    Example::

        parser.add_argument("--seed", type=seed_number, default=0)
    """
    try:
        value = -1 if number_text_problem(text) else int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to {MAX_SEED}, got {text!r}"
        )
    return value


def check_device_option(device: str | None, option: str = "--device") -> str | None:
    """``device`` (None: pick the best available) when this machine can run a model there,
    else a ``UsageError`` naming ``option``: a typo (``gpu``), or a device that is not here
    (``cuda`` without a GPU, ``mps`` off a Mac), found before any data or model is loaded
    instead of as a traceback once the model moves there (``llms.loading.check_device``).

    Example::

        check_device_option("cpu")     # 'cpu'
        check_device_option("mps")     # UsageError: argument --device: device='mps' is not
                                       # available here (...) on a machine without it
    """
    if device is None:
        return None
    from llama_index_ragtune.llms.loading import check_device

    try:
        return check_device(device, f"argument {option}")
    except (TypeError, ValueError) as exc:
        # the library's "None to pick one" is leaving the option out on the command line
        raise UsageError(str(exc).replace("None to pick", f"leave out {option} to pick")) from None


def bounded(
    kind: type[int] | type[float], low: float, high: float | None = None, above: bool = False
) -> Callable[[str], Any]:
    """``argparse`` type: a finite ``kind`` (``int`` or ``float``) >= ``low`` (> ``low`` with
    ``above``) and <= ``high``. NaN, inf, 0 or a negative number in a count, a share or a
    rate is a usage error naming the option, instead of a traceback (or a wasted training
    run) later.

    Example::

        parser.add_argument("--top-k", type=bounded(int, 1), default=3)
        parser.add_argument("--p-no-gold", type=bounded(float, 0, 1), default=0.1)
    """
    noun = "a whole number" if kind is int else "a number"

    def show(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    expected = f"{noun} {'>' if above else '>='} {show(low)}"
    if high is not None:
        expected = (
            f"{expected} and at most {show(high)}"
            if above
            else f"{noun} from {show(low)} to {show(high)}"
        )

    def parse(text: str) -> Any:
        shown = repr(text) if len(text) <= 24 else f"{text[:12]!r}... ({len(text)} characters)"
        problem = number_text_problem(text)
        if problem:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown}: {problem}")
        try:
            value = kind(text) + kind(0)  # + 0: -0.0 is 0.0
        except ValueError:
            value = None
        if kind is int and value is not None and value > MAX_WHOLE_NUMBER:
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got {shown}: above {MAX_WHOLE_NUMBER} (2**63 - 1)"
            )
        if (
            value is None
            or not (kind is int or math.isfinite(value))  # an int is finite, maybe too big
            or (value <= low if above else value < low)
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown}")
        return value

    parse.__name__ = expected
    return parse


def existing_dir(text: str) -> str:
    """``argparse`` type: a path to an existing folder.

    Example::

        parser.add_argument("--corpus-dir", type=existing_dir)
    """
    refuse_empty_path(text, "folder")
    text = os.path.expanduser(text)  # `--docs=~/shop`: the shell left the ~
    kind, shown = path_kind(text), shown_path(text)
    if kind is None:
        raise argparse.ArgumentTypeError(f"folder not found: {shown}")
    if kind != "a folder":
        raise argparse.ArgumentTypeError(f"{shown} is {kind}, expected a folder")
    return text


def bm25_language(text: str) -> str:
    """``argparse`` type of ``--bm25-language``: a stemmer name, or ``"none"`` (no stemming).

    Example::

        parser.add_argument("--bm25-language", type=bm25_language)   # "german", "none"
    """
    from llama_index_ragtune.retrievers.bm25_index import check_bm25_language, stemmer_languages

    try:
        if text != "none":
            check_bm25_language(text, "--bm25-language")
        return text  # as given: an OptionDefault default stays one
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"unknown BM25 language {text!r}: use one of {', '.join(stemmer_languages())}, or "
        "'none' for no stemming (the language of your documents, e.g. 'german')"
    )


def bm25_language_value(option: str | None) -> str | None:
    """The ``bm25_language`` setting of a ``--bm25-language`` value (``"none"``: ``None``).

    Example::

        bm25_language_value("none"), bm25_language_value("german")   # (None, 'german')
    """
    return None if option == "none" else option


def bm25_stopwords(text: str) -> str:
    """``argparse`` type of ``--bm25-stopwords``: ``language`` (the stemmer language's list),
    ``none``, a bm25s list code (``en``, ``de``, ``fr``, ...) or comma-separated words
    (``the,a,an``; one word: ``sku,``). Returned as given (see :func:`bm25_stopwords_value`).

    Example::

        parser.add_argument("--bm25-stopwords", type=bm25_stopwords)   # "de", "the,a,an"
    """
    try:
        bm25_stopwords_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text  # as given: an OptionDefault default stays one


def bm25_stopwords_value(option: Any) -> str | list[str] | None:
    """:func:`llama_index_ragtune.retrievers.bm25_index.bm25_stopwords_value`, imported when
    called (building the command line needs no LlamaIndex import).

    Example::

        bm25_stopwords_value("The,A")   # ['the', 'a']
    """
    from llama_index_ragtune.retrievers.bm25_index import bm25_stopwords_value as setting

    return setting(option)


class OptionDefault(str):
    """An option's default value, told apart from the same value given on the command line
    (``ragtune train reranker`` takes the encoder run's BM25 settings only where none is given).

    Example::

        parser.add_argument("--bm25-analyzer", default=OptionDefault("plain"))
        isinstance(args.bm25_analyzer, OptionDefault)     # True: not given
    """


def check_cache_folder() -> None:
    """Refuse (``UsageError``) a model cache folder that cannot be made, naming the variable
    that put it there (``RAGTUNE_CACHE_DIR``, ``XDG_CACHE_HOME`` or ``HOME``): a file or an
    unwritable folder failed the run once the index was built, naming no variable.

    Example::

        check_cache_folder()   # XDG_CACHE_HOME=/etc/passwd: UsageError "... is a file ..."
    """
    from llama_index_ragtune.models import CACHE_ENV, cache_dir

    folder = cache_dir()
    problem = output_folder_problem(folder)
    if problem is None:
        return
    source = next(
        (
            f"{name}={shown_path(os.environ[name])}"
            for name in (CACHE_ENV, "XDG_CACHE_HOME", "HOME")
            if os.environ.get(name)
        ),
        "the default",
    )
    raise UsageError(
        f"the model cache folder {shown_path(folder)} (from {source}) cannot be used: {problem}; "
        f"set {CACHE_ENV} to a writable folder"
    )


def output_folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder (an output folder of a command), or None.

    Example::

        output_folder_problem(Path("/dev/null/runs"))   # 'cannot create ...: /dev/null is a character device'
    """
    kind, shown = path_kind(path), shown_path(path)
    if kind is not None and kind != "a folder":
        return f"{shown} is {kind}, expected a folder (it is created if missing)"
    parent = path
    while path_kind(parent) is None:
        if parent.parent == parent:
            return None
        parent = parent.parent
    parent_kind = path_kind(parent)
    if parent_kind != "a folder":
        return f"cannot create {shown}: {shown_path(parent)} is {parent_kind}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write to {shown_path(parent)}: permission denied"
    return None


def check_out_apart(out: Any, models: dict[str, tuple[Any, tuple[str, ...]]]) -> None:
    """``UsageError`` before any model loads when ``--out`` is a model folder an option names,
    lies inside it, or holds it in a folder the run writes over.

    ``models``: option -> (its value, the folders of ``--out`` the run writes: for the starting
    model ``challenger`` ..., for a model only read ``final`` too); ``checkpoint-N`` folders
    (rotated away) always count. A value that is not a local folder (a hub id, None) is skipped.
    The engines check the starting model again when they are built, after the data is read.

    Example::

        check_out_apart("runs/rr", {"--encoder": ("runs/rr/final", ("final", "challenger"))})
    """
    if out is None:
        return
    target = Path(out).expanduser().resolve()
    for option, (value, written) in models.items():
        if not isinstance(value, (str, os.PathLike)) or not Path(value).expanduser().is_dir():
            continue
        model = Path(value).expanduser().resolve()
        if target == model or model in target.parents:
            where = "is" if target == model else "lies inside"
            raise UsageError(
                f"argument --out: {shown_path(out)} {where} the folder of {option} "
                f"{shown_path(value)}: the run would write among the model's files; choose "
                "an --out outside it"
            )
        if target in model.parents:
            part = model.relative_to(target).parts[0]
            if part in written or part.startswith("checkpoint-"):
                raise UsageError(
                    f"argument --out: {option} {shown_path(value)} lies in "
                    f"{shown_path(target / part)}, which this run writes over; choose another "
                    f"--out, or copy the model elsewhere first"
                )
