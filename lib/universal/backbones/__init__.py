"""Backbones by name. Each maps (B, 1, D, H, W) to ``(bottleneck, features)`` and exposes
``bottleneck_channels``, ``feature_channels`` and ``size_divisor``.

Windows must be multiples of ``SIZE_DIVISORS`` and at least ``MIN_SIZES`` along D, H and W: smaller
ones leave a single voxel at the bottleneck, where instance normalisation is undefined."""

from __future__ import annotations

from torch import nn

# The backbone used wherever none is named (command line, Python, the app, training from scratch): the
# reference's training default (train.py, --backbone unet), a third of Swin UNETR's parameters
# (19.08M against 62.19M, ljwztc/CLIP-Driven-Universal-Model README.md), and the one whose CPU path is
# compiled (universal.compiled).
DEFAULT_BACKBONE = "unet"
DEFAULT_WIDTHS = {"unet": 32, "swinunetr": 48}
SIZE_DIVISORS = {"unet": 8, "swinunetr": 32}
MIN_SIZES = {"unet": 16, "swinunetr": 64}
BACKBONE_TITLES = {"unet": "U-Net", "swinunetr": "Swin UNETR"}


def build_backbone(name: str, width: int | None = None, *, use_checkpoint: bool = False) -> nn.Module:
    """A backbone by name: ``"unet"`` (``width`` 32 released) or ``"swinunetr"`` (48 released).

    ``use_checkpoint`` trades compute for memory in training (Swin UNETR only).
    """
    if name not in DEFAULT_WIDTHS:
        raise ValueError(f"unknown backbone '{name}'; choose one of {', '.join(DEFAULT_WIDTHS)}")
    width = width or DEFAULT_WIDTHS[name]
    if name == "unet":
        from .unet import UNet3D

        return UNet3D(width=width)
    from .swinunetr import SwinUNETRBackbone

    return SwinUNETRBackbone(feature_size=width, use_checkpoint=use_checkpoint)
