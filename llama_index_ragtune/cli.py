"""The ``ragtune`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)``
and ``run(args) -> int``; modules are imported only when their command runs,
so ``ragtune --help`` is instant. A ``COMMANDS`` entry is either a group of
commands (``ragtune train encoder``) or a single command (``ragtune report``).

Before a command runs (and before it imports torch or transformers), its
path arguments are checked by name (``INPUT_ARGUMENTS``: ``--beir``,
``--dataset``, ``--model``...; ``OUTPUT_ARGUMENTS``: ``--out``, ``--output``...):
a wrong one prints one line to stderr and exits with status 2. User errors
raised later (bad data, a missing file, a missing model package, a corrupt
persisted index) print one line and exit with status 1; ``--debug`` or
``RAGTUNE_DEBUG=1`` shows the traceback instead. An output folder that a failed
run created and left empty is removed. Paths are only ever opened, never passed
to a shell.

Example::

    ragtune bench retrieval --beir ../shared/data/scifact --split test
    ragtune train encoder --beir ../shared/data/scifact --out runs/encoder
    ragtune report runs/bundle/evaluation.json --out runs/report
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from llama_index_ragtune.commands.options import (
    UsageError,
    check_cache_folder,
    existing_file,
    output_folder_problem,
    path_kind,
    refuse_empty_path,
    shown_path,
)
from llama_index_ragtune.commands.parser import _NEGATIVE_NUMBER, _Parser  # noqa: F401
from llama_index_ragtune.commands.process import (
    StdoutUnwritable,
    Terminated,
    current_folder_gone,
    discard_stdout,
    package_warnings,
    progress_bars_for_logs,
    reserve_standard_descriptors,
    stdout_errors_named,
    stdout_reader_gone,
    termination_raises,
    unencodable_output_escaped,
)

# command group -> name -> (module, one-line help), or single command -> (module, one-line help)
COMMANDS: dict[str, dict[str, tuple[str, str]] | tuple[str, str]] = {
    "bench": {
        "retrieval": (
            "benchmarks.retrieval",
            "BM25 / dense / hybrid / reranked retrieval on a BEIR set",
        ),
        "tuning": (
            "benchmarks.tuning",
            "encoder and reranker tuning on a BEIR set: defaults, decisions, ablations",
        ),
        "generation": (
            "benchmarks.generation",
            "base vs grounded SFT vs SFT+DPO decoder",
        ),
        "scale": (
            "benchmarks.scale",
            "FAISS index types at 1M vectors and BM25 at 1M documents: build, memory, recall, latency",
        ),
        "synthetic": (
            "benchmarks.synthetic_queries",
            "tuning on synthetic questions from the bundled decoder, judged on real questions",
        ),
        "load": (
            "benchmarks.load",
            "hybrid retrieval (+ reranking) one at a time, 50 concurrent, threaded: q/s, p50/p95/p99",
        ),
        "hostile": (
            "benchmarks.hostile_inputs",
            "hostile answers, pages and reports timed at n and 2n: seconds and growth ratio",
        ),
    },
    "train": {
        "encoder": (
            "llama_index_ragtune.commands.train_encoder",
            "fine-tune the bi-encoder with mined hard negatives",
        ),
        "reranker": (
            "llama_index_ragtune.commands.train_reranker",
            "fine-tune the cross-encoder reranker",
        ),
        "decoder": (
            "llama_index_ragtune.commands.train_decoder",
            "grounded SFT (+ DPO) of the decoder",
        ),
    },
    "report": (
        "llama_index_ragtune.commands.report",
        "evaluation JSON -> one self-contained HTML page with charts + a Markdown summary",
    ),
    "tune": (
        "llama_index_ragtune.commands.tune",
        "your documents (+ questions) -> tuned encoder, reranker, decoder, evaluated, as a bundle",
    ),
    "demo": (
        "llama_index_ragtune.commands.demo",
        "tune and evaluate on the shipped help-centre corpus, offline, before/after answers",
    ),
    "refresh": (
        "llama_index_ragtune.commands.refresh",
        "retrain a bundle from user feedback; write a new version only when it measures better",
    ),
    "rollback": (
        "llama_index_ragtune.commands.rollback",
        "serve an earlier bundle version again (atomically)",
    ),
}


# Path arguments checked before a command runs, by their ``dest``: what each must be.
INPUT_ARGUMENTS: dict[str, Literal["beir", "file", "model"]] = {
    "beir": "beir",
    "scifact": "beir",
    "squad": "file",
    "qa": "file",
    "dataset": "file",
    "val_dataset": "file",
    "evaluation": "file",
    "model": "model",
    "base_model": "model",
    "decoder": "model",
    "encoder": "model",
    "encoder_model": "model",
    "question_model": "model",
    "reranker": "model",
    "reranker_model": "model",
    "teacher": "model",
    "teacher_encoder": "model",
}
# Folders a command may create: they must not be files and must be creatable.
OUTPUT_ARGUMENTS = ("out", "output", "embedding_cache", "cache_dir")
# Splits checked against the qrels files of ``--beir`` ('none' skips a split).
SPLIT_ARGUMENTS = ("split", "train_split", "eval_split")
DEBUG_ENV = "RAGTUNE_DEBUG"
_OFF = ("", "0", "false", "no", "off")  # RAGTUNE_DEBUG values that leave tracebacks off
VOCABULARY = """\
One name per concept in every command:
  --out DIR                 the folder a command writes (--output: deprecated name)
  --learning-rate, --lr     the optimizer's learning rate (--dpo-/--grpo-learning-rate: those stages)
  --train-batch-size N      examples per training step (per device)
  --generation-batch-size N prompts answered at once when a decoder generates
                            (--batch-size: its deprecated name in the decoder commands)
  --embedding-cache DIR     corpus embeddings of unchanged models, reused across runs
                            (--cache-dir: its deprecated name in `bench retrieval`)
  --max-train-examples N    training questions sampled (--max-examples: deprecated, train decoder)
  --time-budget MINUTES     training time; steps are planned to fit
  --seed N, --device NAME   as everywhere
