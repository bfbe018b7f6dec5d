"""Whole-scan inference on a clinical-size phantom: windows, time per stage, the network's achieved
GFLOP/s against this machine's measured matrix-multiply peak, and peak memory (RSS).

    python bench/infer.py                                  # 512×512×200 at 0.8×0.8×2.5 mm, U-Net
    python bench/infer.py --backbone swinunetr --device cuda --batch-size 4
    python bench/infer.py --shape 256 256 100 --spacing 1.6 1.6 5 --width 8   # a quick look
    python bench/infer.py --compare [--classes liver] [--model CHECKPOINT] [--precision int8] [--runtime R]
    python bench/infer.py --profile                        # one window, stage by stage (bench/window_profile.py)

Weights are random unless ``--model`` names a checkpoint; the figures of one path do not depend on
them, but those of ``--compare`` do: localising a class subset runs only where the model finds it,
and mask agreement means something only for a trained model. ``--compare`` runs, in one process on
the same phantom and weights, the reference path (float32, overlap 0.5, one window at a time, every
window, all heads computed on features repeated per class, as the reference implementation does) and
the product's default path (on all classes, and on ``--classes`` too when given), prints times, their
ratios, per-class Dice between the two paths' masks and peak RSS, and appends a row per default run
to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from window_profile import profile_window

import universal
from universal.devices import cpu_description
from universal.io.atomic import atomic_write_text
from universal.nets.heads import HEAD_CHANNELS, HEAD_PARAM_SIZES
from universal.nets.openvino import openvino_trunk
from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, calibration_windows, make_phantom
from universal.training.metrics import dice

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = """# Inference: reference path against the default path

`python bench/infer.py --compare [--classes ...]` appends a row. Reference: float32, overlap 0.5, one
window at a time, every window, all heads on repeated features. Default: the product's settings.
Dice: the lowest per-class Dice between the two paths' masks (meaningful with a trained model only).

