"""``universal check LABEL [--image CT] [--json]``: anatomy checks of any label file or folder of masks
(:mod:`universal.quality`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(commands) -> None:
    check = commands.add_parser(
        "check",
        help="check a label map's anatomy: sides, volumes, pieces, lesions outside organs, order, missing organs",
        description="Check a label map (NIfTI or NRRD, values = catalogue ids unless --names maps them) or a folder "
        "of one mask file per class (named by class: liver.nii.gz, kidney_right.nii.gz, ...; names the catalogue "
        "lacks are left out and listed) against rules that need no ground truth. Prints one line per finding; "
        "exits 1 when a finding is a warning or an error.",
    )
    check.add_argument("label", type=Path, help="label map file, or a folder of mask files")
    check.add_argument("--image", type=Path, help="the CT: the label must lie on its grid")
    check.add_argument("--names", type=Path, metavar="JSON",
                       help='the label values\' names, {"1": "liver", ...} (another tool\'s numbering)')
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from universal.quality.label_files import check_label_file

    findings, skipped = check_label_file(args.label, image=args.image, names=args.names)
    if args.json:
        print(json.dumps({"findings": [f.to_record() for f in findings], "left_out": skipped}, indent=2))
    else:
        for name in skipped:
            print(f"universal check: {name}: not a class of the catalogue; left out", file=sys.stderr)
        for finding in findings:
            print(f"{finding.severity:7s} {finding.code:13s} {finding.message}")
        if not findings:
            print("no findings")
    return 1 if any(f.severity != "info" for f in findings) else 0
