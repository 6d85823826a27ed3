"""Ctrl-C and SIGTERM end a command the same orderly way: one line on stderr, finished work kept, worker
processes stopped, and the shell's exit codes 130 (SIGINT) and 143 (SIGTERM).

Each signal is also recorded, because a library may swallow the exception it raises (a bare ``except``
in an import, a ``__del__`` that was running): :func:`check` raises it again at the next checkpoint,
and :func:`handled` forgets it once an ``except KeyboardInterrupt`` has dealt with it.
"""
from __future__ import annotations

import contextlib
import signal
import threading

EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

_requested: list[int] = []  # signals received and not yet handled


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A ``KeyboardInterrupt`` so that every ``except KeyboardInterrupt`` (keep the
    finished images, save the evaluation state) handles it as it handles Ctrl-C."""


def exit_code(e: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT


def describe(e: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise(signum, frame) -> None:
    _requested.append(signum)
    raise _exception(signum)


def check() -> None:
    """Raise again a signal that arrived but whose exception something swallowed."""
    if _requested:
        raise _exception(_requested[0])


def handled() -> None:
    """The interruption has been dealt with (called by each ``except KeyboardInterrupt``)."""
    _requested.clear()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active, SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated` in the main
    thread, each recorded for :func:`check` (the previous handlers come back afterwards); a no-op
    outside the main thread, where handlers cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
