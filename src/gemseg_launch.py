"""The ``gemseg`` console script: starts :func:`gemseg.cli.main` so that Ctrl-C or SIGTERM during the
first seconds (``import gemseg`` loads torch and numpy) also ends with one line and exit code 130 / 143
instead of a traceback. Kept outside the ``gemseg`` package, whose import is what takes the time.

During that import a signal is only recorded, and acted on once the import is over: an exception
raised inside the import of a C extension can leave it half loaded (numpy then fails with "cannot load
module more than once") or abort the interpreter.
"""
import signal
import sys

_caught: list = []


def _record(signum, frame):
    _caught.append(signum)


def main() -> int:
    previous = {s: signal.signal(s, _record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        from gemseg.cli import main as run
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if _caught:
        sigterm = _caught[0] == signal.SIGTERM
        print(f"gemseg: {'terminated (SIGTERM)' if sigterm else 'interrupted'}", file=sys.stderr, flush=True)
        return 128 + (signal.SIGTERM if sigterm else signal.SIGINT)
    return run()  # from here gemseg.cli.main handles both signals itself


if __name__ == "__main__":
    sys.exit(main())
