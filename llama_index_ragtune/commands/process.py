"""How a ``ragtune`` command meets its process: signals, stdout, stderr and the current folder.

``cli.main`` runs every command inside these guards: SIGTERM / SIGHUP stop it as Ctrl-C
does (clean-up runs, one line, status 128 + the signal; a second signal during the
clean-up is held back until it ends), a stdout that cannot encode a
character escapes it, a reader of stdout that went away ends the command quietly (status
141), a deleted current folder is named before anything runs, and the library's logged
warnings show as ``warning: ...`` lines when the program configured no logging.

Example::

    from llama_index_ragtune.commands.process import termination_raises

    with termination_raises():
        ...  # `kill PID` raises Terminated here; `finally` blocks run
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is so that it stops as Ctrl-C does: its
    ``finally`` blocks run (locks, temporary files, empty output folders), one line is
    printed and the exit status is 128 + the signal (143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _being_handled(first: BaseException) -> bool:
    """Whether ``first`` is the exception being handled now (a ``finally``, ``except`` or
    ``__exit__`` running because of it), or the context or cause of that one."""
    seen: set[int] = set()
    exc = sys.exc_info()[1]
    while exc is not None and id(exc) not in seen:
        if exc is first:
            return True
        seen.add(id(exc))
        exc = exc.__context__ or exc.__cause__
    return False


class _Interruptions:
    """The handler of SIGINT / SIGTERM / SIGHUP while a command runs: the first signal
    raises (``KeyboardInterrupt`` / ``Terminated``); one that comes while the clean-up of
    that first one runs is held back, so the clean-up ends (temporary files removed,
    locks released) instead of being cut short, and one line says so."""

    def __init__(self) -> None:
        self.prog = "ragtune"
        self.first: KeyboardInterrupt | None = None
        self.held_back = 0
        self.ending = False  # set: the process ends next, so the signals stay ignored after

    def __call__(self, signum: int, frame: Any) -> None:
        if self.first is not None and _being_handled(self.first):
            self.held_back += 1
            if self.held_back == 1:  # os.write: print() may be in the middle of a write
                line = (
                    f"{self.prog}: {signal.Signals(signum).name} while cleaning up after the "
                    "interrupt: the clean-up finishes first, then the command stops "
                    "(further signals are held back too; Ctrl-\\ quits at once)\n"
                )
                with contextlib.suppress(OSError, ValueError):
                    os.write(2, line.encode("utf-8", "backslashreplace"))
            return
        self.first = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
        raise self.first


@contextlib.contextmanager
def termination_raises() -> Any:
    """While the command runs, SIGTERM / SIGHUP raise ``Terminated`` (Python's default ends
    the process at once: no message, no clean-up) and Ctrl-C ``KeyboardInterrupt``; a
    second signal while the clean-up of the first runs is held back (one line), so the
    clean-up is not cut short. A signal set to be ignored (``nohup``, SIGINT of a
    background job) stays ignored; outside the main thread nothing changes. Yields the
    handler: its ``prog`` names the command in the line it prints; ``ending = True``
    leaves the signals ignored afterwards (the process exits next).

    Example::

        with termination_raises():
            run_the_command()   # `kill PID`: Terminated (a KeyboardInterrupt) raised here
    """
    handler = _Interruptions()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    earlier = {}
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current is signal.SIG_DFL or (
            signum == signal.SIGINT and current is signal.default_int_handler
        ):
            earlier[signum] = signal.signal(signum, handler)
    try:
        yield handler
    finally:
        for signum, previous in earlier.items():
            # a signal during the interpreter's exit printed "Exception ignored ..." lines
            signal.signal(signum, signal.SIG_IGN if handler.ending else previous)


@contextlib.contextmanager
def unencodable_output_escaped() -> Any:
    """A stdout that cannot encode every character (``PYTHONIOENCODING=ascii``) writes
    ``\\xe9`` for ``é``, as stderr does, instead of raising ``UnicodeEncodeError`` when a
    finished command prints a path or a question (after all its work).

    Example::

        with unencodable_output_escaped():
            print("résumé.md")   # PYTHONIOENCODING=ascii: r\xe9sum\xe9.md
    """
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    encoding = str(getattr(stream, "encoding", None) or "utf-8")
    try:
        whole = codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        whole = False
    if errors != "strict" or whole or not hasattr(stream, "reconfigure"):
        yield
        return
    stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):  # closed, or its reader gone
            stream.reconfigure(errors=errors)


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has exited (``ragtune ... | head -1``).

    Example::

        stdout_reader_gone()   # False while the terminal or the pipe's reader is there
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return True  # no way to tell: the usual cause
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def discard_stdout() -> None:
    """Point stdout at the null device so the interpreter's last flush cannot fail again.

    Example::

        if stdout_reader_gone():
            discard_stdout()
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def current_folder_gone() -> bool:
    """Whether the process's current folder was deleted (``os.getcwd`` fails): relative
    paths then read as "not found" and absolute ones failed later without a name.

    Example::

        current_folder_gone()   # False, unless the shell's folder was removed
    """
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


