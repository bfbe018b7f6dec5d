"""One released-size window (96³, all 32 heads) through each runtime the decision table of
``universal.nets.runtime`` chooses between, side by side in one process (medians of ``--repeats``,
after a warm-up that pays compilation and conversion): eager float32 and bfloat16, the compiled torch
bfloat16 trunk with compiled heads, and OpenVINO's bfloat16 trunk with compiled heads; with
``--int8`` also the int8 trunk (calibrated first, once per weights: its time is printed).

    python bench/runtimes.py
    python bench/runtimes.py --int8
    python bench/runtimes.py --backbone swinunetr --repeats 5
"""

from __future__ import annotations

import argparse
import time

import torch
from window_profile import seconds

import universal
from universal.devices import cpu_description
from universal.nets.compiled import compiled_heads, compiled_trunk
from universal.nets.heads import run_heads
from universal.nets.openvino import int8_available, openvino_available, openvino_trunk
from universal.synth import calibration_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="unet", choices=("unet", "swinunetr"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also the int8 trunk (OpenVINO and NNCF)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = universal.UniversalModel(args.backbone, class_embeddings=torch.randn(32, 512)).eval()
    window = torch.rand(1, 1, *model.input_spec.window_size)
    channels = list(range(len(model.catalog)))

    def path(trunk, heads, dtype):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                image, head_input = trunk(window)
                return model.heads(image, head_input, channels, run=heads)
        return run

    paths = {"float32 eager": path(model.trunk, run_heads, torch.float32),
             "bfloat16 eager": path(model.trunk, run_heads, torch.bfloat16),
             "compiled torch bfloat16 trunk + compiled heads": path(compiled_trunk(model), compiled_heads(),
                                                                    torch.bfloat16)}
    if openvino_available():
        paths["OpenVINO bfloat16 trunk + compiled heads"] = path(openvino_trunk(model, "bfloat16"), compiled_heads(),
                                                                  torch.bfloat16)
    if args.int8 and int8_available():
        started = time.perf_counter()
        int8 = openvino_trunk(model, "int8", calibration_windows)
        print(f"int8 trunk calibrated and checked in {time.perf_counter() - started:.0f} s: {int8.agreement}")
        paths["OpenVINO int8 trunk + compiled heads"] = path(int8, compiled_heads(), torch.float32)
    print(f"CPU: {cpu_description()}; {args.backbone}, one {'×'.join(map(str, model.input_spec.window_size))} "
          f"window, {len(channels)} heads, medians of {args.repeats}")
    measured = {name: seconds(run, args.repeats) for name, run in paths.items()}
    base = measured["float32 eager"]
    print("| path | s per window | vs float32 eager |\n|---|---|---|")
    for name, value in measured.items():
        print(f"| {name} | {value:.2f} | {base / value:.2f}× |")


if __name__ == "__main__":
    main()
