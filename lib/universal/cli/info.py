"""``universal info CHECKPOINT``: a checkpoint's backbone, size, input, origin and classes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from universal.cli.classes import print_catalog


def add_parser(commands) -> None:
    info = commands.add_parser("info", help="describe a checkpoint: backbone, size, classes, format")
    info.add_argument("checkpoint", type=Path)
    info.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    info.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from universal.nets.checkpoint import load_model

    model = load_model(args.checkpoint)
    parameters = sum(p.numel() for p in model.parameters())
    backbone_parameters = sum(p.numel() for p in model.backbone.parameters())
    spec = model.input_spec
    if args.json:
        document = {
            "file": str(args.checkpoint),
            "format": model.source_format,
            "backbone": model.backbone_name,
            "width": model.width,
            "parameters": parameters,
            "backbone_parameters": backbone_parameters,
            "input": spec.to_record(),
            "provenance": model.provenance,
            "classes": model.catalog.to_records(),
        }
        print(json.dumps(document, indent=2))
        return
    low, high = spec.intensity_range
    rows = [
        ("file", str(args.checkpoint)),
        ("format", model.source_format),
        ("backbone", f"{model.title} (width {model.width})"),
        ("parameters", f"{parameters:,} (backbone {backbone_parameters:,})"),
        ("input", f"{spec.orientation}, {'×'.join(f'{s:g}' for s in spec.spacing)} mm, HU {low:g}..{high:g} → 0..1, "
                  f"windows {'×'.join(map(str, spec.window_size))}"),
        ("origin", str(model.provenance.get("origin", "unknown"))),
        ("classes", str(model.num_classes)),
    ]
    for label, value in rows:
        print(f"{label:<11} {value}")
    print()
    print_catalog(model.catalog)
