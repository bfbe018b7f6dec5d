"""``universal export SOURCE -o OUT``: the labelled dataset in a layout trainers read
(:func:`universal.export.export_dataset`), from a studies folder or a running server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from universal.export.dataset import LABELS
from universal.export.layouts import FORMATS


def add_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export the labelled dataset: nnU-Net v2, Medical Segmentation Decathlon, or NIfTI, with provenance",
        description="Write the accepted labels of a studies folder (a MONAI Label datastore), or of a running "
        "server's (SOURCE is its URL), into OUT in a layout trainers read, with provenance.csv (annotators, model "
        "version, review states, agreement, anatomy findings, seconds per case).",
    )
    # 8000: start_server's default port (Project-MONAI/MONAILabel monailabel/main.py)
    export.add_argument("source", help="studies folder, or the server's URL (http://HOST:8000)")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    export.add_argument("--format", choices=FORMATS, default="nnunetv2", help="layout (default %(default)s)")
    export.add_argument("--labels", choices=LABELS, default="final",
                        help="final (rejected classes left out), approved classes only, or the annotators' consensus")
    export.add_argument("--classes", nargs="+", metavar="CLASS", help="classes to export, numbered 1..K in this order")
    export.add_argument("--images", nargs="+", metavar="ID", help="image ids (default: every labelled image)")
    export.add_argument("--name", default="Universal", help="dataset name (default %(default)s)")
    export.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1-999 (default %(default)s)")
    export.add_argument("--token", help="bearer token for a server with authentication (admin role)")
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.source.startswith(("http://", "https://")):
        from universal.export.remote import fetch_export

        folder = fetch_export(args.source, args.output, token=args.token, format=args.format, labels=args.labels,
                              classes=args.classes, images=args.images, name=args.name, dataset_id=args.dataset_id)
        print(f"exported from {args.source} into {folder}")
        return
    from universal.export import export_dataset

    summary = export_dataset(args.source, args.output, args.format, labels=args.labels, classes=args.classes,
                             images=args.images, name=args.name, dataset_id=args.dataset_id)
    for image_id, why in summary.skipped.items():
        print(f"universal export: {image_id}: left out: {why}", file=sys.stderr)
    print(f"{len(summary.cases)} cases, {len(summary.classes)} classes ({', '.join(summary.classes)}) in "
          f"{summary.folder} ({summary.seconds:.1f} s)")
