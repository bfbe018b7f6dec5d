"""Where and in which precision the networks run: devices by name, the precision policies of
inference and training, and what this CPU computes natively."""

from __future__ import annotations

import platform

import torch

from universal.errors import UniversalError

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INT8 = "int8"  # inference only: an int8 trunk on OpenVINO (universal.nets.openvino), the rest in float32


def check_precision(precision: str, *, inference: bool = False) -> str:
    """``precision`` if it is ``"auto"`` or one of :data:`PRECISIONS` (or ``"int8"`` for
    ``inference``), else a :class:`UniversalError`."""
    allowed = ("auto", *PRECISIONS, *((INT8,) if inference else ()))
    if precision not in allowed:
        raise UniversalError(f"precision must be {', '.join(allowed)}; got {precision!r}")
    return precision


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype torch computes in: ``"auto"``: float16 on CUDA; bfloat16 on CPUs with native bfloat16
    arithmetic, float32 on other CPUs; ``"int8"``: float32 (around an int8 trunk). Otherwise the named
    precision."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    return torch.float32 if precision == INT8 else PRECISIONS[precision]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``: the name :data:`PRECISIONS` uses."""
    return str(dtype).removeprefix("torch.")


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast precision of training: ``"auto"`` is bfloat16 on CUDA GPUs that support it and
    float32 elsewhere (a CPU trains in float32). Otherwise the named precision."""
    if precision == "auto":
        supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if supported else torch.float32
    return PRECISIONS[precision]


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), where it is faster than
    float32; elsewhere bfloat16 is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon 4th generation and later)."""
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def cpu_description() -> str:
    """The CPU's model name and its bfloat16 units, e.g. ``"AMD EPYC (AVX-512 BF16, no AMX), 2 threads"``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as stream:
            name = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), name)
    except OSError:
        pass
    avx512 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    units = f"{'AVX-512 BF16' if avx512 else 'no AVX-512 BF16'}, {'AMX' if cpu_has_amx() else 'no AMX'}"
    return f"{name} ({units}), {torch.get_num_threads()} threads"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as one of this
    machine's devices (``cpu`` for any CPU, ``cuda:N`` with N given); anything else, or a GPU this
    machine lacks, is a :class:`UniversalError` naming the devices there are, before anything is loaded."""
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = text.partition(":")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    choices = ", ".join(["auto", "cpu", *(f"cuda:{i}" for i in range(gpus))])
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise UniversalError(f"unknown device {name!r}; this machine has {choices}")
    if kind == "cpu":
        if index and int(index) != 0:
            raise UniversalError(f"device {name!r}: the CPU is one device here; use cpu")
        return torch.device("cpu")
    if not gpus:
        raise UniversalError(f"device {name!r} was asked for but no CUDA GPU is available; use cpu")
    number = int(index) if index else torch.cuda.current_device()
    if number >= gpus:
        raise UniversalError(f"device {name!r} does not exist; this machine has {choices}")
    return torch.device("cuda", number)
