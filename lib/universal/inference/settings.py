"""How a scan is segmented: :class:`InferenceSettings`, shared by the network and the stages around it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from universal.devices import INT8, check_precision, inference_dtype, resolve_device
from universal.errors import UniversalError

COMPILE_CHOICES = ("auto", "on", "off")
RUNTIMES = ("auto", "torch", "openvino")
LOCALIZE_MAX_CLASSES = 8  # above this, the classes' region is most of the body and the coarse grid saves nothing


@dataclass(frozen=True)
class InferenceSettings:
    """How a scan is segmented.

    ``overlap``: fraction of a window shared with its neighbour (0 ≤ overlap < 1). ``batch_size``:
    windows per network call. ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``. ``precision``: ``"auto"`` (float16 on CUDA; bfloat16 on CPUs with
    native bfloat16 arithmetic, float32 on other CPUs), ``"float32"``, ``"bfloat16"``, ``"float16"``, or
    ``"int8"`` (an int8 trunk on OpenVINO, quantized on phantom windows: faster, a less exact answer).
    ``threshold``: probability above which a voxel belongs to a class. ``postprocess``: apply
    :mod:`universal.inference.postprocess`. ``compile``: run the trunk through TorchInductor
    (:mod:`universal.nets.compiled`): ``"auto"``, ``"on"`` or ``"off"``; the heads compile with the
    trunk. ``runtime``: what runs the trunk: ``"torch"``, ``"openvino"`` (:mod:`universal.nets.openvino`)
    or ``"auto"``. What ``auto`` takes, for which work, is the table of :mod:`universal.nets.runtime`.
    ``checks``: check the result's anatomy (:mod:`universal.quality`); the findings go into the report.

    Work that does not change the answer: ``skip_air`` leaves out windows whose every voxel lies at
    or below the HU window's lower end; ``localize``, when at most ``LOCALIZE_MAX_CLASSES`` classes are
    computed, first runs a coarse grid (the fewest windows of the full grid that still cover the
    volume), and then only the windows that reach those classes' coarse masks grown by
    ``localize_margin`` voxels: inside that region every window that covers a voxel is blended, as in
    a full pass; outside it is background.
    """

    overlap: float = 0.5
    batch_size: int = 1
    device: str = "auto"
    precision: str = "auto"
    threshold: float = 0.5
    postprocess: bool = True
    skip_air: bool = True
    localize: bool = True
    localize_margin: int = 24
    compile: str = "auto"
    runtime: str = "auto"
    checks: bool = True

    def __post_init__(self):
        if not 0.0 <= self.overlap < 1.0:
            raise UniversalError(f"overlap must be at least 0 and below 1, got {self.overlap}")
        if self.batch_size < 1:
            raise UniversalError(f"batch size must be at least 1 window, got {self.batch_size}")
        check_precision(self.precision, inference=True)
        if not 0.0 < self.threshold < 1.0:
            raise UniversalError(f"threshold must lie between 0 and 1, got {self.threshold}")
        if self.compile not in COMPILE_CHOICES:
            raise UniversalError(f"compile must be {', '.join(COMPILE_CHOICES)}; got {self.compile!r}")
        if self.runtime not in RUNTIMES:
            raise UniversalError(f"runtime must be {', '.join(RUNTIMES)}; got {self.runtime!r}")
        if self.precision == INT8 and self.runtime == "torch":
            raise UniversalError("int8 runs on OpenVINO: leave runtime at auto or choose openvino")
        if self.localize_margin < 0:
            raise UniversalError(f"localize margin must not be negative, got {self.localize_margin} voxels")

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        return inference_dtype(self.precision, device)
