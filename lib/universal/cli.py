"""The ``universal`` command line. Each command is a thin call into the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .backbones import DEFAULT_BACKBONE, DEFAULT_WIDTHS
from .catalog import Catalog
from .errors import UniversalError
from .inference import COMPILE_CHOICES, PRECISIONS, InferenceSettings
from .io_utils import check_nifti_path
from .phantoms import (
    CLINICAL_SHAPE,
    CLINICAL_SPACING,
    DATASET_SHAPE,
    DATASET_SPACING,
    DATASETS,
    ORIENTATIONS,
    make_phantom,
    save_phantom,
    write_datasets,
)
from .training import TrainSettings


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
    parser = argparse.ArgumentParser(
        prog="universal", description="CLIP-Driven Universal Model for 3D CT segmentation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    infer, train = InferenceSettings(), TrainSettings()  # the defaults the options show

    info = commands.add_parser("info", help="describe a checkpoint: backbone, size, classes, format")
    info.add_argument("checkpoint", type=Path)
    info.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    info.set_defaults(run=run_info)

    classes = commands.add_parser("classes", help="list the class catalogue (released, or a checkpoint's)")
    classes.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint whose classes to list")
    classes.set_defaults(run=run_classes)

    add = commands.add_parser(
        "add-class", help="append a class named by a text prompt; writes a new checkpoint"
    )
    add.add_argument("checkpoint", type=Path, help="checkpoint to extend")
    add.add_argument("name", help="display name of the new class, e.g. 'Appendix'")
    add.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (own format)")
    add.add_argument("--prompt", help="text to embed (default: 'A computerized tomography of a NAME')")
    add.add_argument("--embedding", type=Path, help="512-value embedding (.pt or .npy) instead of CLIP")
    add.add_argument("--clip-weights", type=Path, help="CLIP ViT-B-32 weights file (OpenAI ViT-B-32.pt)")
    add.add_argument("--kind", choices=("organ", "tumour", "cyst"), default="organ")
    add.add_argument("--parent", action="append", default=[], help="parent organ of a lesion (repeatable)")
    add.add_argument("--synonym", action="append", default=[], help="another accepted name (repeatable)")
    add.add_argument("--color", type=int, nargs=3, metavar=("R", "G", "B"), help="display colour, 0-255")
    add.set_defaults(run=run_add_class)

    seg = commands.add_parser(
        "segment",
        help="segment CT scans: label map, optional masks and a report per case",
        description="Segment CT scans (NIfTI, NRRD, or folders holding a DICOM series). Each case gets "
        "OUTDIR/<case>/segmentation.nii.gz (catalogue ids on the scan's grid), report.json and, with "
        "--masks, masks/<Class Name>.nii.gz. A case that fails is reported and the others go on.",
    )
    seg.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="CT file or DICOM folder")
    seg.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    seg.add_argument("--model", default=DEFAULT_BACKBONE,
                     help="checkpoint file, or a released model: unet or swinunetr (default %(default)s)")
    seg.add_argument("--classes", nargs="+", metavar="CLASS", help="only these classes (names or ids)")
    seg.add_argument("--masks", action="store_true", help="also write one binary mask per class")
    seg.add_argument("--resume", action="store_true", help="skip cases whose report.json exists")
    seg.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read from DICOM folders with several")
    seg.add_argument("--overlap", type=float, default=infer.overlap,
                     help="window overlap, 0 to <1 (default %(default)s)")
    seg.add_argument("--batch-size", type=int, default=infer.batch_size,
                     help="windows per network call (default %(default)s)")
    seg.add_argument("--device", default=infer.device, help="auto (CUDA if present), cpu, cuda or cuda:N")
    seg.add_argument("--precision", default=infer.precision, choices=("auto", *PRECISIONS),
                     help="auto: float16 on CUDA; bfloat16 on CPUs with native bfloat16, else float32")
    seg.add_argument("--compile", default=infer.compile, choices=COMPILE_CHOICES,
                     help="compile the backbone (auto: a bfloat16 U-Net on the CPU, 16 released-size windows or more)")
    seg.add_argument("--every-window", action="store_true",
                     help="run every window: do not skip windows of air nor localise a few classes first")
    seg.add_argument("--threshold", type=float, default=infer.threshold,
                     help="class probability threshold (default %(default)s)")
    seg.add_argument("--no-postprocess", action="store_true", help="keep the thresholded masks as they are")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")
    seg.set_defaults(run=run_segment)

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
    prepare.set_defaults(run=run_prepare)

    fit = commands.add_parser(
        "train",
        help="train or fine-tune on a datalist, optionally teaching new classes",
        description="Train on a datalist from `universal prepare`. RUN receives checkpoint.pt (resumable), "
        "model.pt, metrics.csv, validation.csv and TensorBoard events. Start from --model, or from scratch "
        "with --backbone. Under torchrun, every process trains and process 0 writes.",
    )
    fit.add_argument("datalist", type=Path, help="datalist written by `universal prepare`")
    fit.add_argument("-o", "--output", type=Path, required=True, metavar="RUN", help="run folder")
    fit.add_argument("--model", help="checkpoint file or released model (unet, swinunetr) to start from")
    fit.add_argument("--backbone", choices=tuple(DEFAULT_WIDTHS), default=DEFAULT_BACKBONE,
                     help="from scratch: backbone (default %(default)s)")
    fit.add_argument("--width", type=int, help="from scratch: backbone width (default: the released width)")
    fit.add_argument("--spacing", type=float, help="from scratch: model-space voxel size in mm (default 1.5)")
    fit.add_argument("--window", type=int, help="from scratch: sliding-window side in voxels (default 96)")
    fit.add_argument("--steps", type=int, default=train.steps, help="optimiser steps (default %(default)s)")
    fit.add_argument("--batch-size", type=int, default=train.batch_size,
                     help="crops per network call (default %(default)s)")
    fit.add_argument("--accumulate", type=int, default=train.accumulate,
                     help="network calls per step (default %(default)s)")
    fit.add_argument("--lr", type=float, default=train.learning_rate, help="AdamW learning rate (default %(default)s)")
    fit.add_argument("--warmup-steps", type=int, default=train.warmup_steps,
                     help="linear warm-up steps (default %(default)s)")
    fit.add_argument("--crop", type=int, help="crop side in voxels (default: the model's window)")
    fit.add_argument("--max-grad-norm", type=float, default=train.max_grad_norm,
                     help="clip the gradient norm to this (default %(default)s; 0: no clipping)")
    fit.add_argument("--precision", default=train.precision, choices=("auto", *PRECISIONS),
                     help="auto: bfloat16 autocast on GPUs that support it, else float32")
    fit.add_argument("--device", default=train.device, help="auto (CUDA if present), cpu, cuda or cuda:N")
    fit.add_argument("--seed", type=int, default=train.seed,
                     help="seed of initialisation and crops (default %(default)s)")
    fit.add_argument("--checkpoint-every", type=int, default=train.checkpoint_every,
                     help="steps between checkpoints (default %(default)s)")
    fit.add_argument("--validate-every", type=int, default=train.validate_every,
                     help="steps between validations (default %(default)s: at the end)")
    fit.add_argument("--add-class", action="append", default=[], metavar="NAME", help="teach a new class (repeatable)")
    fit.add_argument("--prompt", action="append", default=[], help="prompt of the n-th --add-class")
    fit.add_argument("--embedding", action="append", type=Path, default=[],
                     help="512-value embedding (.pt or .npy) of the n-th --add-class, instead of CLIP")
    fit.add_argument("--freeze-base", action="store_true",
                     help="train only the new classes: every other class stays exactly as it was")
    fit.add_argument("--no-distill", action="store_true",
                     help="with new classes and no --freeze-base: do not distil the old classes")
    fit.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=run_train)

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
    phantom.add_argument("--dataset", action="append", metavar="NAME", choices=[d.name for d in DATASETS],
                         help="with --datasets: write only this dataset (repeatable; default all)")
    phantom.add_argument("--cases", type=int, default=2, help="with --datasets: cases per dataset (default 2)")
    phantom.set_defaults(run=run_phantom)
    return parser


def run_info(args: argparse.Namespace) -> None:
    from .checkpoint import load_model

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


def run_classes(args: argparse.Namespace) -> None:
    if args.checkpoint:
        from .checkpoint import load_model

        print_catalog(load_model(args.checkpoint).catalog)
    else:
        print_catalog(Catalog.default())


def print_catalog(catalog: Catalog) -> None:
    width = max(len(info.name) for info in catalog)
    print(f"{'id':>3}  {'name':<{width}}  {'kind':<6}  {'parents':<26}  prompt")
    for info in catalog:
        parents = ", ".join(info.parents) or "-"
        print(f"{info.id:>3}  {info.name:<{width}}  {info.kind:<6}  {parents:<26}  {info.prompt}")


def run_add_class(args: argparse.Namespace) -> None:
    from .checkpoint import load_model, save_model
    from .text import TextEncoder

    model = load_model(args.checkpoint)
    embedding = read_embedding(args.embedding) if args.embedding else None
    info = model.add_class(
        args.name,
        args.prompt,
        embedding,
        kind=args.kind,
        parents=args.parent,
        color=tuple(args.color) if args.color else None,
        synonyms=args.synonym,
        text_encoder=TextEncoder(args.clip_weights) if embedding is None else None,
    )
    save_model(model, args.output, provenance={"added_class": info.name})
    print(f"added class {info.id} '{info.name}' (prompt: {info.prompt!r}); wrote {args.output}")


def read_embedding(path: Path) -> torch.Tensor:
    """A 512-value embedding from a .npy file or a torch file holding one tensor."""
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path)).float()
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UniversalError(f"cannot read embedding {path}: {error}") from error
    if not isinstance(value, torch.Tensor) or value.numel() != 512:
        raise UniversalError(f"{path} must hold one embedding of 512 values")
    return value.float()


def run_segment(args: argparse.Namespace) -> int:
    from .inference import InferenceSettings, segment

    settings = InferenceSettings(
        overlap=args.overlap, batch_size=args.batch_size, device=args.device, precision=args.precision,
        threshold=args.threshold, postprocess=not args.no_postprocess,
        skip_air=not args.every_window, localize=not args.every_window, compile=args.compile,
    )
    classes = [int(c) if c.isdigit() else c for c in args.classes] if args.classes else None

    def tell(outcome) -> None:
        if outcome.status == "failed":
            print(f"universal segment: {outcome.name}: failed: {outcome.error}", file=sys.stderr)
        elif not args.quiet:
            timing = f" in {outcome.seconds:.1f} s" if outcome.status == "done" else " (finished before)"
            print(f"{outcome.name}: {outcome.status}{timing}: {outcome.folder}")

    outcomes = segment(args.inputs, args.output, model=args.model, classes=classes, masks=args.masks,
                       resume=args.resume, series=args.series, settings=settings, progress=not args.quiet,
                       on_case=tell)
    failed = sum(outcome.status == "failed" for outcome in outcomes)
    if failed:
        print(f"universal segment: {failed} of {len(outcomes)} cases failed", file=sys.stderr)
    return 1 if failed else 0


def run_prepare(args: argparse.Namespace) -> None:
    from .data import load_templates, prepare_datalist

    folders, names = zip(*(f.split("=", 1) if "=" in f else (f, None) for f in args.folders), strict=True)
    datalist = prepare_datalist(folders, templates=load_templates(*args.templates), template_names=names,
                                validation_fraction=args.validation_fraction, seed=args.seed)
    datalist.save(args.output)
    for name, template in datalist.templates.items():
        train = sum(c["dataset"] == name for c in datalist.training)
        held = sum(c["dataset"] == name for c in datalist.validation)
        print(f"{name}: {train} training, {held} validation cases; annotates {', '.join(template.classes)}")
    print(f"wrote {args.output}")


def run_train(args: argparse.Namespace) -> None:
    from .distributed import process_group
    from .model import InputSpec
    from .training import NewClass, train

    if len(args.prompt) > len(args.add_class) or len(args.embedding) > len(args.add_class):
        raise UniversalError("each --prompt and --embedding belongs to an --add-class given before it")
    new = [
        NewClass(name, args.prompt[i] if i < len(args.prompt) else None,
                 read_embedding(args.embedding[i]) if i < len(args.embedding) else None)
        for i, name in enumerate(args.add_class)
    ]
    spec = None
    if args.spacing or args.window:
        spec = InputSpec(spacing=(args.spacing or 1.5,) * 3, window_size=(args.window or 96,) * 3)
    settings = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, accumulate=args.accumulate, learning_rate=args.lr,
        warmup_steps=args.warmup_steps, crop_size=(args.crop,) * 3 if args.crop else None,
        precision=args.precision, device=args.device, seed=args.seed, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, freeze_base=args.freeze_base, distill=not args.no_distill,
        max_grad_norm=args.max_grad_norm,
    )
    with process_group():
        result = train(args.datalist, args.output, model=args.model, settings=settings, add_classes=new,
                       backbone=args.backbone, width=args.width, input_spec=spec, resume=args.resume,
                       progress=not args.quiet)
    if result.old_classes_before:
        print("old classes before: " + ", ".join(f"{k} {v:.3f}" for k, v in result.old_classes_before.items()))
    if result.validation:
        print("validation Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in result.validation.items()))
    print(f"trained {result.steps} steps; wrote {result.run_dir / 'model.pt'}")


def run_phantom(args: argparse.Namespace) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
