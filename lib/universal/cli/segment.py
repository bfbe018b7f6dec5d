"""``universal segment INPUT... -o OUTDIR``: label maps, masks and reports (:func:`universal.segment`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from universal.cli.options import add_setting, settings_from
from universal.devices import INT8, PRECISIONS
from universal.errors import UniversalError
from universal.inference.batch import SUMMARY_NAME
from universal.inference.on_ray import INSTALL_HINT
from universal.inference.result import REPORT_NAME
from universal.inference.settings import COMPILE_CHOICES, RUNTIMES, InferenceSettings
from universal.nets.registry import DEFAULT_BACKBONE
from universal.nets.runtime import COMPILE_MIN_WINDOWS


def add_parser(commands) -> None:
    infer = InferenceSettings()  # the defaults the options show
    seg = commands.add_parser(
        "segment",
        help="segment CT scans: label map, optional masks and a report per case",
        description="Segment CT scans (NIfTI, NRRD, folders holding a DICOM series, folders of scans, or .txt/.csv "
        "lists of them). Each case gets OUTDIR/<case>/segmentation.nii.gz (catalogue ids on the scan's grid), "
        "report.json and, with --masks, masks/<Class Name>.nii.gz; OUTDIR/summary.csv lists every case. A case "
        "that fails is reported and the others go on.",
    )
    seg.add_argument("inputs", type=Path, nargs="*", metavar="INPUT",  # "*": `--ray INPUT` may have taken the only one
                     help="CT file, DICOM folder, folder of scans, or a .txt/.csv list of them")
    seg.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    seg.add_argument("--model", default=DEFAULT_BACKBONE,
                     help="checkpoint file, or a released model: unet or swinunetr (default %(default)s)")
    seg.add_argument("--classes", nargs="+", metavar="CLASS", help="only these classes (names or ids)")
    seg.add_argument("--masks", action="store_true", help="also write one binary mask per class")
    seg.add_argument("--resume", action="store_true", help="skip cases whose report.json exists")
    seg.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read from DICOM folders with several")
    seg.add_argument("--preview", action="store_true",
                     help="also write preview.png: axial, coronal and sagittal slices, classes in their colours")
    seg.add_argument("--dicom-seg", action="store_true",
                     help="DICOM inputs: also write segmentation.dcm, a DICOM SEG referencing the series")
    add_setting(seg, "--overlap", infer, "overlap", "window overlap, 0 to <1", type=float)
    add_setting(seg, "--batch-size", infer, "batch_size", "windows per network call", type=int)
    add_setting(seg, "--device", infer, "device", "auto (CUDA if present), cpu, cuda or cuda:N")
    add_setting(seg, "--precision", infer, "precision",
                "auto: float16 on CUDA; bfloat16 on CPUs with native bfloat16, else float32; int8: an int8 trunk on "
                "OpenVINO, the fastest on the CPU, its masks within a per-class Dice of about 0.99 of float32 (its "
                "measured agreement is reported; the first use per weights calibrates it)",
                choices=("auto", *PRECISIONS, INT8))
    add_setting(seg, "--compile", infer, "compile",
                "compile the trunk and heads; auto: a bfloat16 U-Net on the CPU, "
                f"{COMPILE_MIN_WINDOWS} released-size windows or more",
                choices=COMPILE_CHOICES)
    add_setting(seg, "--runtime", infer, "runtime",
                "what runs the trunk; auto: OpenVINO for int8 and for a bfloat16 U-Net on CPUs with AMX, else torch",
                choices=RUNTIMES)
    seg.add_argument("--every-window", action="store_true",
                     help="run every window: do not skip windows of air nor localise a few classes first")
    add_setting(seg, "--threshold", infer, "threshold", "class probability threshold", type=float)
    seg.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                     help="keep the thresholded masks as they are")
    seg.add_argument("--no-checks", dest="checks", action="store_false",
                     help="leave out the anatomy checks (their findings go into report.json and summary.csv)")
    seg.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="run on Ray: read, network and write in parallel workers, on a Ray instance started here "
                          "or on the cluster at ADDRESS (needs " + INSTALL_HINT + ")")
    seg.add_argument("--workers", type=int, metavar="N",
                     help="with --ray: network workers (default: one per GPU, or one on the CPUs)")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")
    seg.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from universal.inference import segment
    from universal.synth import calibration_windows

    settings = settings_from(args, InferenceSettings, skip_air=not args.every_window, localize=not args.every_window)
    if args.ray and Path(args.ray).exists():  # `--ray scan.nii.gz ...`: an input, not an address
        args.inputs, args.ray = [Path(args.ray), *args.inputs], ""
    if args.workers is not None and args.ray is None:
        raise UniversalError("--workers sets the network workers of --ray; add --ray")

    def tell(outcome) -> None:
        if outcome.status == "failed":
            print(f"universal segment: {outcome.name}: failed: {outcome.error}", file=sys.stderr)
        elif not args.quiet:
            timing = f" in {outcome.seconds:.1f} s" if outcome.status == "done" else " (finished before)"
            print(f"{outcome.name}: {outcome.status}{timing}: {outcome.folder}")

    outcomes = segment(args.inputs, args.output, model=args.model, classes=args.classes, masks=args.masks,
                       resume=args.resume, series=args.series, dicom_seg=args.dicom_seg, preview=args.preview,
                       settings=settings,
                       progress=not args.quiet, on_case=tell, engine="local" if args.ray is None else "ray",
                       address=args.ray or None, workers=args.workers, calibration=calibration_windows)
    failed = sum(outcome.status == "failed" for outcome in outcomes)
    if not args.quiet:
        print(f"summary of every case: {args.output / SUMMARY_NAME}")
    if settings.precision == INT8:
        print_agreement(outcomes)
    if failed:
        print(f"universal segment: {failed} of {len(outcomes)} cases failed", file=sys.stderr)
    return 1 if failed else 0


def print_agreement(outcomes) -> None:
    """The int8 trunk's measured agreement with float32, from a finished case's report."""
    for outcome in outcomes:
        report = outcome.folder / REPORT_NAME
        if outcome.status == "done" and report.is_file():
            agreement = json.loads(report.read_text())["settings"].get("int8_agreement")
            if agreement:
                print(f"int8 trunk against float32 on {agreement['windows']} phantom windows: lowest per-class Dice "
                      f"{agreement['lowest_dice']:.4f}, {agreement['flipped_percent']:.3f} % of voxel decisions differ")
            return
