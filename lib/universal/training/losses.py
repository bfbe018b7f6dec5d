"""The partial-label loss: BCE + soft Dice over the (sample, annotated class) pairs only."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def partial_label_loss(
    logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Mean over annotated pairs (b, k) of ``BCE(logits[b, k], target[b, k]) + 1 - Dice``.

    ``logits``, ``target``: (B, K, D, H, W), target in 0..1 (hard labels or a teacher's probabilities);
    ``annotated``: (B, K) bool. BCE is the mean over voxels; Dice is the soft Dice of the sigmoid over
    the whole crop, ``2·Σpt / (Σp + Σt + smooth)`` (smoothing in the denominator only, so a crop
    without the class contributes a constant). A pair that is not annotated never contributes, to the
    value or to the gradients. With no annotated pair the loss is a zero that keeps the graph.
    """
    if logits.shape != target.shape or annotated.shape != logits.shape[:2]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must match, and annotated "
            f"{tuple(annotated.shape)} must be their first two sizes"
        )
    batch, channel = annotated.nonzero(as_tuple=True)
    if batch.numel() == 0:
        return logits.sum() * 0.0
    x = logits[batch, channel].flatten(1).float()
    t = target[batch, channel].flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(dim=1)
    p = torch.sigmoid(x)
    dice = 2 * (p * t).sum(dim=1) / (p.sum(dim=1) + t.sum(dim=1) + smooth)
    return (bce + 1 - dice).mean()
