"""Backbones compiled with TorchInductor, for inference.

Compiling fuses the normalisation, ReLU and layout changes around each convolution and, with
*freezing*, packs the weights once. On a 2-core AVX-512 BF16 CPU one released-size U-Net window
(96³, bfloat16) then takes 4.1 s instead of 6.1 s; in float32 the gain is small (10.1 s against
11.0 s). The first window pays for the compilation (10-20 s for the U-Net, over 2 min for Swin
UNETR, which then gains 1.25×), so :func:`worth_compiling` is what ``compile="auto"`` asks.

Frozen weights are constants of the compiled code: when a model's weights change (fine-tuning,
loading a state dict), :func:`compiled_backbone` compiles it again. TorchDynamo keeps compiled code
per Python code object, so each compilation traces its own copy of the backbone's ``forward`` code:
dropping it drops only that backbone's stale code, and other compiled functions in the process keep
theirs. A compilation that fails (no C++ compiler, an unsupported operator) is reported once, and
the backbone then runs uncompiled.
"""

from __future__ import annotations

import itertools
import logging
import math
import types
import weakref
from collections.abc import Callable

import torch
from torch import nn

from universal.nets.model import UniversalModel

COMPILE_MIN_WINDOWS = 16  # released-size windows: at about 2 s saved per window, fewer do not repay 10-20 s
RELEASED_WINDOW_VOXELS = 96**3

log = logging.getLogger(__name__)
_cache: weakref.WeakKeyDictionary[nn.Module, CompiledBackbone] = weakref.WeakKeyDictionary()


def worth_compiling(model: UniversalModel, device: torch.device, dtype: torch.dtype, windows: int) -> bool:
    """Whether ``compile="auto"`` compiles: a U-Net in bfloat16 on the CPU, for ``windows`` windows
    that hold at least ``COMPILE_MIN_WINDOWS`` released-size windows' work (a window's work scales
    with the width squared and the window's voxels: a width-8 model with 32³ windows does 1/432 of it).
    """
    if not model.record.compiles_on_cpu or device.type != "cpu" or dtype != torch.bfloat16:
        return False
    work = (model.width / model.record.width) ** 2 * math.prod(model.input_spec.window_size) / RELEASED_WINDOW_VOXELS
    return windows * work >= COMPILE_MIN_WINDOWS


def weights_fingerprint(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """(storage address, version counter) of every parameter and buffer: it changes when any of them
    is replaced or updated in place (optimiser steps, ``load_state_dict``, ``.to()``)."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(module.parameters(), module.buffers()))


class CompiledBackbone:
    """``backbone(x)`` through compiled code with frozen weights; the uncompiled backbone when
    compilation failed."""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.fingerprint = weights_fingerprint(backbone)
        self.compiled: Callable | None = torch.compile(own_forward(backbone), dynamic=False, fullgraph=True)
        self.proven = False  # one call has gone through the compiled code

    def __call__(self, x: torch.Tensor):
        if self.compiled is None:
            return self.backbone(x)
        try:
            with torch._inductor.config.patch(freezing=True):
                out = self.compiled(x)
        except Exception as error:  # any compiler failure: run uncompiled
            if self.proven:
                raise
            log.warning("compiling the backbone failed, so it runs uncompiled: %s", str(error).splitlines()[0])
            self.compiled = None
            return self.backbone(x)
        self.proven = True
        return out

    @property
    def active(self) -> bool:
        return self.compiled is not None


def own_forward(module: nn.Module) -> Callable:
    """``module.forward`` bound to ``module`` as a function with a code object of its own (one graph:
    the submodules' code is traced into it), so that compiled code for it is kept for this call site
    alone and goes when the function does."""
    forward = type(module).forward
    function = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__,
                                  forward.__defaults__, forward.__closure__)
    return types.MethodType(function, module)


def compiled_backbone(backbone: nn.Module) -> CompiledBackbone:
    """The compiled form of ``backbone``, shared by every caller while its weights stay the same; a
    new one (its code holds the old weights as constants) when they changed."""
    entry = _cache.get(backbone)
    if entry is None or entry.fingerprint != weights_fingerprint(backbone):
        entry = _cache[backbone] = CompiledBackbone(backbone)
    return entry
