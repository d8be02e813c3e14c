"""`stylize`: one CLI for building, serving, calling and measuring the models.

Each subcommand lives in its own module under stylize.commands and registers itself; heavy imports (torch for
`build`) happen only inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import stylize.sdk  # noqa: F401  (first: it turns gRPC core's fork support off before any command imports gRPC)

COMMANDS = ("build", "serve", "demo", "models", "health", "infer", "video", "bench", "loadtest", "web")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylize", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"stylize.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # a subcommand not shipped in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
