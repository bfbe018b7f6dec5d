"""Backbones by name, one record each holding every fact about it.

Each backbone maps (B, 1, D, H, W) to ``(bottleneck, features)`` and exposes ``bottleneck_channels``
and ``feature_channels``. Windows must be multiples of ``size_divisor`` and at least ``min_size``
along D, H and W: smaller ones leave a single voxel at the bottleneck, where instance normalisation
is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from universal.errors import UniversalError


@dataclass(frozen=True)
class BackboneRecord:
    """One backbone: ``title`` for people; ``width`` of the released model; window rules
    (``size_divisor``, ``min_size``); how its weights are recognised in a state dict in this
    library's naming (``marker``: a key prefix only it has; ``width_key``: the key whose first size is
    the width; ``legacy_prefixes``: released keys that lack ``backbone.``); its released file on the
    hub and the variable naming a local copy; whether ``compile="auto"`` compiles it on the CPU, and
    whether ``runtime="auto"`` runs it on OpenVINO on a CPU with AMX (the table and its figures:
    :mod:`universal.nets.runtime`); whether it is fully convolutional (a graph traced at one window size
    holds at any other)."""

    name: str
    title: str
    width: int
    size_divisor: int
    min_size: int
    marker: str
    width_key: str
    released_file: str
    weights_env: str
    legacy_prefixes: tuple[str, ...] = ()
    compiles_on_cpu: bool = False
    openvino_on_cpu: bool = False
    fully_convolutional: bool = False


BACKBONES = {
    record.name: record
    for record in (
        BackboneRecord(
            name="unet", title="U-Net", width=32, size_divisor=8, min_size=16,
            marker="backbone.down_tr64.", width_key="backbone.down_tr64.ops.0.conv1.weight",
            released_file="clip_driven_universal_unet.pth", weights_env="UNIVERSAL_UNET_WEIGHTS",
            compiles_on_cpu=True,  # Swin UNETR takes minutes to compile for less (universal.nets.runtime)
            openvino_on_cpu=True,  # its OpenVINO trunk beats the compiled one in bfloat16 (universal.nets.runtime)
            fully_convolutional=True,
        ),
        BackboneRecord(
            name="swinunetr", title="Swin UNETR", width=48, size_divisor=32, min_size=64,
            marker="backbone.swinViT.", width_key="backbone.swinViT.patch_embed.proj.weight",
            released_file="clip_driven_universal_swin_unetr.pth", weights_env="UNIVERSAL_SWINUNETR_WEIGHTS",
            # the released Swin file names its backbone's keys without "backbone." (spec: swinViT.*,
            # encoder1.*, decoder5.*)
            legacy_prefixes=("swinViT.", "encoder", "decoder"),
        ),
    )
}  # fmt: skip

# The backbone used wherever none is named (command line, Python, the app, training from scratch): the
# reference's training default (train.py, --backbone unet), a third of Swin UNETR's parameters
# (19.08M against 62.19M, ljwztc/CLIP-Driven-Universal-Model README.md), and the one whose CPU path is
# compiled or converted (universal.nets.runtime).
DEFAULT_BACKBONE = "unet"


def backbone_record(name: str) -> BackboneRecord:
    """The record of backbone ``name``; a :class:`UniversalError` naming the choices for another name."""
    if name not in BACKBONES:
        raise UniversalError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, width: int | None = None, *, use_checkpoint: bool = False) -> nn.Module:
    """A backbone by name and width (default: the released width).

    ``use_checkpoint`` trades compute for memory in training (Swin UNETR only).
    """
    width = width or backbone_record(name).width
    if name == "unet":
        from universal.nets.unet import UNet3D

        return UNet3D(width=width)
    from universal.nets.swinunetr import SwinUNETRBackbone

    return SwinUNETRBackbone(feature_size=width, use_checkpoint=use_checkpoint)
