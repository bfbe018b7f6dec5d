"""Many small scans, in one process and on Ray: cases per minute, and the share of each stage's time.

    python bench/batch.py [--cases 24] [--workers 1 2] [--shape 128 128 64] [--spacing 3 3 5]

A width-8 U-Net with random weights (32³ windows at 4 mm) segments ``--cases`` phantoms, first in
this process (``engine="local"``), then on a local Ray instance with each ``--workers`` count of
network workers (one per GPU when there are GPUs: a GPU row). Times are wall clock over the whole
run, Ray's start of its workers included (not the instance's own start); the stage shares add up
the reports' seconds (read, preprocess, network, postprocess, scan grid, measure, write).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

import universal
from universal.devices import cpu_description
from universal.synth import make_phantom, save_phantom

STAGES = ("read", "preprocess", "network", "postprocess", "scan grid", "measure", "write")


def run(label: str, scans: Path, model: Path, output: Path, **engine) -> None:
    started = time.perf_counter()
    outcomes = universal.segment(scans, output, model=model, progress=False, **engine)
    seconds = time.perf_counter() - started
    done = [o for o in outcomes if o.status == "done"]
    spent = Counter()
    for outcome in done:
        spent.update(json.loads((outcome.folder / "report.json").read_text())["timings_s"])
    total = sum(spent[stage] for stage in STAGES) or 1.0
    shares = "  ".join(f"{stage} {100 * spent[stage] / total:4.1f} %" for stage in STAGES)
    rate = 60 * len(done) / seconds
    print(f"{label:<22} {len(done):>4} cases in {seconds:7.1f} s = {rate:6.1f} cases/min   {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="network workers on Ray (CPU runs)")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 64])
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 5.0])
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        scans = root / "scans"
        for seed in range(args.cases):
            save_phantom(make_phantom(seed, shape=args.shape, spacing=args.spacing), scans / f"case{seed:03d}.nii.gz")
        torch.manual_seed(0)
        spec = universal.InputSpec(spacing=(4.0,) * 3, window_size=(32, 32, 32))
        model = universal.save_model(universal.UniversalModel("unet", width=8, class_embeddings=torch.randn(32, 512),
                                                              input_spec=spec), root / "model.pt")
        print(f"{cpu_description()}; {os.cpu_count()} CPUs; {args.cases} phantoms of "
              f"{'×'.join(map(str, args.shape))} voxels; U-Net width 8, 32³ windows at 4 mm")
        on_cpu = universal.InferenceSettings(device="cpu")
        run("one process (CPU)", scans, model, root / "local", settings=on_cpu)
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            for workers in args.workers:
                run(f"Ray, {workers} worker{'s' * (workers > 1)} (CPU)", scans, model, root / f"ray{workers}",
                    engine="ray", workers=workers, settings=on_cpu)
            gpus = torch.cuda.device_count()
            if gpus:
                run(f"Ray, {gpus} GPU worker{'s' * (gpus > 1)}", scans, model, root / "gpu", engine="ray")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
