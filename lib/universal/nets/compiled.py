"""The trunk and the heads compiled with TorchInductor, for inference.

Compiling the trunk (backbone, image feature and head input: :meth:`UniversalModel.trunk`) fuses the
normalisation, ReLU and layout changes around each convolution and, with *freezing*, packs the
weights once; the first window pays for the compilation, so :mod:`universal.nets.runtime` decides
when it repays (its figures: bench/RESULTS.md). The heads compile into one fused loop
(:func:`~universal.nets.heads.pointwise_heads`, :func:`compiled_heads`).

Frozen weights are constants of the compiled code: when a model's trunk weights change (fine-tuning,
loading a state dict), :func:`compiled_trunk` compiles it again. TorchDynamo keeps compiled code per
Python code object, so each compilation traces its own copy of the trunk's code: dropping it drops
only that model's stale code, and other compiled functions in the process keep theirs. A
compilation that fails (no C++ compiler, an unsupported operator) is reported once, and the trunk or
the heads then run uncompiled.
"""

from __future__ import annotations

import functools
import logging
import types
import weakref
from collections.abc import Callable

import torch
from torch import nn

from universal.nets.heads import pointwise_heads, run_heads
from universal.nets.model import UniversalModel

log = logging.getLogger(__name__)
_cache: weakref.WeakKeyDictionary[nn.Module, CompiledTrunk] = weakref.WeakKeyDictionary()


class Compiled:
    """A function through compiled code (with the Inductor ``options`` patched in for each call), and
    through ``fallback`` once compiling has failed: a failure is reported once, as ``"compiling
    <what> failed, so ... uncompiled"``; a failure after a first success is raised."""

    def __init__(self, compiled: Callable, fallback: Callable, options: dict, failure: str):
        self.compiled: Callable | None = compiled
        self.fallback, self.options, self.failure = fallback, options, failure
        self.proven = False  # one call has gone through the compiled code

    def __call__(self, *args: torch.Tensor):
        if self.compiled is None:
            return self.fallback(*args)
        try:
            with torch._inductor.config.patch(self.options):
                out = self.compiled(*args)
        except Exception as error:  # any compiler failure: run uncompiled
            if self.proven:
                raise
            log.warning("%s: %s", self.failure, str(error).splitlines()[0])
            self.compiled = None
            return self.fallback(*args)
        self.proven = True
        return out

    @property
    def active(self) -> bool:
        return self.compiled is not None


class CompiledTrunk(Compiled):
    """``trunk(x)`` of a model through compiled code with frozen weights; the uncompiled trunk when
    compilation failed. It holds the model weakly: the cache keeps it while the model lives, and a
    reference back would keep every model that was ever compiled (each fine-tuned version) alive."""

    def __init__(self, model: UniversalModel):
        self.model = weakref.ref(model)
        trunk = type(model).trunk
        super().__init__(torch.compile(own_function(trunk), dynamic=False, fullgraph=True), trunk,
                         {"freezing": True}, "compiling the trunk failed, so it runs uncompiled")
        self.fingerprint = model.trunk_fingerprint()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().__call__(self.model(), x)


def own_function(function: Callable) -> Callable:
    """A copy of ``function`` with a code object of its own (the model it is called with is traced
    into one graph), so that compiled code for it is kept for this copy alone and goes with it."""
    return types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)


def compiled_trunk(model: UniversalModel) -> CompiledTrunk:
    """The compiled trunk of ``model``, shared by every caller while its trunk weights stay the same;
    a new one (its code holds the old weights as constants) when they changed."""
    entry = _cache.get(model)
    if entry is None or entry.fingerprint != model.trunk_fingerprint():
        entry = _cache[model] = CompiledTrunk(model)
    return entry


class CompiledHeads(Compiled):
    """:func:`~universal.nets.heads.pointwise_heads` compiled into one fused loop (features and
    parameters taken in float32; sizes may change between calls without compiling again), and
    :func:`~universal.nets.heads.run_heads` once compilation has failed."""

    def __init__(self):
        # fused multiply-adds (faster: bench/RESULTS.md); each value is still computed by one expression
        # whatever the other heads are
        super().__init__(torch.compile(pointwise_heads, dynamic=True, fullgraph=True), run_heads,
                         {"cpp.enable_floating_point_contract_flag": "fast"},
                         "compiling the heads failed, so they run uncompiled")

    def __call__(self, features: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return super().__call__(features.float(), params.float())


@functools.cache
def compiled_heads() -> CompiledHeads:
    """The process's compiled heads (they hold no weights: one serves every model)."""
    return CompiledHeads()
