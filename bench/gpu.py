"""GPU figures in a few minutes: windows per second of both backbones in float32 and bfloat16, end-to-end
seconds of the default path on the clinical-size phantom, and peak GPU memory.

    python bench/gpu.py                                   # on a CUDA GPU; prints a table last
    python bench/gpu.py --device cpu --windows 1 --shape 128 128 50 --spacing 3.2 3.2 10   # a dry run

Weights are random: window throughput does not depend on them; the end-to-end run computes all
classes, so no localisation applies and the time does not depend on them either.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import universal
from universal.devices import resolve_device
from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, make_phantom

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def window_throughput(backbone: str, precision: str, args, device: torch.device) -> dict:
    """Windows per second over ``args.windows`` batches of ``args.batch_size`` 96³ windows (after one
    untimed batch), all 32 classes."""
    torch.manual_seed(0)
    model = universal.UniversalModel(backbone, class_embeddings=torch.randn(32, 512)).to(device).eval()
    windows = torch.rand(args.batch_size, 1, 96, 96, 96, device=device)
    dtype = PRECISIONS[precision]
    reset_peak(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        model(windows)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.windows):
            model(windows)
        synchronize(device)
    seconds = time.perf_counter() - started
    return {"what": f"{backbone} {precision} windows", "value": f"{args.windows * args.batch_size / seconds:.1f}/s",
            "peak": peak_gib(device)}


def end_to_end(backbone: str, args, device: torch.device) -> dict:
    """Seconds of the default path on the phantom, all classes; the second of two runs (the first warms
    up kernels and caches)."""
    torch.manual_seed(0)
    model = universal.UniversalModel(backbone, class_embeddings=torch.randn(32, 512))
    phantom = make_phantom(0, shape=args.shape, spacing=args.spacing, lesions=True)
    scan = universal.Scan(phantom.image.astype(np.float32), phantom.affine, "phantom")
    settings = universal.InferenceSettings(device=str(device), batch_size=args.batch_size)
    segmenter = universal.Segmenter(model, settings, progress=False)
    segmenter(scan)
    reset_peak(device)
    synchronize(device)
    started = time.perf_counter()
    result = segmenter(scan)
    synchronize(device)
    seconds = time.perf_counter() - started
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result.report["timings_s"].items() if k != "total")
    return {"what": f"{backbone} end to end ({result.report['settings']['precision']}; {stages})",
            "value": f"{seconds:.2f} s", "peak": peak_gib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--windows", type=int, default=20, help="timed batches per configuration")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per network call")
    parser.add_argument("--shape", type=int, nargs=3, default=CLINICAL_SHAPE)
    parser.add_argument("--spacing", type=float, nargs=3, default=CLINICAL_SPACING)
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    rows = []
    for backbone in ("unet", "swinunetr"):
        for precision in PRECISIONS:
            rows.append(window_throughput(backbone, precision, args, device))
            print(rows[-1], flush=True)
        rows.append(end_to_end(backbone, args, device))
        print(rows[-1], flush=True)
    print(f"\n{'measure':<70} {'value':>10} {'peak GiB':>9}")
    for row in rows:
        print(f"{row['what']:<70} {row['value']:>10} {row['peak']:>9.2f}")


if __name__ == "__main__":
    main()
