"""The trunk on OpenVINO, an optional runtime (``pip install 'universal-model[openvino]'``).

Where OpenVINO runs the trunk faster than compiled torch, ``runtime="auto"`` takes it
(:mod:`universal.nets.runtime`). ``precision="int8"`` runs an int8 trunk, quantized by NNCF's
post-training quantization on phantom windows, with the layers whose quantization moves the masks
most kept in floating point (:func:`float_layers`): faster, with an answer that stays within a
per-class Dice of 0.99 of float32 on the phantom-trained model (bench/RESULTS.md); its measured
agreement is kept with it and reported.

Converted models are cached under ``<cache>/openvino/<key>/`` (``model.xml``, ``model.bin``,
``info.json``). The key names the trunk's weights (a SHA-256 of its tensors), the window, the
precision, the int8 recipe and the OpenVINO version, so fine-tuned weights get a conversion of their
own; a folder appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from universal.devices import cpu_has_native_bfloat16
from universal.errors import UniversalError
from universal.io.download import cache_dir
from universal.nets.heads import run_heads
from universal.nets.model import InputSpec, UniversalModel

INSTALL_HINT = "pip install 'universal-model[openvino]'"
PRECISIONS = ("bfloat16", "float32", "int8")
CALIBRATION_WINDOWS, CHECK_WINDOWS = 32, 4  # windows that calibrate an int8 trunk, and that measure it
# OpenVINO opset names of the normalisations (instance and layer norms convert to MVN): an int8 trunk
# does not quantize their inputs (openvinotoolkit/nncf src/nncf/scopes.py: IgnoredScope's types are the
# framework's operation types, its names the nodes' names)
NORMALISATIONS = ("MVN", "GroupNormalization")
INT8_RECIPE = f"norms-stem-last2/{CALIBRATION_WINDOWS}"  # names the recipe in the conversion key
AGREEMENT_TARGET = 0.99  # lowest per-class Dice against float32 an int8 trunk is expected to keep
# (input spec, count, seed) → ``count`` windows, float32 (1, 1, *window), that an int8 trunk is
# calibrated on and checked against (universal.synth.calibration_windows: phantom windows)
Calibration = Callable[[InputSpec, int, int], Sequence[np.ndarray]]
KEEP_CONVERSIONS = 8  # the cache keeps the conversions used last (each fine-tuned model has its own)

log = logging.getLogger(__name__)
_loaded: weakref.WeakKeyDictionary[nn.Module, dict[str, OpenVinoTrunk]] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[nn.Module, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()
_registry = threading.Lock()  # guards the two dictionaries' shapes


def import_openvino():
    """The ``openvino`` module, or a :class:`UniversalError` that says how to install it."""
    try:
        import openvino
    except ImportError as error:
        raise UniversalError(f"the OpenVINO runtime is not installed: {INSTALL_HINT}") from error
    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except UniversalError:
        return False
    return True


def int8_available() -> bool:
    """Whether an int8 trunk can be made here: OpenVINO and NNCF installed."""
    return openvino_available() and importlib.util.find_spec("nncf") is not None


class TrunkModule(nn.Module):
    """A model's trunk as a module of its own, for conversion: (B, 1, *roi) → (image, head input)."""

    def __init__(self, model: UniversalModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.trunk(x)


class OpenVinoTrunk:
    """``trunk(x)`` of a model on OpenVINO's CPU plugin: windows (B, 1, *roi), float32 → (image feature
    (B, 256), head input (B, 8, *roi)), float32 tensors. ``agreement``: for an int8 trunk, how its
    masks agree with float32 on phantom windows (``lowest_dice``, ``flipped_percent``)."""

    active = True

    def __init__(self, model: UniversalModel, precision: str,
                 calibration: Calibration | None = None):
        if precision not in PRECISIONS:
            raise UniversalError(f"OpenVINO precision must be {', '.join(PRECISIONS)}, got {precision!r}")
        ov = import_openvino()
        self.precision = precision
        self.fingerprint = model.trunk_fingerprint()
        folder = cache_dir() / "openvino" / conversion_key(model, precision, ov.get_version())
        if not (folder / "info.json").is_file():
            build(model, precision, folder, calibration)
            prune(folder.parent)
        info = json.loads((folder / "info.json").read_text())
        os.utime(folder)  # used now: pruning keeps it
        self.agreement = info.get("agreement")
        # The CPU plugin computes in bfloat16 wherever the CPU does so natively, unless float32 is asked
        # for, and refuses bf16 on a CPU without it (openvinotoolkit/openvino docs/articles_en/
        # openvino-workflow/running-inference/inference-devices-and-modes/cpu-device.rst, "Floating
        # Point Data Types Specifics"): float32 is asked for explicitly, an int8 model's other layers
        # follow the CPU.
        inner = "bf16" if precision == "bfloat16" or (precision == "int8" and cpu_has_native_bfloat16()) else "f32"
        config = {"INFERENCE_PRECISION_HINT": inner, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        self.compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", config)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, inputs = [], []
        for window in x.detach().float().cpu().numpy():  # the converted model takes one window
            answer = self.compiled(window[None])  # copies its outputs (share_outputs=False)
            images.append(torch.from_numpy(answer[0]))
            inputs.append(torch.from_numpy(answer[1]))
        return torch.cat(images).to(x.device), torch.cat(inputs).to(x.device)


def openvino_trunk(model: UniversalModel, precision: str, calibration: Calibration | None = None,
                   waiting: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> OpenVinoTrunk:
    """The OpenVINO trunk of ``model`` in ``precision``, loaded once per process while the trunk's
    weights stay the same (converted, or read from the cache, when they change). One thread at a time
    converts a model's trunk in one precision; a caller that waits for another's conversion does so
    inside ``waiting()`` (a request steps aside there for the background work it waits on)."""
    with _registry:
        lock = _locks.setdefault(model, {}).setdefault(precision, threading.Lock())
    if not lock.acquire(blocking=False):
        with waiting():
            lock.acquire()
    try:
        with _registry:
            entries = _loaded.setdefault(model, {})
        entry = entries.get(precision)
        if entry is None or entry.fingerprint != model.trunk_fingerprint():
            entry = entries[precision] = OpenVinoTrunk(model, precision, calibration)
        return entry
    finally:
        lock.release()


def conversion_key(model: UniversalModel, precision: str, version: str) -> str:
    """Names a conversion: the trunk's tensors, the window, the precision (for int8, its recipe), the
    OpenVINO version."""
    digest = hashlib.sha256()
    for name, tensor in sorted(TrunkModule(model).state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    digest.update(f"{model.backbone_name}:{model.input_spec.window_size}:{precision}:{version}".encode())
    if precision == "int8":
        digest.update(INT8_RECIPE.encode())
    return digest.hexdigest()[:32]


def build(model: UniversalModel, precision: str, folder: Path,
          calibration: Calibration | None) -> None:
    """Convert the trunk (and for int8 quantize it and measure it) into ``folder``, in one step."""
    ov = import_openvino()
    log.info("converting the %s trunk to OpenVINO (%s), once for these weights", model.title, precision)
    trunk = TrunkModule(model)
    window = list(model.input_spec.window_size)
    # Tracing runs the trunk once: a fully convolutional one is traced at its smallest window and
    # then given the model's, the same graph in a fraction of the time (bench/RESULTS.md).
    traced = [model.record.min_size] * 3 if model.record.fully_convolutional else window
    with torch.no_grad(), warnings.catch_warnings():
        # tracing warns about the normalisations' checks of their input's size, which hold at any size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation, which OpenVINO calls
        converted = ov.convert_model(trunk, example_input=torch.zeros(1, 1, *traced))
    converted.reshape({0: [1, 1, *window]})
    info: dict = {"backbone": model.backbone_name, "precision": precision, "openvino": ov.get_version()}
    if precision == "int8":
        if calibration is None:
            raise UniversalError("an int8 trunk is quantized once per weights on calibration windows, and none were "
                                 "given: pass calibration=universal.synth.calibration_windows")
        converted, info["agreement"] = quantize(ov, converted, model, calibration)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        # Weights stay float32 in the file: save_model compresses them to FP16 unless told not to
        # (openvinotoolkit/openvino src/core/include/openvino/core/graph_util.hpp, save_model).
        ov.save_model(converted, str(staging / "model.xml"), compress_to_fp16=False)
        (staging / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        with contextlib.suppress(OSError):  # another process may have finished the same conversion
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prune(root: Path) -> None:
    """Remove all but the ``KEEP_CONVERSIONS`` conversions used last."""
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in folders[KEEP_CONVERSIONS:]:
        shutil.rmtree(stale, ignore_errors=True)


def quantize(ov, converted, model: UniversalModel, calibration: Calibration):
    """``converted`` quantized to int8 by NNCF on ``calibration``'s windows (seed 0), but for its
    :func:`float_layers`, and its agreement with the float32 model on others (seed 1)."""
    try:
        import nncf
    except ImportError as error:
        raise UniversalError(f"int8 needs NNCF, which is not installed: {INSTALL_HINT}") from error
    windows = calibration(model.input_spec, CALIBRATION_WINDOWS, 0)
    quantized = nncf.quantize(converted, nncf.Dataset(windows), subset_size=len(windows),
                              ignored_scope=nncf.IgnoredScope(names=float_layers(converted)))
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    agreement = measure_agreement(model, lambda w: [torch.from_numpy(a) for a in compiled(w).values()],
                                  calibration(model.input_spec, CHECK_WINDOWS, 1))
    if agreement["lowest_dice"] < AGREEMENT_TARGET:
        log.warning("the int8 trunk's masks agree with float32 to a lowest per-class Dice of %.4f on phantom "
                    "windows, below %.2f: prefer the default precision for this model", agreement["lowest_dice"],
                    AGREEMENT_TARGET)
    return quantized, agreement


def float_layers(converted) -> list[str]:
    """The names of the operations of a converted trunk that an int8 trunk keeps in floating point: the
    normalisations, the first convolution, and the last two convolutions before the head input (its
    second output). Quantizing these moved the phantom-trained model's masks most, measured one
    group at a time; without them the lowest per-class Dice against float32 rose from 0.975 to 0.991
    on the clinical phantom and eight unseen ones, at 1.07× the time of a fully int8 window
    (bench/RESULTS.md)."""
    operations = converted.get_ordered_ops()
    names = [op.get_friendly_name() for op in operations if op.get_type_name() in NORMALISATIONS]
    names.append(next(op for op in operations if op.get_type_name() == "Convolution").get_friendly_name())
    names += [op.get_friendly_name() for op in convolutions_before(converted.outputs[1].get_node(), 2)]
    return names


def convolutions_before(node, count: int) -> list:
    """The ``count`` convolutions nearest upstream of ``node`` (breadth first over its inputs)."""
    found, queue, seen = [], [node], {node.get_friendly_name()}
    while queue and len(found) < count:
        current = queue.pop(0)
        for source in (value.get_node() for value in current.input_values()):
            if source.get_friendly_name() in seen:
                continue
            seen.add(source.get_friendly_name())
            if source.get_type_name() == "Convolution":
                found.append(source)
            queue.append(source)
    return found[:count]


def measure_agreement(model: UniversalModel, trunk: Callable, windows: Sequence[np.ndarray]) -> dict:
    """Masks (logit > 0) of every class through ``trunk`` against the float32 model on ``windows``:
    the lowest per-class Dice over the classes either finds, and the share of voxel decisions that
    differ."""
    overlap = found = 0
    flipped = total = 0
    channels = list(range(model.num_classes))
    with torch.inference_mode():
        for window in windows:
            x = torch.from_numpy(window)
            expected = model(x) > 0
            image, head_input = trunk(window)
            ours = model.heads(image, head_input, channels, run=run_heads) > 0
            voxels = tuple(range(2, expected.ndim))
            overlap = overlap + (expected & ours).sum(dim=(0, *voxels)).double()
            found = found + expected.sum(dim=(0, *voxels)).double() + ours.sum(dim=(0, *voxels)).double()
            flipped += int((expected != ours).sum())
            total += expected.numel()
    present = found > 0
    dice = (2 * overlap[present] / found[present]) if bool(present.any()) else torch.ones(1)
    return {"lowest_dice": round(float(dice.min()), 4), "flipped_percent": round(100 * flipped / total, 4),
            "windows": len(windows)}
