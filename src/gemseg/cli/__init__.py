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

# command -> (its module, the one line `gemseg --help` shows), in the order `gemseg --help` lists them;
# each module's own parser says the same line (tests/test_cli_speed.py checks) and everything else
COMMANDS = {
    "heatmap": ("heatmap", "one heatmap per prompt per image"),
    "segment": ("segment", "a label map per image from class names"),
    "models": ("models", "list usable models and pretrained tags, and which are available locally"),
    "eval": ("eval_cmd", "benchmark mIoU / p-mIoU on a standard dataset under a named protocol"),
    "ablate": ("ablate", "GEM ablations (projections, temperature, iterations, depth, L2, MLP) over datasets"),
    "score": ("score", "mIoU of saved label maps against ground truth"),
    "serve": ("serve", "web demo (Gradio): heatmaps and segmentations of pictures in the browser"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``gemseg`` parser. Given ``argv``, only the command it names is set up in full (its module
    imported); the others are one line each, which keeps ``gemseg --help`` free of torch and the
    backends. Without ``argv``, every command is set up."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="gemseg",
        description="Training-free open-vocabulary localization and segmentation with the Grounding "
                    "Everything Module (GEM) on CLIP-style vision transformers.")
    parser.add_argument("--version", action="version", version=f"gemseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if argv is None else (argv[0] if argv and argv[0] in COMMANDS else "")
    for command, (name, summary) in COMMANDS.items():
        if wanted not in (None, command):
            sub.add_parser(command, help=summary, add_help=False)  # a name in the list, set up when run
            continue
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


EXIT_USAGE = 2


def usage_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the command cannot run as asked", not "gemseg has a bug"."""
    from ..errors import StateError, WeightsUnavailableError
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
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .report import Reporter

    try:
        with Reporter().capture_warnings():  # warnings as one `gemseg: warning:` line each, once
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be caught
            return code
    except BrokenPipeError:  # `gemseg models | head -3`: the reader has gone, which is not an error here
        _silence_stdout()
        return 1
    except Exception as e:
        if not isinstance(e, usage_errors()):
            raise
        text = str(e.args[0]) if isinstance(e, KeyError) and len(e.args) == 1 else str(e).strip()
        print(f"gemseg: error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr, flush=True)
        return EXIT_USAGE


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
