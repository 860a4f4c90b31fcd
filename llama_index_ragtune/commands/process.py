"""How a ``ragtune`` command meets its process: signals, stdout and the current folder.

``cli.main`` runs every command inside these guards: SIGTERM / SIGHUP stop it as Ctrl-C
does (clean-up runs, one line, status 128 + the signal), a stdout that cannot encode a
character escapes it, a reader of stdout that went away ends the command quietly (status
141), and a deleted current folder is named before anything runs.

Example::

    from llama_index_ragtune.commands.process import termination_raises

    with termination_raises():
        ...  # `kill PID` raises Terminated here; `finally` blocks run
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import signal
import sys
import threading
from typing import Any, NoReturn


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is so that it stops as Ctrl-C does: its
    ``finally`` blocks run (locks, temporary files, empty output folders), one line is
    printed and the exit status is 128 + the signal (143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise Terminated(signum)


@contextlib.contextmanager
def termination_raises() -> Any:
    """While the command runs, SIGTERM / SIGHUP raise ``Terminated`` (Python's default ends
    the process at once: no message, no clean-up). A signal set to be ignored (``nohup``)
    stays ignored; outside the main thread nothing changes.

    Example::

        with termination_raises():
            run_the_command()   # `kill PID`: Terminated (a KeyboardInterrupt) raised here
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    earlier = {}
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            earlier[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in earlier.items():
            signal.signal(signum, handler)


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
