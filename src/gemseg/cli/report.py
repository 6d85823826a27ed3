"""One-line messages for the command line: errors, warnings, the progress bar."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

from ..errors import CLIError, one_line  # noqa: F401  (the commands' errors and their one line live below the CLI)


class Reporter:
    """One-line messages on stderr that do not tear the progress bar; ``quiet`` keeps only warnings
    and errors."""

    def __init__(self, quiet: bool = False, stream=None, *, main: bool = True):
        self.quiet = quiet
        self.main = main  # False on the other ranks of a torchrun: they print errors only
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def info(self, msg: str) -> None:
        if not self.quiet and self.main:
            self._write(f"gemseg: {msg}")

    def warn(self, msg: str) -> None:
        if self.main:
            self._write(f"gemseg: warning: {msg}")

    def error(self, msg: str) -> None:
        self._write(f"gemseg: error: {msg}")

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator:
        """A tqdm bar (images/s and ETA) when there is more than one image and not ``quiet``."""
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="img", file=self.stream, dynamic_ncols=True,
                   disable=self.quiet or not self.main or total < 2, leave=True)
        self.bar = None if bar.disable else bar
        try:
            yield bar
        finally:
            bar.close()
            self.bar = None

    @contextlib.contextmanager
    def capture_warnings(self) -> Iterator[None]:
        """Show Python warnings (e.g. prompt truncation) as ``gemseg: warning:`` lines, each text once;
        under torchrun only rank 0 shows them (every rank would say the same)."""
        seen: set[str] = set()

        def show(message, *args, **kwargs) -> None:
            text = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
            if text not in seen and os.environ.get("RANK", "0") == "0":
                seen.add(text)
                self.warn(text)

        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)  # "once" is decided here, by text
            warnings.showwarning = show
            yield
