"""``universal demo-model``: the demo model for a first look without the released weights, built on
first use (:mod:`universal.synth.demo`); prints its path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands) -> None:
    demo = commands.add_parser(
        "demo-model",
        help="build (once) the demo model trained on phantoms, for synthetic images only; print its path",
        description="Print the path of the demo model, a small model trained on synthetic phantoms by this "
        "project's recipe, building it first when it is missing or damaged (about six minutes on two cores). It "
        "segments synthetic images only.",
    )
    demo.add_argument("output", type=Path, nargs="?", help="where to keep it (default <cache>/demo/model.pt)")
    demo.add_argument("--unless-weights", type=Path, metavar="MODEL_DIR",
                      help="print nothing and build nothing when the server on this model folder has weights")
    demo.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from universal.errors import WeightsUnavailableError
    from universal.serving.model_store import ModelStore
    from universal.synth.demo import STEPS, build_demo_model, find_demo_model

    if args.unless_weights is not None:
        try:
            found = ModelStore(args.unless_weights).resolve_weights(download=False)
        except WeightsUnavailableError:
            found = None
        if found is not None:
            print(f"universal demo-model: weights found ({found}); no demo model needed", file=sys.stderr)
            return
    path = find_demo_model(args.output)
    if path is None:
        print("universal demo-model: building the demo model on synthetic phantoms (once)", file=sys.stderr)
        path = build_demo_model(args.output, steps=args.steps or STEPS, progress=not args.quiet)
    print(path)
