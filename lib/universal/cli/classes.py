"""``universal classes [CHECKPOINT]``: the class catalogue, released or a checkpoint's."""

from __future__ import annotations

import argparse
from pathlib import Path

from universal.catalog import Catalog


def add_parser(commands) -> None:
    classes = commands.add_parser("classes", help="list the class catalogue (released, or a checkpoint's)")
    classes.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint whose classes to list")
    classes.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.checkpoint:
        from universal.nets.checkpoint import load_model

        print_catalog(load_model(args.checkpoint).catalog)
    else:
        print_catalog(Catalog.default())


def print_catalog(catalog: Catalog) -> None:
    width = max(len(info.name) for info in catalog)
    print(f"{'id':>3}  {'name':<{width}}  {'kind':<6}  {'parents':<26}  prompt")
    for info in catalog:
        parents = ", ".join(info.parents) or "-"
        print(f"{info.id:>3}  {info.name:<{width}}  {info.kind:<6}  {parents:<26}  {info.prompt}")
