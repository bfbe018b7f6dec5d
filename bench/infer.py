"""Whole-scan inference on a clinical-size phantom: windows, time per stage, the network's achieved
GFLOP/s against this machine's measured matrix-multiply peak, and peak memory (RSS).

    python bench/infer.py                                  # 512×512×200 at 0.8×0.8×2.5 mm, U-Net
    python bench/infer.py --backbone swinunetr --device cuda --batch-size 4
    python bench/infer.py --shape 256 256 100 --spacing 1.6 1.6 5 --width 8   # a quick look

Weights are random (the figures do not depend on them); ``--model`` takes a checkpoint instead.
The table is printed last.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import universal
from universal.phantoms import CLINICAL_SHAPE, CLINICAL_SPACING, make_phantom


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
    args = parser.parse_args()

    settings = universal.InferenceSettings(overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                                           precision=args.precision)
    device = settings.torch_device()
    torch.manual_seed(0)
    model = (universal.load_model(args.model) if args.model else
             universal.UniversalModel(args.backbone, width=args.width, class_embeddings=torch.randn(32, 512)))
    started = time.perf_counter()
    phantom = make_phantom(0, shape=args.shape, spacing=args.spacing, lesions=True)
    scan = universal.Scan(phantom.image.astype(np.float32), phantom.affine, "phantom")
    phantom_seconds = time.perf_counter() - started
    rss_before = peak_rss_mib()

    segmenter = universal.Segmenter(model, settings, progress=True)
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
