"""The tiny model the training, serving and app tests share: a width-4 U-Net at 12 mm with 16³
windows, random weights and embeddings, seeded."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import universal
from universal.training.loop import catalog_for

PHANTOM = {"shape": (40, 40, 30), "spacing": (10.24, 10.24, 16.0)}  # 410 × 410 × 480 mm at coarse voxels
CLASSES = ("Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney")


def tiny_model(classes: Sequence[str] = CLASSES) -> universal.UniversalModel:
    """The tiny model for ``classes`` (released classes, renumbered 1..N)."""
    torch.manual_seed(0)
    catalog = catalog_for(list(classes))
    spec = universal.InputSpec(spacing=(12.0,) * 3, window_size=(16, 16, 16))
    return universal.UniversalModel("unet", width=4, catalog=catalog, class_embeddings=torch.randn(len(catalog), 512),
                                    input_spec=spec)
