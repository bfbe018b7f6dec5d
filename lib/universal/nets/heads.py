"""The generated class heads: the layout of a head's 153 parameters, how a new model starts them, and
two ways to run every requested head on the shared 8-channel features.

A head is three point-wise layers (8 → 8 → 8 → 1, ReLU between) whose weights the controller
generates per sample and class. :func:`run_heads` runs them as batched 8×8 matrix products (the form
training differentiates through); :func:`pointwise_heads` writes each output as an explicit sum over
its inputs, which TorchInductor fuses into one loop over the voxels that keeps every intermediate in
registers (:func:`universal.nets.compiled.compiled_heads`): 32 heads then cost a few percent of a
released-size window (bench/RESULTS.md). Both forms compute each head from its own parameters with
the same operations whatever the other heads are, so a head's output is the same alone or with others.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HEAD_CHANNELS = 8
# Generated values per class, in the controller's output order: the weights of the three point-wise
# layers (row-major, out × in), then their biases.
HEAD_PARAM_SIZES = (
    HEAD_CHANNELS * HEAD_CHANNELS,
    HEAD_CHANNELS * HEAD_CHANNELS,
    HEAD_CHANNELS,
    HEAD_CHANNELS,
    HEAD_CHANNELS,
    1,
)
HEAD_PARAMS = sum(HEAD_PARAM_SIZES)  # 153


def init_head_generator(controller: nn.Conv3d, weight_scale: float = 0.1) -> None:
    """Start every class from one shared random head: He-scaled weights in the controller's bias
    (standard deviation sqrt(2/8) for the two ReLU layers, sqrt(1/8) for the output layer), zero head
    biases, and controller weights shrunk by ``weight_scale``. With the default initialisation the
    generated heads start near zero and learn slowly; released weights replace all of this."""
    scales = (math.sqrt(2 / HEAD_CHANNELS), math.sqrt(2 / HEAD_CHANNELS), math.sqrt(1 / HEAD_CHANNELS), 0, 0, 0)
    with torch.no_grad():
        controller.weight.mul_(weight_scale)
        for part, scale in zip(controller.bias.split(HEAD_PARAM_SIZES), scales, strict=True):
            if scale:
                part.normal_(0.0, scale)
            else:
                part.zero_()


def run_heads(features: torch.Tensor, params: torch.Tensor, chunk_voxels: int = 32768) -> torch.Tensor:
    """Apply generated point-wise heads: features (B, 8, *S), params (B, K, 153) → logits (B, K, *S).

    All B·K heads run as batched 8×8 matrix products over chunks of ``chunk_voxels`` voxels; every
    head's products have the same shapes whatever B and K are, so a head's output is the same
    whether it runs alone or with others.
    """
    batch, classes = params.shape[:2]
    spatial = features.shape[2:]
    heads = batch * classes
    w1, w2, w3, b1, b2, b3 = (p.reshape(heads, -1) for p in params.split(HEAD_PARAM_SIZES, dim=-1))
    w1, w2 = w1.view(heads, HEAD_CHANNELS, HEAD_CHANNELS), w2.view(heads, HEAD_CHANNELS, HEAD_CHANNELS)
    w3, b1, b2, b3 = w3.view(heads, 1, HEAD_CHANNELS), b1[..., None], b2[..., None], b3[..., None]
    logits = []
    for chunk in features.flatten(2).split(chunk_voxels, dim=2):  # (B, 8, n)
        shared = chunk[:, None].expand(batch, classes, *chunk.shape[1:]).reshape(heads, HEAD_CHANNELS, -1)
        hidden = torch.baddbmm(b1, w1, shared).relu_()
        hidden = torch.baddbmm(b2, w2, hidden).relu_()
        logits.append(torch.baddbmm(b3, w3, hidden).view(batch, classes, -1))
    return torch.cat(logits, dim=-1).view(batch, classes, *spatial)


def pointwise_heads(features: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """:func:`run_heads` written voxel by voxel: features (B, 8, *S), params (B, K, 153) → logits
    (B, K, *S). Every value is a sum of products in a fixed order over its 8 inputs, made of
    element-wise operations only: compiled, they become one fused loop (slow uncompiled)."""
    batch, classes = params.shape[:2]
    w1, w2, w3, b1, b2, b3 = params.split(HEAD_PARAM_SIZES, dim=-1)
    w1 = w1.unflatten(-1, (HEAD_CHANNELS, HEAD_CHANNELS))
    w2 = w2.unflatten(-1, (HEAD_CHANNELS, HEAD_CHANNELS))
    w3 = w3.unflatten(-1, (1, HEAD_CHANNELS))
    voxels = features.flatten(2)[:, None]  # (B, 1, 8, N): shared by the K heads
    inputs = [voxels[:, :, i] for i in range(HEAD_CHANNELS)]  # 8 × (B, 1, N)

    def layer(weight: torch.Tensor, bias: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for row in range(weight.shape[-2]):
            total = bias[..., row, None]
            for column, value in enumerate(inputs):
                total = total + weight[..., row, column, None] * value
            outputs.append(total)
        return outputs  # (B, K, N) each

    hidden = [value.relu() for value in layer(w1, b1, inputs)]
    hidden = [value.relu() for value in layer(w2, b2, hidden)]
    return layer(w3, b3, hidden)[0].view(batch, classes, *features.shape[2:])