def reserve_standard_descriptors() -> list[int]:
    """Open the null device on each of descriptors 0, 1, 2 that is closed (``ragtune ...
    >&-``, ``2>&-``, ``<&-``); the numbers opened are returned. Left closed, the next file the
    command opened took the number, so whatever a library wrote to "stderr" (C and Rust code
    write to descriptor 2 itself) went into that file: an output, a model, a database.

    Example::

        reserve_standard_descriptors()   # [2] after `2>&-`, else []
    """
    reserved = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
                reserved.append(fd)
    return reserved


class StdoutUnwritable(OSError):
    """Standard output failed with an error other than a gone reader (a full disk:
    ``>/dev/full``, an I/O error); ``main`` says so in one line, exit status 1."""


class _GuardedStdout:
    """``sys.stdout`` whose write errors (but a gone reader) are :class:`StdoutUnwritable`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _guarded(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutUnwritable(exc.errno, exc.strerror or str(exc)) from exc

    def write(self, text: str) -> Any:
        return self._guarded("write", text)

    def flush(self) -> Any:
        return self._guarded("flush")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def stdout_errors_named() -> Any:
    """While the command runs, an ``OSError`` writing to stdout (``ragtune report
    >/dev/full``) is raised as :class:`StdoutUnwritable` so it is told from a file the
    command writes (it was a traceback from ``print``).

    Example::

        with stdout_errors_named():
            print(path)   # >/dev/full: StdoutUnwritable(28, 'No space left on device')
    """
    stream = sys.stdout
    if stream is None:  # started with stdout closed: print() writes nothing
        yield
        return
    sys.stdout = _GuardedStdout(stream)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _GuardedStdout):
            sys.stdout = stream


PROGRESS_INTERVAL_ENV = "TQDM_MININTERVAL"
LOG_PROGRESS_SECONDS = "30"
"""Seconds between two redraws of a progress bar written to a log (not a terminal)."""


@contextlib.contextmanager
def progress_bars_for_logs() -> Any:
    """When stderr is not a terminal (a CI log, ``2>run.log``) or ``TERM=dumb``, progress
    bars redraw every 30 seconds instead of ten times a second (each redraw is a line in a
    log: about 36,000 an hour per bar), unless ``TQDM_MININTERVAL`` is set. ``tqdm`` reads
    the variable once, when imported: a process that imported it already is left as it is.

    Example::

        with progress_bars_for_logs():
            run_the_command()   # `ragtune tune ... 2>run.log`: a bar line every 30 s
    """
    stream = sys.stderr
    try:
        terminal = stream is not None and stream.isatty()
    except (ValueError, OSError):
        terminal = False
    plain = terminal and os.environ.get("TERM", "") != "dumb"
    if plain or PROGRESS_INTERVAL_ENV in os.environ or "tqdm.std" in sys.modules:
        yield
        return
    os.environ[PROGRESS_INTERVAL_ENV] = LOG_PROGRESS_SECONDS
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_INTERVAL_ENV, None)


class _WarningLines(logging.Formatter):
    """``warning: <message>`` (``error: ...``), as the commands' own warning lines read."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


@contextlib.contextmanager
def package_warnings() -> Iterator[None]:
    """Show the library's warnings (``llama_index_ragtune`` loggers) on stderr as
    ``warning: ...`` lines while a command runs, each once, when the program configured no
    logging: without a handler Python's fallback printed them bare, unlike the command's
    own lines. A program that set up logging keeps its own handlers and format.

    ``cli.main`` runs every command inside it.

    Example::

        with package_warnings():
            TuningPipeline(docs, out, resume=True).run()   # "warning: ... redoing index ..."
    """
    package = logging.getLogger("llama_index_ragtune")
    if package.hasHandlers():  # logging configured (basicConfig, a server's, pytest's)
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_WarningLines("%(message)s"))
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
