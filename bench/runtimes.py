"""One released-size window (96³, all 32 heads) through each runtime the decision table of
``universal.nets.runtime`` chooses between, side by side in one process (medians of ``--repeats``,
after a warm-up that pays compilation and conversion): eager float32 and bfloat16, the compiled torch
bfloat16 trunk with compiled heads, and OpenVINO's bfloat16 trunk with compiled heads.

    python bench/runtimes.py
    python bench/runtimes.py --backbone swinunetr --repeats 5
"""

from __future__ import annotations

import argparse

import torch
from window_profile import seconds

import universal
from universal.devices import cpu_description
from universal.nets.compiled import compiled_heads, compiled_trunk
from universal.nets.heads import run_heads
from universal.nets.openvino import openvino_available, openvino_trunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="unet", choices=("unet", "swinunetr"))
    parser.add_argument("--repeats", type=int, default=3)
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
    print(f"CPU: {cpu_description()}; {args.backbone}, one {'×'.join(map(str, model.input_spec.window_size))} "
          f"window, {len(channels)} heads, medians of {args.repeats}")
    measured = {name: seconds(run, args.repeats) for name, run in paths.items()}
    base = measured["float32 eager"]
    print("| path | s per window | vs float32 eager |\n|---|---|---|")
    for name, value in measured.items():
        print(f"| {name} | {value:.2f} | {base / value:.2f}× |")


if __name__ == "__main__":
    main()