"""


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ragtune",
        description=__doc__.splitlines()[0],
        epilog=VOCABULARY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug",
        dest="_debug",
        action="store_true",
        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)",
    )
    groups = parser.add_subparsers(dest="group", required=True)
    # Only the module of the command actually invoked is imported.
    wanted = tuple(a for a in argv if not a.startswith("-"))[:2]
    for group, commands in COMMANDS.items():
        if isinstance(commands, tuple):  # a single command: ragtune <name> ...
            _add_command(groups, group, commands, wanted[:1] == (group,))
            continue
        group_parser = groups.add_parser(group, help=f"{group} commands")
        sub = group_parser.add_subparsers(dest="command", required=True)
        for name, entry in commands.items():
            _add_command(sub, name, entry, wanted == (group, name))
    return parser


HARNESS = "benchmarks"


def _import_command(module: str) -> Any:
    """Import a command module; ``benchmarks.*`` must be this project's harness (a checkout)."""
    if module.split(".")[0] == HARNESS:
        try:
            harness = importlib.import_module(HARNESS)
        except ImportError:
            harness = None
        if getattr(harness, "HARNESS_OF", None) != "llama-index-ragtune":
            print(
                "ragtune: error: `ragtune bench` runs the benchmark harness in the benchmarks/ folder "
                "of a source checkout; clone the repository and install it with `pip install -e .`",
                file=sys.stderr,
            )
            raise SystemExit(2)
    return importlib.import_module(module)


def _add_command(
    subparsers: argparse._SubParsersAction, name: str, entry: tuple[str, str], wanted: bool
) -> None:
    module, help_text = entry
    cmd = subparsers.add_parser(name, help=help_text, description=help_text)
    if wanted:
        mod = _import_command(module)
        mod.add_arguments(cmd)
        with contextlib.suppress(argparse.ArgumentError):  # the command defines its own
            cmd.add_argument(
                "--debug",
                dest="_debug",
                action="store_true",
                default=argparse.SUPPRESS,
                help="show the full traceback of an error",
            )
        options = {action.dest: _shown_name(action) for action in cmd._actions}
        spellings = [o for action in cmd._actions for o in action.option_strings]
        cmd.set_defaults(_run=mod.run, _prog=cmd.prog, _options=options, _spellings=spellings)
        # options that must agree with each other, checked before the command's work
        cmd.set_defaults(_check=getattr(mod, "check_arguments", None))


