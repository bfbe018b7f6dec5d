"""``universal train DATALIST -o RUN``: training and fine-tuning (:func:`universal.training.train`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from universal.cli.options import add_setting, settings_from
from universal.devices import PRECISIONS
from universal.errors import UniversalError
from universal.nets.model import InputSpec
from universal.nets.registry import BACKBONES, DEFAULT_BACKBONE
from universal.nets.text import read_embedding
from universal.training.settings import TrainSettings


def add_parser(commands) -> None:
    defaults, space = TrainSettings(), InputSpec()  # the defaults the options show
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
    fit.add_argument("--backbone", choices=tuple(BACKBONES), default=DEFAULT_BACKBONE,
                     help="from scratch: backbone (default %(default)s)")
    fit.add_argument("--width", type=int, help="from scratch: backbone width (default: the released width)")
    fit.add_argument("--spacing", type=float,
                     help=f"from scratch: model-space voxel size in mm (default {space.spacing[0]:g})")
    fit.add_argument("--window", type=int, nargs="+", metavar="VOXELS",
                     help="from scratch: sliding-window size in voxels, one side or X Y Z "
                          f"(default {space.window_size[0]})")
    add_setting(fit, "--steps", defaults, "steps", "optimiser steps", type=int)
    add_setting(fit, "--batch-size", defaults, "batch_size", "crops per network call", type=int)
    add_setting(fit, "--accumulate", defaults, "accumulate", "network calls per step", type=int)
    add_setting(fit, "--lr", defaults, "learning_rate", "AdamW learning rate", type=float)
    add_setting(fit, "--warmup-steps", defaults, "warmup_steps", "linear warm-up steps", type=int)
    fit.add_argument("--crop", type=int, help="crop side in voxels (default: the model's window)")
    add_setting(fit, "--max-grad-norm", defaults, "max_grad_norm", "clip the gradient norm to this; 0: never",
                type=float)
    add_setting(fit, "--precision", defaults, "precision",
                "auto: bfloat16 autocast on GPUs that support it, else float32", choices=("auto", *PRECISIONS))
    add_setting(fit, "--device", defaults, "device", "auto (CUDA if present), cpu, cuda or cuda:N")
    add_setting(fit, "--seed", defaults, "seed", "seed of initialisation and crops", type=int)
    add_setting(fit, "--checkpoint-every", defaults, "checkpoint_every", "steps between checkpoints", type=int)
    add_setting(fit, "--validate-every", defaults, "validate_every", "steps between validations; 0: at the end",
                type=int)
    fit.add_argument("--add-class", action="append", default=[], metavar="NAME", help="teach a new class (repeatable)")
    fit.add_argument("--prompt", action="append", default=[], help="prompt of the n-th --add-class")
    fit.add_argument("--embedding", action="append", type=Path, default=[],
                     help="512-value embedding (.pt or .npy) of the n-th --add-class, instead of CLIP")
    fit.add_argument("--freeze-base", dest="freeze_base", action="store_true",
                     help="train only the new classes: every other class stays exactly as it was")
    fit.add_argument("--no-distill", dest="distill", action="store_false",
                     help="with new classes and no --freeze-base: do not distil the old classes")
    fit.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from universal.training import NewClass, train
    from universal.training.distributed import process_group

    if len(args.prompt) > len(args.add_class) or len(args.embedding) > len(args.add_class):
        raise UniversalError("each --prompt and --embedding belongs to an --add-class given before it")
    new = [
        NewClass(name, args.prompt[i] if i < len(args.prompt) else None,
                 read_embedding(args.embedding[i]) if i < len(args.embedding) else None)
        for i, name in enumerate(args.add_class)
    ]
    spec = None
    if args.spacing or args.window:
        default = InputSpec()
        spec = InputSpec(spacing=(args.spacing,) * 3 if args.spacing else default.spacing,
                         window_size=_three(args.window) if args.window else default.window_size)
    settings = settings_from(args, TrainSettings, crop_size=(args.crop,) * 3 if args.crop else None)
    with process_group():
        result = train(args.datalist, args.output, model=args.model, settings=settings, add_classes=new,
                       backbone=args.backbone, width=args.width, input_spec=spec, resume=args.resume,
                       progress=not args.quiet)
    if result.old_classes_before:
        print("old classes before: " + ", ".join(f"{k} {v:.3f}" for k, v in result.old_classes_before.items()))
    if result.validation:
        print("validation Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in result.validation.items()))
    print(f"trained {result.steps} steps; wrote {result.run_dir / 'model.pt'}")


def _three(sizes: list[int]) -> tuple[int, int, int]:
    """One size for all three axes, or one per axis."""
    if len(sizes) not in (1, 3):
        raise UniversalError(f"--window takes one size or three (X Y Z), not {len(sizes)}")
    return tuple(sizes * 3 if len(sizes) == 1 else sizes)
