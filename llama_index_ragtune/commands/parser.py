"""The parser of ``ragtune``: usage errors on one line, negative numbers read as values,
an option given twice with two values refused, a mistyped command or option answered with
the closest real one.

Example::

    parser = _Parser(prog="ragtune")
    parser.add_argument("--lr", type=float)
    parser.parse_args(["--lr", "-1e3"])   # Namespace(lr=-1000.0)
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Any, NoReturn

#: A value that starts with "-" and is a number, read as a value, not an option: argparse
#: (3.11) reads only ``-5``/``-.5`` so; ``--time-budget -inf`` or ``--lr -1e3`` said
#: "expected one argument" instead of what is wrong with the number.
_NEGATIVE_NUMBER = re.compile(
    r"^-(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$|^-(?:inf|infinity|nan)$", re.IGNORECASE
)


END_OF_OPTIONS = (
    "'--' ends the options: what follows it is not read as an option; remove the '--', or put "
    "the options before it"
)


class _Parser(argparse.ArgumentParser):
    """Reports a usage error on one line (``prog: error: ...``) and exits with status 2.

    A negative number (``-5``, ``-1e3``, ``-inf``) after an option is its value, so the
    option's type says what is wrong with it; another value that starts with ``-`` reads
    as an option, and the message says to write ``--option=VALUE``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER
        self._arguments_seen: list[str] = []
        self.given: dict[str, tuple[str | None, Any]] = {}  # dest -> (option, value) so far
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._arguments_seen = list(sys.argv[1:] if args is None else args)
        self.given = {}
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """As ``argparse``, but an unknown option is reported by the command it was given
        to, with the closest option it has (``--dcos``: did you mean --docs?)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "_prog", self.prog)
            known = getattr(parsed, "_spellings", ())
            if "--" in self._arguments_seen:  # `ragtune tune --docs d --out o -- --seed 3`
                hint = f" ({END_OF_OPTIONS})"
            else:
                hints = [
                    f"{word.split('=')[0]}: did you mean {close[0]}?"
                    for word in extras
                    if word.startswith("--")
                    and (close := difflib.get_close_matches(word.split("=")[0], known, n=1))
                ]
                hint = f" ({'; '.join(hints)})" if hints else ""
            self.exit(
                2,
                f"{prog}: error: unrecognized arguments: {' '.join(extras)}{hint} "
                f"(see '{prog} --help')\n",
            )
        return parsed

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        """A plain ``int`` / ``float`` option reads numbers as ``bounded`` does: ``'٣'``,
        ``' 5 '`` or ``'5_000'`` is a usage error naming the option (Python read them as 3, 5
        and 5000)."""
        from llama_index_ragtune.commands.options import number_text_problem

        if action.type in (int, float) and isinstance(arg_string, str):
            problem = number_text_problem(arg_string)
            if problem:
                noun = "a whole number" if action.type is int else "a number"
                raise argparse.ArgumentError(
                    action, f"expected {noun}, got {arg_string!r}: {problem}"
                )
        return super()._get_value(action, arg_string)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """A value outside the choices (a command, ``--bm25-analyzer``) names the closest."""
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            choices = [str(c) for c in action.choices or ()]
            close = difflib.get_close_matches(str(value), choices, n=1)
            if not close:
                raise
            raise argparse.ArgumentError(
                action, f"{exc.message} (did you mean {close[0]!r}?)"
            ) from None

    def error(self, message: str) -> NoReturn:
        message += self._dash_value_hint(message)
        if "--" in self._arguments_seen and "arguments are required" in message:
            message += f" ({END_OF_OPTIONS})"
        for action in self._actions:  # was "the following arguments are required: group"
            if isinstance(action, argparse._SubParsersAction) and message.endswith(
                f"the following arguments are required: {action.dest}"
            ):
                message = f"missing the command: choose one of {', '.join(action.choices)}"
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _dash_value_hint(self, message: str) -> str:
        """How to pass the value that an option missed because it starts with ``-``."""
        if not message.endswith("expected one argument"):
            return ""
        names = message.removeprefix("argument ").split(":")[0].split("/")
        seen = self._arguments_seen
        for option, value in zip(seen, seen[1:], strict=False):
            if option in names and value.startswith("-"):
                return f" ({value!r} reads as an option: write {option}={value})"
        return ""


class StoreOnce(argparse._StoreAction):
    """``store`` that refuses an option given twice with two values (``--out a --out b``):
    only the last was kept, silently (the same value twice is accepted).

    Example::

        parser.add_argument("--out", action=StoreOnce)   # the default action of _Parser
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        refuse_second_value(self, parser, values, option_string)
        setattr(namespace, self.dest, values)


def refuse_second_value(
    action: argparse.Action, parser: Any, values: Any, option_string: str | None
) -> None:
    """``argparse.ArgumentError`` when ``action``'s option was given before with another value
    (under any of its names); else remember this one.

    Example::

        refuse_second_value(self, parser, values, option_string)   # in an Action's __call__
    """
    given = getattr(parser, "given", None)
    if not isinstance(given, dict) or not action.option_strings:
        return
    earlier = given.setdefault(action.dest, (option_string, values))
    if not _same_value(earlier[1], values):
        first, second = (earlier[0] or "", earlier[1]), (option_string or "", values)
        raise argparse.ArgumentError(
            action,
            f"given twice, with two values ({first[0]} {first[1]}, then {second[0]} {second[1]}):"
            " only one is used; give it once",
        )


def _same_value(first: Any, second: Any) -> bool:
    """Whether two values of one option are the same: NaN is not equal to itself, so
    ``--time-budget nan`` given once was "given twice, with two values"."""
    if first is second or first == second:
        return True
    return (
        isinstance(first, float)
        and isinstance(second, float)
        and first != first
        and second != second  # both NaN
    )
