"""The 3D U-Net backbone of the released U-Net model (Models Genesis layout, no output layer).

Parameter names (``down_tr64.ops.0.conv1.weight``, ...) are those of the released checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WindowNorm(nn.Module):
    """Per-window normalisation with a learned scale and shift.

    The released model normalises with the statistics of the tensor it is given, in training and in
    evaluation alike; at inference that tensor is one 96³ window. Here each sample of a batch is
    normalised by its own statistics (instance-norm semantics), so a batch of N windows computes
    exactly what N single windows compute. Running statistics are never used.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


class ConvNormReLU(nn.Module):
    """3×3×3 convolution (with bias) → :class:`WindowNorm` → ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = WindowNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class DownStage(nn.Module):
    """Two convolutions (in → mid → out); the caller pools between stages."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.ops = nn.Sequential(ConvNormReLU(in_channels, mid_channels), ConvNormReLU(mid_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)


class UpStage(nn.Module):
    """2× transposed convolution, concatenation ``[up, skip]``, then two convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.ops = nn.Sequential(
            ConvNormReLU(in_channels + skip_channels, out_channels), ConvNormReLU(out_channels, out_channels)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.ops(torch.cat([self.up_conv(x), skip], dim=1))


class UNet3D(nn.Module):
    """Four-level 3D U-Net returning ``(bottleneck, features)``.

    With ``width`` w (32 in the released model) and input (B, 1, D, H, W), D, H, W divisible by 8:
    ``bottleneck`` is (B, 16w, D/8, H/8, W/8) and ``features`` (B, 2w, D, H, W).
    """

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.down_tr64 = DownStage(in_channels, w, 2 * w)
        self.down_tr128 = DownStage(2 * w, 2 * w, 4 * w)
        self.down_tr256 = DownStage(4 * w, 4 * w, 8 * w)
        self.down_tr512 = DownStage(8 * w, 8 * w, 16 * w)
        self.up_tr256 = UpStage(16 * w, 8 * w, 8 * w)
        self.up_tr128 = UpStage(8 * w, 4 * w, 4 * w)
        self.up_tr64 = UpStage(4 * w, 2 * w, 2 * w)
        self.bottleneck_channels = 16 * w
        self.feature_channels = 2 * w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip64 = self.down_tr64(x)
        skip128 = self.down_tr128(F.max_pool3d(skip64, 2))
        skip256 = self.down_tr256(F.max_pool3d(skip128, 2))
        bottleneck = self.down_tr512(F.max_pool3d(skip256, 2))
        up = self.up_tr256(bottleneck, skip256)
        up = self.up_tr128(up, skip128)
        features = self.up_tr64(up, skip64)
        return bottleneck, features
