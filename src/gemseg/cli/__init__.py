"""The ``gemseg`` command line: a thin layer that parses arguments and calls the library.

Each command lives in its own module with ``register(subparsers)``, which adds its parser and sets
``func`` to the function that runs it.
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
