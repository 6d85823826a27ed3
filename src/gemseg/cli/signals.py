"""Ctrl-C and SIGTERM end a command the same orderly way: one line on stderr, finished work kept, worker
processes stopped, and the shell's exit codes 130 (SIGINT) and 143 (SIGTERM)."""
from __future__ import annotations

import contextlib
import signal
import threading

EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A ``KeyboardInterrupt`` so that every ``except KeyboardInterrupt`` (keep the
    finished images, save the evaluation state) handles it as it handles Ctrl-C."""


def exit_code(e: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT


def describe(e: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active, SIGTERM raises :class:`Terminated` in the main thread (the previous handler comes
    back afterwards); a no-op outside the main thread, where handlers cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
