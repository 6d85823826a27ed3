"""The ``gemseg`` command line: a thin layer that parses arguments and calls the library.

Each command lives in its own module with ``register(subparsers)``, which adds its parser and sets
``func`` to the function that runs it.

Error policy, here and nowhere else: the errors of :func:`usage_errors` (bad arguments or input,
missing files, unavailable weights or optional packages, a folder that cannot be resumed) become one
line ``gemseg: error: ...`` on stderr and exit code 2; anything else (``TypeError``,
``AssertionError``, ... raised inside the library) is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command modules, in the order `gemseg --help` lists them
COMMAND_MODULES = ("heatmap", "segment", "models", "eval_cmd", "ablate", "score", "serve")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="gemseg",
        description="Training-free open-vocabulary localization and segmentation with the Grounding "
                    "Everything Module (GEM) on CLIP-style vision transformers.")
    parser.add_argument("--version", action="version", version=f"gemseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


EXIT_USAGE = 2


def usage_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the command cannot run as asked", not "gemseg has a bug"."""
    from ..errors import WeightsUnavailableError
    from ..eval.state import StateError
    from .report import CLIError

    # ImportError: a missing optional package, whose message says what to `pip install`
    return (CLIError, ValueError, FileNotFoundError, WeightsUnavailableError, StateError, ImportError)


def main(argv: list[str] | None = None) -> int:
    """Run ``gemseg ARGV``; Ctrl-C or SIGTERM at any point gives one line and exit code 130 / 143."""
    try:
        from . import signals

        with signals.sigterm_as_interrupt():
            code = _main(argv)
            signals.check()  # a Ctrl-C that a library swallowed still ends the command as interrupted
            return code
    except KeyboardInterrupt as e:
        return _interrupted(e)


def _interrupted(e: KeyboardInterrupt) -> int:
    from .signals import describe, exit_code, handled

    handled()
    try:
        print(f"gemseg: {describe(e)}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or gone
        pass
    return exit_code(e)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        if not isinstance(e, usage_errors()):
            raise
        text = str(e.args[0]) if isinstance(e, KeyError) and len(e.args) == 1 else str(e).strip()
        print(f"gemseg: error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr, flush=True)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
