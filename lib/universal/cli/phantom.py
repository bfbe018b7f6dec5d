"""``universal phantom``: a synthetic CT and its labels, or partially labelled phantom datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.atomic import check_nifti_path
from universal.synth import (
    CLINICAL_SHAPE,
    CLINICAL_SPACING,
    DATASET_SHAPE,
    DATASET_SPACING,
    ORIENTATIONS,
    make_phantom,
    phantom_datasets,
    save_phantom,
    write_datasets,
)


def add_parser(commands) -> None:
    phantom = commands.add_parser(
        "phantom",
        help="write a synthetic abdominal CT and its labels, or partially labelled datasets (--datasets)",
        description="Write a synthetic CT (int16 HU) and its label map (catalogue ids) as NIfTI; with "
        "--datasets, OUTPUT is a folder that receives partially labelled datasets in MSD layout.",
    )
    phantom.add_argument("output", type=Path, help="CT file (.nii.gz), or the folder for --datasets")
    phantom.add_argument("--label", type=Path, help="label map file to write beside the CT")
    phantom.add_argument("--seed", type=int, default=0, help="patient seed (default 0)")
    phantom.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="voxels")
    phantom.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="mm per voxel")
    phantom.add_argument("--orientation", type=str.upper, choices=ORIENTATIONS, help="voxel axes (default RAS)")
    phantom.add_argument("--lesions", action="store_true", help="draw liver, kidney and pancreas lesions")
    phantom.add_argument("--noise", type=float, default=12.0, help="image noise SD in HU (default 12)")
    phantom.add_argument("--datasets", action="store_true", help="write datasets in MSD layout under OUTPUT")
    phantom.add_argument("--dataset", action="append", metavar="NAME", choices=[d.name for d in phantom_datasets()],
                         help="with --datasets: write only this dataset (repeatable; default all)")
    phantom.add_argument("--cases", type=int, default=2, help="with --datasets: cases per dataset (default 2)")
    phantom.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.datasets:
        if args.label or args.lesions:
            raise UniversalError("--label and --lesions describe one phantom; datasets choose their own lesions")
        folders = write_datasets(
            args.output,
            args.dataset,
            cases_per_dataset=args.cases,
            seed=args.seed,
            shape=args.shape or DATASET_SHAPE,
            spacing=args.spacing or DATASET_SPACING,
            orientation=args.orientation,
            noise=args.noise,
        )
        for folder in folders:
            print(f"wrote {folder}")
        return
    for path in (args.output, args.label):
        if path is not None:
            check_nifti_path(path)
    phantom = make_phantom(
        args.seed,
        args.shape or CLINICAL_SHAPE,
        args.spacing or CLINICAL_SPACING,
        args.orientation or "RAS",
        lesions=args.lesions,
        noise=args.noise,
    )
    save_phantom(phantom, args.output, args.label)
    names = ", ".join(Catalog.default()[i].name for i in phantom.class_ids())
    print(f"wrote {args.output}" + (f" and {args.label}" if args.label else "") + f"; classes: {names}")
