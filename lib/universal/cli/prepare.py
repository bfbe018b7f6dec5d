"""``universal prepare FOLDER[=TEMPLATE]... -o DATALIST``: a datalist of partially labelled datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="list the cases of partially labelled datasets, with the classes each annotates",
        description="Write a datalist (JSON) of dataset folders in MSD layout (dataset.json) or with "
        "imagesTr/ and labelsTr/. A folder's template (prompts/datasets.yaml, or --templates) is found by "
        "its dataset.json name or folder name; FOLDER=TEMPLATE names it.",
    )
    prepare.add_argument("folders", nargs="+", metavar="FOLDER[=TEMPLATE]", help="dataset folder")
    prepare.add_argument("-o", "--output", type=Path, required=True, help="datalist file to write (.json)")
    prepare.add_argument("--templates", type=Path, action="append", default=[],
                         help="YAML file of more dataset templates (repeatable)")
    prepare.add_argument("--validation-fraction", type=float, default=0.2,
                         help="share of each dataset's cases held out for validation (default 0.2)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    prepare.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from universal.training.datasets import load_templates, prepare_datalist

    folders, names = zip(*(f.split("=", 1) if "=" in f else (f, None) for f in args.folders), strict=True)
    datalist = prepare_datalist(folders, templates=load_templates(*args.templates), template_names=names,
                                validation_fraction=args.validation_fraction, seed=args.seed)
    datalist.save(args.output)
    for name, template in datalist.templates.items():
        train = sum(c["dataset"] == name for c in datalist.training)
        held = sum(c["dataset"] == name for c in datalist.validation)
        print(f"{name}: {train} training, {held} validation cases; annotates {', '.join(template.classes)}")
    print(f"wrote {args.output}")
