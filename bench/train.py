"""Training speed of the released model sizes: optimiser steps per second and peak memory, for each
backbone and precision, on random crops with every class annotated (the figures do not depend on
the data). The same script runs on the CPU and on a GPU.

    python bench/train.py                                    # U-Net and Swin UNETR, float32 and bfloat16
    python bench/train.py --device cuda --batch-size 4
    python bench/train.py --crop 48 --steps 2 --backbones unet   # a quick look on a small CPU

Peak memory is the GPU's peak allocation on CUDA; on the CPU it is the process's peak RSS so far
(configurations run in the order given, so later rows include earlier peaks). The table is printed last.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import universal
from universal.training import TrainSettings
from universal.training.losses import partial_label_loss

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone: str, precision: str, args, device: torch.device) -> dict:
    """Seconds per optimiser step (median of ``args.steps`` after ``args.warmup``) and peak memory."""
    torch.manual_seed(0)
    model = universal.UniversalModel(backbone, use_checkpoint=args.checkpointing).to(device).train()
    settings = TrainSettings()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    shape = (args.batch_size, 1, *(args.crop,) * 3)
    image = torch.rand(shape, device=device)
    target = (torch.rand(args.batch_size, model.num_classes, *shape[2:], device=device) > 0.9).float()
    annotated = torch.ones(args.batch_size, model.num_classes, dtype=torch.bool, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dtype = PRECISIONS[precision]
    times = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(image)
        partial_label_loss(logits.float(), target, annotated).backward()
        optimizer.step()
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
        print(f"  {backbone} {precision} step {step + 1}: {time.perf_counter() - started:.2f} s", flush=True)
    seconds = sorted(times)[len(times) // 2]
    return {"backbone": backbone, "precision": precision, "s_per_step": seconds,
            "crops_per_s": args.batch_size / seconds, "peak_mib": peak_memory_mib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["unet", "swinunetr"], choices=("unet", "swinunetr"))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--crop", type=int, default=96, help="crop side in voxels (released: 96)")
    parser.add_argument("--batch-size", type=int, default=2, help="crops per step (released: 2 per GPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing (Swin UNETR)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; crop {args.crop}³, batch {args.batch_size}, all 32 classes; torch {torch.__version__}")
    rows = [measure(b, p, args, device) for b in args.backbones for p in args.precisions]
    print(f"\n{'backbone':<10} {'precision':<9} {'s/step':>8} {'crops/s':>8} {'peak MiB':>9}")
    for row in rows:
        print(f"{row['backbone']:<10} {row['precision']:<9} {row['s_per_step']:>8.3f} {row['crops_per_s']:>8.2f} "
              f"{row['peak_mib']:>9.0f}")


if __name__ == "__main__":
    main()