def _shown_name(action: argparse.Action) -> str | None:
    """The name an argument goes by in messages: its first current long option, else its metavar."""
    old = getattr(action, "deprecated", ())
    names = [o for o in action.option_strings if o not in old]
    longs = [o for o in names if o.startswith("--")]
    if longs or names:
        return (longs or names)[0]
    return action.metavar if isinstance(action.metavar, str) else None


# --------------------------------------------------------------------------- checks


def check_arguments(args: argparse.Namespace, options: dict[str, str] | None = None) -> None:
    """Check the path arguments of ``args`` cheaply (no heavy imports); raise ``UsageError``.

    Inputs named in ``INPUT_ARGUMENTS`` must exist (a BEIR folder must hold its
    files, and the qrels of the splits asked for; a model must be an existing
    model folder or a hub id); outputs named in ``OUTPUT_ARGUMENTS`` must not be
    files and must be creatable. A leading ``~`` the shell left (``--out=~/runs``) is
    expanded in ``args``; ``-`` and an empty path are refused. ``options`` maps a
    ``dest`` to the option shown in messages (default ``--dest-with-dashes``).

    Example::

        check_arguments(argparse.Namespace(beir="/nope", split="test"))
        # UsageError: argument --beir: BEIR folder not found: /nope (...)
    """
    from llama_index_ragtune.data.beir import check_beir_folder
    from llama_index_ragtune.models import check_model_path

    values = vars(args)
    options = options or {}
    for dest in (*INPUT_ARGUMENTS, *OUTPUT_ARGUMENTS):  # `--out=~/runs`: the shell left the ~
        if isinstance(values.get(dest), str) and values[dest].startswith("~"):
            values[dest] = os.path.expanduser(values[dest])

    def option(dest: str) -> str:
        return options.get(dest) or "--" + dest.replace("_", "-")

    def check(dest: str, test: Callable[[], Any]) -> None:
        try:
            test()
        except (OSError, ValueError, argparse.ArgumentTypeError) as exc:
            message, value = str(exc), values.get(dest)
            if isinstance(value, str) and shown_path(value) != value:  # a line break in it
                message = message.replace(f"'{value}'", value).replace(value, shown_path(value))
            raise UsageError(f"argument {option(dest)}: {message}") from None

    for dest, kind in INPUT_ARGUMENTS.items():
        value = values.get(dest)
        if value is None:
            continue
        what = "BEIR folder" if kind == "beir" else kind
        check(dest, lambda value=value, what=what: refuse_empty_path(value, what))
        found = path_kind(os.path.expanduser(value))
        if kind != "file" and found not in (None, "a file", "a folder"):
            shown = shown_path(value)
            raise UsageError(f"argument {option(dest)}: {shown} is {found}, expected a folder")
        if kind == "beir":
            check(dest, lambda value=value: check_beir_folder(value))
            for split_dest in SPLIT_ARGUMENTS if dest == "beir" else ():
                split = values.get(split_dest)
                if split is not None and str(split).lower() != "none":
                    check(split_dest, lambda v=value, s=split: check_beir_folder(v, [str(s)]))
        elif kind == "model":
            check(dest, lambda value=value: check_model_path(value))
        else:
            check(dest, lambda value=value: existing_file(value))
    for dest in OUTPUT_ARGUMENTS:
        value = values.get(dest)
        if value is None or (dest == "cache_dir" and str(value).lower() == "none"):
            continue
        check(dest, lambda value=value: refuse_empty_path(value, "folder"))
        problem = output_folder_problem(Path(value))
        if problem:
            raise UsageError(f"argument {option(dest)}: {problem}")


# Commands that load no model, so never use the model cache.
MODEL_FREE_COMMANDS = ("report", "rollback")


def _new_folders(args: argparse.Namespace) -> list[Path]:
    """For each output argument, the topmost folder of its path that does not exist yet."""
    created = []
    for dest in OUTPUT_ARGUMENTS:
        value = getattr(args, dest, None)
        if not isinstance(value, (str, os.PathLike)) or str(value).lower() == "none":
            continue
        path = Path(value).expanduser().absolute()
        if path.exists():
            continue
        while not path.parent.exists() and path.parent != path:
            path = path.parent
        created.append(path)
    return created


