"""The ``gemseg`` console script: starts :func:`gemseg.cli.main` so that Ctrl-C or SIGTERM during the
first seconds (``import gemseg`` loads torch and numpy) also ends with one line and exit code 130 / 143
instead of a traceback. Kept outside the ``gemseg`` package, whose import is what takes the time.

During that import a signal is only recorded, and acted on once the import is over: an exception
raised inside the import of a C extension can leave it half loaded (numpy then fails with "cannot load
module more than once") or abort the interpreter.
"""
import os
import signal
import sys

_caught: list = []


def _record(signum, frame):
    _caught.append(signum)


def _needs_torch(argv: list) -> bool:
    """Every command but the listing and the top-level help builds on torch."""
    return bool(argv) and argv[0] not in ("models", "-h", "--help", "--version")


def main() -> int:
    """Run the command; a Ctrl-C or SIGTERM ends the process with exactly 130 / 143."""
    code = _start()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        # interrupted: the results are on disk already (each is committed by an atomic rename) and loading
        # workers die with this process; leave at once, so that a second signal during the interpreter's
        # own shutdown (its handlers back to the defaults) cannot turn the exit code into "killed by SIGINT"
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _start() -> int:
    previous = {s: signal.signal(s, _record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        from gemseg.cli import main as run

        if _needs_torch(sys.argv[1:]):  # `import gemseg` is lazy: load torch's C extensions here
            import torch  # noqa: F401
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
