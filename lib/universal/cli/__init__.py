"""The ``universal`` command line: one module per command, each a thin call into the library."""

from __future__ import annotations

import argparse
import sys

from universal.cli import add_class, check, classes, demo_model, export, info, phantom, prepare, segment, train
from universal.errors import UniversalError

COMMANDS = (info, classes, add_class, segment, check, export, prepare, train, phantom, demo_model)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except UniversalError as error:
        print(f"universal {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"universal {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="universal",
                                     description="CLIP-Driven Universal Model for 3D CT segmentation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
