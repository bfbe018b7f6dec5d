"""What runs a model in inference: its trunk (nearly all the work) on torch, compiled by TorchInductor
(:mod:`universal.nets.compiled`) or on OpenVINO (:mod:`universal.nets.openvino`), and its heads as
batched products or one compiled loop (:mod:`universal.nets.heads`).

``runtime="auto"`` and ``compile="auto"`` decide by one table. A conversion or compilation is paid
once per process and weights, so it is taken only for enough work ahead, counted in released-size
windows (:func:`released_windows`). The figures behind each row are in bench/RESULTS.md ("Fused heads
and the runtimes", "Where one window's time goes").

=============== =================================================================================
trunk           when
=============== =================================================================================
OpenVINO        ``precision="int8"`` (only OpenVINO runs it); or a backbone whose record says
                ``openvino_on_cpu``, in bfloat16, on a CPU that computes bfloat16 natively (AMX or
                AVX-512 BF16), OpenVINO installed, at least :data:`COMPILE_MIN_WINDOWS` released-size
                windows (its window takes 0.65× the compiled trunk's time with AMX, 0.88× with
                AVX-512 BF16 alone)
compiled torch  a backbone whose record says ``compiles_on_cpu``, in bfloat16 on the CPU, at least
                :data:`COMPILE_MIN_WINDOWS` released-size windows (1.5× eager, after 10-20 s of
                compilation); or ``compile="on"``
torch           everything else: float32 gains little from compiling, GPUs run eager
=============== =================================================================================

The heads run as one compiled loop whenever the trunk is compiled or on OpenVINO (unless
``compile="off"``), else as batched products.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from universal.devices import INT8, cpu_has_native_bfloat16, dtype_name
from universal.errors import UniversalError
from universal.nets.compiled import CompiledTrunk, compiled_heads, compiled_trunk
from universal.nets.heads import run_heads
from universal.nets.model import UniversalModel
from universal.nets.openvino import Calibration, openvino_available, openvino_trunk

COMPILE_MIN_WINDOWS = 16  # released-size windows: at about 2 s saved per window, fewer do not repay 10-20 s
RELEASED_WINDOW_VOXELS = 96**3
TRUNKS = ("openvino", "compiled", "torch")



@dataclass(frozen=True)
class Runtime:
    """The chosen forms: ``trunk(x)`` → (image feature (B, 256), head input (B, 8, *roi)) and
    ``heads(features, params)`` → logits; ``name``: ``"torch"`` or ``"openvino"``."""

    trunk: Callable
    heads: Callable
    name: str

    @property
    def compiled(self) -> bool:
        """Whether the trunk runs through TorchInductor's compiled code."""
        return isinstance(self.trunk, CompiledTrunk) and self.trunk.active

    @property
    def agreement(self) -> dict | None:
        """For an int8 trunk, its measured agreement with float32."""
        return getattr(self.trunk, "agreement", None)


def eager(model: UniversalModel) -> Runtime:
    """The model's own trunk and the batched heads."""
    return Runtime(model.trunk, run_heads, "torch")


def released_windows(model: UniversalModel) -> float:
    """One window's work as a share of a released-size U-Net window's (the work scales with the width
    squared and the window's voxels: a width-8 model with 32³ windows does 1/432 of it)."""
    return (model.width / model.record.width) ** 2 * math.prod(model.input_spec.window_size) / RELEASED_WINDOW_VOXELS


def repays(model: UniversalModel, windows: int) -> bool:
    """Whether ``windows`` windows hold at least :data:`COMPILE_MIN_WINDOWS` released-size windows' work."""
    return windows * released_windows(model) >= COMPILE_MIN_WINDOWS


def choose_trunk(model: UniversalModel, device: torch.device, dtype: torch.dtype, windows: int, *,
                 precision: str = "auto", runtime: str = "auto", compile: str = "auto") -> str:
    """The table above: ``"openvino"``, ``"compiled"`` or ``"torch"`` for ``windows`` windows of work.
    ``runtime`` (``auto``, ``torch``, ``openvino``) and ``compile`` (``auto``, ``on``, ``off``)
    overrule it; OpenVINO runs on the CPU only."""
    on_cpu_bfloat16 = device.type == "cpu" and dtype == torch.bfloat16
    if runtime == "auto":
        native = model.record.openvino_on_cpu and on_cpu_bfloat16 and cpu_has_native_bfloat16()
        runtime = "openvino" if precision == INT8 or (native and openvino_available() and repays(model, windows)) \
            else "torch"
    if runtime == "openvino":
        if device.type != "cpu":
            raise UniversalError(f"the OpenVINO runtime{' of int8' * (precision == INT8)} runs on the CPU, not "
                                 f"{device}; use device cpu")
        return "openvino"
    if compile == "on" or (compile == "auto" and model.record.compiles_on_cpu and on_cpu_bfloat16
                           and repays(model, windows)):
        return "compiled"
    return "torch"


def choose_runtime(model: UniversalModel, device: torch.device, dtype: torch.dtype, windows: int, *,
                   precision: str = "auto", runtime: str = "auto", compile: str = "auto",
                   calibration: Calibration | None = None) -> Runtime:
    """The trunk and heads to run ``windows`` windows of ``model`` with (see :func:`choose_trunk`);
    ``calibration`` gives the windows an int8 trunk is quantized on the first time its weights are
    used so."""
    trunk = choose_trunk(model, device, dtype, windows, precision=precision, runtime=runtime, compile=compile)
    if trunk == "openvino":
        converted = openvino_trunk(model, INT8 if precision == INT8 else dtype_name(dtype), calibration)
        return Runtime(converted, run_heads if compile == "off" else compiled_heads(), "openvino")
    if trunk == "compiled":
        return Runtime(compiled_trunk(model), compiled_heads(), "torch")
    return eager(model)
