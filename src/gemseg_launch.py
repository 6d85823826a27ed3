"""The ``gemseg`` console script: starts :func:`gemseg.cli.main` so that Ctrl-C or SIGTERM during the
first seconds (``import gemseg`` loads torch) also ends with one line and exit code 130 / 143 instead
of a ``KeyboardInterrupt`` traceback. Kept outside the ``gemseg`` package, whose import is what takes
the time."""
import signal
import sys


class _TerminatedAtStartup(KeyboardInterrupt):
    pass


def _terminated(signum, frame):
    raise _TerminatedAtStartup()


def main() -> int:
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        from gemseg.cli import main as run
    except KeyboardInterrupt as e:
        sigterm = isinstance(e, _TerminatedAtStartup)
        print(f"gemseg: {'terminated (SIGTERM)' if sigterm else 'interrupted'}", file=sys.stderr, flush=True)
        return 128 + (signal.SIGTERM if sigterm else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return run()  # from here gemseg.cli.main handles both signals itself


if __name__ == "__main__":
    sys.exit(main())