| date | commit | machine | model | classes | path | reference s | default s | speed-up | lowest Dice | peak RSS GiB |
|---|---|---|---|---|---|---|---|---|---|---|
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def matmul_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Best-of-three fp32 matrix-multiply throughput: the practical peak this code can reach."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = 0.0
    for _ in range(3):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def window_gflop(model: universal.UniversalModel, device: torch.device) -> float:
    """GFLOP of one window through the network, all classes (counted by torch's FLOP counter)."""
    window = torch.rand(1, 1, *model.input_spec.window_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(window)
    return counter.get_total_flops() / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ReferenceSegmenter(universal.Segmenter):
    """Computes every class's head on its own copy of the decoder features, with grouped 1×1×1
    convolutions, as the reference implementation does, and then keeps the asked channels."""

    def window_logits(self, windows, boxes, channels):
        model = self.model
        image, features = model.trunk(windows)  # (B, 256), (B, 8, *S)
        params = model.head_parameters(image, list(range(model.num_classes)))  # (B, K, 153)
        batch, classes = params.shape[:2]
        heads = batch * classes
        w1, w2, w3, b1, b2, b3 = (p.reshape(heads, -1) for p in params.split(HEAD_PARAM_SIZES, dim=-1))
        x = features.repeat_interleave(classes, dim=0).reshape(1, heads * HEAD_CHANNELS, *features.shape[2:])
        x = F.relu(F.conv3d(x, w1.reshape(-1, HEAD_CHANNELS, 1, 1, 1), b1.flatten(), groups=heads))
        x = F.relu(F.conv3d(x, w2.reshape(-1, HEAD_CHANNELS, 1, 1, 1), b2.flatten(), groups=heads))
        x = F.conv3d(x, w3.reshape(-1, HEAD_CHANNELS, 1, 1, 1), b3.flatten(), groups=heads)
        return x.reshape(batch, classes, *features.shape[2:])[:, list(channels)]


def compare(model: universal.UniversalModel, scan: universal.Scan, args: argparse.Namespace) -> None:
    """Time the default path (``--precision``, ``--runtime``) on all classes, on ``args.classes`` when
    given, and with ``--int8`` the int8 path on all classes; then the reference path once (all
    classes), on ``scan``; print and record a row per run."""
    reference_settings = universal.InferenceSettings(overlap=0.5, batch_size=1, device=args.device,
                                                     precision="float32", skip_air=False, localize=False)
    default = universal.InferenceSettings(device=args.device, precision=args.precision, runtime=args.runtime,
                                          compile=args.compile)
    plans = [(None, default), *([(args.classes, default)] if args.classes else []),
             *([(None, replace(default, precision="int8"))] if args.int8 else [])]
    if args.int8:  # once per weights (cached on disk): calibration and its check are not part of a scan's time
        started = time.perf_counter()
        openvino_trunk(model, "int8", calibration_windows)
        print(f"int8 trunk ready (calibrated and checked once per weights) in {time.perf_counter() - started:.1f} s")
    warm_up(model, [ReferenceSegmenter(model, reference_settings, progress=False),
                    *(universal.Segmenter(model, settings, progress=False, calibration=calibration_windows)
                      for _, settings in plans)])
    runs = []
    for classes, settings in plans:
        segmenter = universal.Segmenter(model, settings, progress=True, calibration=calibration_windows)
        started = time.perf_counter()
        result = segmenter(scan, classes)
        runs.append((classes, result, time.perf_counter() - started, peak_rss_mib()))
    started = time.perf_counter()
    reference = ReferenceSegmenter(model, reference_settings, progress=True)(scan)
    reference_s = time.perf_counter() - started
    print()
    print(f"model          {model.title} width {model.width}, {args.model or 'random weights'}")
    windows = reference.report["settings"]["windows"]
    print(f"reference path {reference_s:.1f} s (all classes, float32, {windows} windows)")
    for classes, result, seconds, rss in runs:
        asked = ", ".join(classes) if classes else f"all {model.num_classes}"
        scores = {model.catalog[i].name: dice(result.mask(i), reference.mask(i)) for i in result.class_ids}
        ran = result.report["settings"]
        path = f"{ran['runtime']}{' compiled' * ran['compiled']} {ran['precision']}"
        print(f"default path   {seconds:.1f} s ({asked}; {path}), {reference_s / seconds:.1f}× faster, "
              f"peak RSS so far {rss / 1024:.2f} GiB")
        print("  mask Dice    " + ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
        if "int8_agreement" in ran:
            print(f"  int8 trunk   {ran['int8_agreement']}")
        append_result([
            datetime.date.today().isoformat(), commit(), machine(),
            f"{model.title} w{model.width}" + ("" if args.model else " (random)"), asked, path, f"{reference_s:.1f}",
            f"{seconds:.1f}", f"{reference_s / seconds:.1f}×", f"{min(scores.values()):.4f}", f"{rss / 1024:.2f}",
        ])


def warm_up(model: universal.UniversalModel, segmenters: list) -> None:
    """Run each path once on a scan the size of one window, so that the first timed path does not pay
    one-off costs (lazy imports, kernel selection) that the others then skip."""
    side = [size * spacing for size, spacing in zip(model.input_spec.window_size, model.input_spec.spacing,
                                                    strict=True)]
    phantom = make_phantom(0, shape=(16, 16, 16), spacing=tuple(s / 16 for s in side))
    scan = universal.Scan(phantom.image.astype(np.float32), phantom.affine, "warm-up")
    for segmenter in segmenters:
        segmenter(scan)


def machine() -> str:
    """The CPU with its bfloat16 units and threads, or the GPU."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_description()


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_result(row: list[str]) -> None:
    """Add ``row`` after the last row of the last table with the results' columns (notes and other tables
    below it stay below it)."""
    lines = (RESULTS.read_text() if RESULTS.is_file() else RESULTS_HEADER).splitlines(keepends=True)
    columns = next(line for line in RESULTS_HEADER.splitlines(keepends=True) if line.startswith("|"))
    last = max(i for i, line in enumerate(lines) if line == columns)
    while last + 1 < len(lines) and lines[last + 1].startswith("|"):
        last += 1
    lines.insert(last + 1, "| " + " | ".join(row) + " |\n")
    atomic_write_text(RESULTS, "".join(lines))
    print(f"appended to {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="unet", choices=("unet", "swinunetr"))
    parser.add_argument("--width", type=int, help="backbone width (default: released)")
    parser.add_argument("--model", help="checkpoint to use instead of random weights")
    parser.add_argument("--shape", type=int, nargs=3, default=CLINICAL_SHAPE)
    parser.add_argument("--spacing", type=float, nargs=3, default=CLINICAL_SPACING)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--compare", action="store_true", help="reference path against the default path")
    parser.add_argument("--classes", nargs="+", help="with --compare: also time the default path on these classes")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "openvino"))
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--profile", action="store_true", help="where one window's time goes, stage by stage")
    parser.add_argument("--int8", action="store_true", help="with --compare: also time the int8 path (all classes)")
    args = parser.parse_args()

    settings = universal.InferenceSettings(overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                                           precision=args.precision, runtime=args.runtime, compile=args.compile)
    device = settings.torch_device()
    torch.manual_seed(0)
    model = (universal.load_model(args.model) if args.model else
             universal.UniversalModel(args.backbone, width=args.width, class_embeddings=torch.randn(32, 512)))
    if args.profile:
        profile_window(model, settings)
        return
    started = time.perf_counter()
    phantom = make_phantom(args.seed, shape=args.shape, spacing=args.spacing, lesions=True)
    scan = universal.Scan(phantom.image.astype(np.float32), phantom.affine, "phantom")
    phantom_seconds = time.perf_counter() - started
    if args.compare:
        compare(model, scan, args)
        return
    rss_before = peak_rss_mib()

    segmenter = universal.Segmenter(model, settings, progress=True, calibration=calibration_windows)
    gflop = window_gflop(segmenter.model, device)
    peak = matmul_peak_gflops(device)
    result = segmenter(scan)
    report = result.report
    windows, network_s = report["settings"]["windows"], report["timings_s"]["network"]
    achieved = gflop * windows / network_s

    rows = [
        ("scan", f"{'×'.join(map(str, scan.shape))} voxels at {'×'.join(f'{s:g}' for s in scan.spacing)} mm"),
        ("model", f"{model.title} width {model.width}, {sum(p.numel() for p in model.parameters()):,} parameters"),
        ("device", f"{report['settings']['device']}, {report['settings']['precision']}, "
                   f"{torch.get_num_threads()} threads, batch {args.batch_size}"),
        ("model space", f"{'×'.join(map(str, report['settings']['model_space_shape']))} voxels at 1.5 mm"),
        ("windows", f"{windows} of {'×'.join(map(str, model.input_spec.window_size))}, overlap {args.overlap}"),
        ("phantom", f"{phantom_seconds:.1f} s (not part of inference)"),
        *((f"  {stage}", f"{seconds:.2f} s") for stage, seconds in report["timings_s"].items()),
        ("per window", f"{network_s / windows:.3f} s, {gflop:.1f} GFLOP"),
        ("network", f"{achieved:.1f} GFLOP/s achieved"),
        ("matmul peak", f"{peak:.1f} GFLOP/s measured (fp32 2048² products)"),
        ("utilisation", f"{100 * achieved / peak:.0f} % of the measured peak"),
        ("peak RSS", f"{peak_rss_mib():,.0f} MiB (before inference: {rss_before:,.0f} MiB)"),
    ]
    print()
    for label, value in rows:
        print(f"{label:<14} {value}")


if __name__ == "__main__":
    main()