def _remove_if_empty(folder: Path) -> None:
    """Delete ``folder`` when it holds nothing but (nested) empty folders."""
    if not folder.is_dir() or folder.is_symlink():
        return
    if all(entry.is_dir() and not entry.is_symlink() for entry in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe bad input: shown as one line, without a traceback."""
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.models import ModelNotInstalledError

    types: list[type[BaseException]] = [
        UsageError,
        DataError,
        ModelNotInstalledError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        FileExistsError,
    ]
    # Error classes of modules a command imported (a class not imported cannot have been raised).
    for module, name in (
        ("llama_index_ragtune.retrievers.persistence", "PersistenceError"),
        ("llama_index_ragtune.evaluation.results", "EvaluationFileError"),
        ("llama_index_ragtune.node_parser.documents", "DocumentParseError"),
        ("llama_index_ragtune.feedback.schema", "FeedbackStoreError"),
        ("llama_index_ragtune.data.synthetic", "SyntheticQueryError"),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            types.append(cls)
    return tuple(types)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ragtune`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0: success; 1: a user error while the command ran (one line on stderr); 2: a wrong
    argument, found before the command starts; 130: interrupted (Ctrl-C); 143 / 129:
    ended by SIGTERM / SIGHUP (a second signal while the first one's clean-up runs is held
    back until it ends); 141: the reader of stdout exited (``| head``), silently, as a
    program ended by SIGPIPE; 1 too when stdout cannot be written (a full disk). Unexpected
    errors (bugs) keep their traceback. Closed descriptors 0-2 get the null device first.

    Example::

        main(["bench", "retrieval", "--beir", "../shared/data/scifact", "--max-queries", "50"])
    """
    from_shell = argv is None  # the console script: the process ends when this returns
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "0").strip().lower() not in _OFF or "--debug" in argv
    prog = "ragtune"
    reserve_standard_descriptors()  # `2>&-`: the next file opened is not "stderr"
    if current_folder_gone():
        print(
            f"{prog}: error: the current folder no longer exists (deleted or moved while the "
            "shell was in it), so relative paths name nothing; cd to an existing folder and "
            "run again",
            file=sys.stderr,
        )
        return 2
    # the handlers stay while an interrupt is reported: a second Ctrl-C then is held back
    guards = (
        unencodable_output_escaped(),
        stdout_errors_named(),
        progress_bars_for_logs(),
        package_warnings(),
    )
    with termination_raises() as interruptions, guards[0], guards[1], guards[2], guards[3]:
        try:
            # a signal while the command is imported or its arguments checked is one line too
            args = _build_parser(argv).parse_args(argv)
            prog = interruptions.prog = args._prog
            status = _run_command(args)
            if sys.stdout is not None:  # a reader gone is found here, not at the last flush
                sys.stdout.flush()
            return status
        except KeyboardInterrupt as exc:
            if debug:
                raise
            interruptions.ending = from_shell  # the process exits next: signals stay ignored
            if isinstance(exc, Terminated):
                print(f"{prog}: terminated ({exc})", file=sys.stderr)
                return 128 + exc.signum
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            if debug or not stdout_reader_gone():
                raise
            discard_stdout()
            return 128 + getattr(signal, "SIGPIPE", 13)
        except StdoutUnwritable as exc:  # `>/dev/full`: was a traceback from print()
            if debug:
                raise
            discard_stdout()
            print(
                f"{prog}: error: cannot write to standard output: {exc.strerror}", file=sys.stderr
            )
            return 1


def _run_command(args: argparse.Namespace) -> int:
    """Check the arguments of the parsed command ``args`` and run it; the exit status."""
    # The command sees only its own arguments (some write them into their results).
    run = args.__dict__.pop("_run")
    prog = args.__dict__.pop("_prog")
    options = args.__dict__.pop("_options", None)
    args.__dict__.pop("_spellings", None)
    command_check = args.__dict__.pop("_check", None)
    debug = bool(args.__dict__.pop("_debug", False))
    debug = debug or os.environ.get(DEBUG_ENV, "0").strip().lower() not in _OFF
    try:
        check_arguments(args, options)
        if command_check is not None:
            command_check(args)
        if not prog.endswith(MODEL_FREE_COMMANDS):
            check_cache_folder()
    except UsageError as exc:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    new_folders = _new_folders(args)
    status = 1
    try:
        status = int(run(args) or 0)
        return status
    except Exception as exc:
        if debug or not isinstance(exc, _user_error_types()):
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if status != 0:
            for folder in new_folders:
                _remove_if_empty(folder)


if __name__ == "__main__":
    raise SystemExit(main())
