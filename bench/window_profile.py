"""Where one window's time goes (``bench/infer.py --profile``): the backbone stage by stage (by
resolution level for the U-Net), the trunk as the default runtime runs it, the heads, blending and
thresholding, each with its share, and the achieved GFLOP/s against this CPU's measured bfloat16
convolution and matrix-multiply peaks (the trunk's) and float32 matrix-multiply peak (the heads')."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import universal
from universal.devices import cpu_description
from universal.inference.windows import BlendBand, gaussian_weights, logit
from universal.nets.heads import HEAD_PARAM_SIZES, run_heads
from universal.nets.runtime import choose_runtime
from universal.synth import calibration_windows

HEAD_MACS = sum(HEAD_PARAM_SIZES[:3])  # multiply-adds per head and voxel: its three weight matrices


def seconds(run: Callable[[], object], repeats: int = 5) -> float:
    """Median seconds of ``repeats`` calls of ``run`` after one untimed call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def steps_seconds(steps: list[Callable[[], object]], repeats: int = 5) -> list[float]:
    """Median seconds of each of ``steps`` when they run one after the other, ``repeats`` times, after
    one untimed round: each step meets the caches and threads the step before it left."""
    times = []
    for _ in range(repeats + 1):
        spent = []
        for step in steps:
            started = time.perf_counter()
            step()
            spent.append(time.perf_counter() - started)
        times.append(spent)
    return [statistics.median(column) for column in zip(*times[1:], strict=True)]


def gflop(run: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops() / 1e9


def peaks() -> tuple[float, float, float]:
    """Best GFLOP/s of a bfloat16 3×3×3 convolution (64 → 64 channels, 48³), of a bfloat16 4096²
    matrix product and of a float32 one, as oneDNN runs them here."""
    with torch.inference_mode():
        x, w = torch.randn(1, 64, 48, 48, 48, dtype=torch.bfloat16), torch.randn(64, 64, 3, 3, 3, dtype=torch.bfloat16)
        conv = 2 * 64 * 64 * 27 * 48**3 / 1e9 / min(seconds(lambda: F.conv3d(x, w, padding=1)) for _ in range(2))
        matmuls = []
        for dtype in (torch.bfloat16, torch.float32):
            a, b = torch.randn(4096, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
            matmuls.append(2 * 4096**3 / 1e9 / min(seconds(lambda a=a, b=b: a @ b) for _ in range(2)))
    return conv, *matmuls


def backbone_stages(model: universal.UniversalModel, window: torch.Tensor) -> list[tuple[str, Callable[[], object]]]:
    """The backbone's top-level stages as (name and input size, call on that input), in the order one
    bfloat16 window runs them: each stage's inputs are caught on their way in."""
    caught = []
    hooks = [child.register_forward_hook(lambda module, args, out, name=name: caught.append((name, module, args)))
             for name, child in model.backbone.named_children()]
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.backbone(window)
    finally:
        for hook in hooks:
            hook.remove()
    return [(f"{name} (in {'×'.join(map(str, args[0].shape[2:]))})", lambda module=module, args=args: module(*args))
            for name, module, args in caught]


def profile_window(model: universal.UniversalModel, settings: universal.InferenceSettings) -> None:
    """Print the profile of one window with every class, as ``settings`` run it on the CPU."""
    torch.manual_seed(0)
    window = torch.rand(1, 1, *model.input_spec.window_size) * 0.6
    channels = list(range(model.num_classes))
    device, dtype = settings.torch_device(), settings.torch_dtype(settings.torch_device())
    runtime = choose_runtime(model, device, dtype, 10**6, precision=settings.precision,  # as for a large scan
                             runtime=settings.runtime, compile=settings.compile, calibration=calibration_windows)
    print(f"CPU            {cpu_description()}")
    conv_peak, matmul_peak, float32_peak = peaks()
    print(f"peaks          bfloat16 3×3×3 convolution {conv_peak:.0f} GFLOP/s, bfloat16 matrix product "
          f"{matmul_peak:.0f} GFLOP/s, float32 matrix product {float32_peak:.0f} GFLOP/s (oneDNN, measured)")
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        image, head_input = runtime.trunk(window)
        params = model.head_parameters(image, channels)
        trunk, heads = steps_seconds([lambda: runtime.trunk(window),  # in turn, as windows run them
                                      lambda: model.heads(image, head_input, channels, run=runtime.heads)])
        logits = model.heads(image, head_input, channels, run=runtime.heads).float()
        batched = seconds(lambda: run_heads(head_input.float(), params.float()))
    rows = []
    for name, run in backbone_stages(model, window):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            rows.append((f"backbone {name}, eager bfloat16", seconds(run), gflop(run), False))
    trunk_gflop = gflop(lambda: model.trunk(window))
    heads_gflop = 2 * HEAD_MACS * len(channels) * window.numel() / 1e9
    band = BlendBand(len(channels), window.shape[2:4], gaussian_weights(model.input_spec.window_size, logits.device))
    box = tuple(slice(0, size) for size in model.input_spec.window_size)
    blending = seconds(lambda: band.add([box], logits))
    threshold = seconds(lambda: (logits > logit(settings.threshold)).numpy())
    path = f"{runtime.name}{' compiled' * runtime.compiled} {settings.precision}"
    total = trunk + heads + blending + threshold
    rows += [  # (stage, seconds, GFLOP, part of the window as run)
        (f"trunk, {path}", trunk, trunk_gflop, True),
        (f"heads ({len(channels)} classes, float32), as run", heads, heads_gflop, True),
        (f"heads ({len(channels)} classes, float32), batched eager", batched, heads_gflop, False),
        ("blending", blending, None, True),
        ("thresholding", threshold, None, True),
    ]
    print(f"{'stage':<52} {'seconds':>8} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8}")
    for name, spent, work, counted in rows:
        share = f"{100 * spent / total:5.1f}%" if counted else ""
        flops = f"{work:7.1f} {work / spent:8.0f}" if work else ""
        print(f"{name:<52} {spent:8.3f} {share:>6} {flops}")
    print(f"{'window, as run':<52} {total:8.3f}  trunk at {100 * trunk_gflop / trunk / conv_peak:.0f} % of the "
          "convolution peak")
