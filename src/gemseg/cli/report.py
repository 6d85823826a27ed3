"""One-line messages for the command line: errors, warnings, the progress bar."""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

from ..errors import CLIError, one_line  # noqa: F401  (the commands' errors and their one line live below the CLI)


class Reporter:
    """One-line messages on stderr that do not tear the progress bar; ``quiet`` keeps only warnings
    and errors."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._write(f"gemseg: {msg}")

    def warn(self, msg: str) -> None:
        self._write(f"gemseg: warning: {msg}")

    def error(self, msg: str) -> None:
        self._write(f"gemseg: error: {msg}")

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator:
        """A tqdm bar (images/s and ETA) when there is more than one image and not ``quiet``."""
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="img", file=self.stream, dynamic_ncols=True,
                   disable=self.quiet or total < 2, leave=True)
        self.bar = None if bar.disable else bar
        try:
            yield bar
        finally:
            bar.close()
            self.bar = None

    @contextlib.contextmanager
    def capture_warnings(self) -> Iterator[None]:
        """Show Python warnings (e.g. prompt truncation) as ``gemseg: warning:`` lines."""
        with warnings.catch_warnings():
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = lambda message, *a, **k: self.warn(str(message).splitlines()[0])
            yield
