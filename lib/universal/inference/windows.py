"""Sliding windows over a model-space volume: where windows go (as MONAI's sliding window places
them), their Gaussian blending weights, blending slab by slab (:class:`BlendBand`), and the region a
coarse pass localises classes in (:class:`Region`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

BACKGROUND_LOGIT = -1e4  # where no window was run: certainly background
SIGMA_SCALE = 0.125  # Gaussian window weights: SD as a fraction of the window side (MONAI's default)


class BlendBand:
    """Weighted sums of window logits over a band of slices along the last axis.

    ``add`` accumulates windows (logits times the Gaussian weights); ``release(z)`` returns the
    blended logits (K, X, Y, dz) of the slices below ``z`` and forgets them.
    """

    def __init__(self, classes: int, plane: Sequence[int], weight_map: torch.Tensor):
        self.weight_map = weight_map
        self.sums = weight_map.new_zeros((classes, *plane, 0))
        self.weights = weight_map.new_zeros((*plane, 0))
        self.first = 0  # the slice held at index 0

    def add(self, boxes: Sequence[tuple[slice, ...]], logits: torch.Tensor) -> None:
        """Accumulate windows: ``logits`` (B, K, *roi) at ``boxes`` (slices in the padded volume)."""
        self._reach(max(box[2].stop for box in boxes))
        for box, window in zip(boxes, logits, strict=True):
            depth = slice(box[2].start - self.first, box[2].stop - self.first)
            # in place, without a window-sized product (faster, bit for bit the same: bench/RESULTS.md)
            self.sums[:, box[0], box[1], depth].addcmul_(window, self.weight_map)
            self.weights[box[0], box[1], depth] += self.weight_map

    def _reach(self, stop: int) -> None:
        """Hold the slices up to ``stop``."""
        missing = stop - self.first - self.sums.shape[-1]
        if missing > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros((*self.sums.shape[:-1], missing))], dim=-1)
            self.weights = torch.cat([self.weights, self.weights.new_zeros((*self.weights.shape[:-1], missing))], -1)

    def release(self, stop: int) -> tuple[int, torch.Tensor]:
        """(first slice, blended logits (K, X, Y, stop - first)) of the slices below ``stop``; slices
        that no window reached are ``BACKGROUND_LOGIT``."""
        self._reach(stop)
        count = stop - self.first
        weights = self.weights[..., :count]
        blended = torch.where(weights > 0, self.sums[..., :count] / weights.clamp(min=1e-12), BACKGROUND_LOGIT)
        first = self.first
        self.sums, self.weights, self.first = self.sums[..., count:], self.weights[..., count:], stop
        return first, blended


class Region:
    """Where localised classes may lie, over the padded image: voxels marked by the coarse pass,
    grown by a margin on a grid of ``CELL``-voxel cells (a cell is in when any of its voxels is)."""

    CELL = 4

    def __init__(self, shape: Sequence[int], margin: int):
        self.marked = torch.zeros(tuple(shape), dtype=torch.bool)
        self.margin = -(-margin // self.CELL)
        self.cells = None

    def mark(self, box: Sequence[slice], mask: torch.Tensor) -> None:
        """Add the voxels of ``mask`` (bool, the box's shape) at ``box``."""
        self.marked[tuple(box)] |= mask.cpu()

    def grow(self) -> None:
        """Fix the region: the marked voxels' cells grown by the margin along every axis."""
        cells = torch.nn.functional.max_pool3d(self.marked[None, None].float(), self.CELL, ceil_mode=True)
        if self.margin:
            cells = torch.nn.functional.max_pool3d(cells, 2 * self.margin + 1, stride=1, padding=self.margin)
        self.cells = cells[0, 0].bool()
        self.marked = None

    def reaches(self, box: Sequence[slice]) -> bool:
        return bool(self.cells[tuple(slice(b.start // self.CELL, -(-b.stop // self.CELL)) for b in box)].any())

    def restrict(self, logits: torch.Tensor, first: int) -> torch.Tensor:
        """``logits`` (K, X, Y, dz) of slices from ``first`` on, set to background outside the region."""
        x, y = (torch.arange(n) // self.CELL for n in logits.shape[1:3])
        z = torch.arange(first, first + logits.shape[3]) // self.CELL
        inside = self.cells[x][:, y][:, :, z].to(logits.device)
        return torch.where(inside[None], logits, BACKGROUND_LOGIT)


def covering_starts(starts: Sequence[int], size: int) -> set[int]:
    """The fewest of the sorted window ``starts`` (windows of ``size``) that leave no gap between the
    first window and the last."""
    chosen = [starts[0]]
    while chosen[-1] != starts[-1]:
        reachable = [start for start in starts if chosen[-1] < start <= chosen[-1] + size]
        chosen.append(reachable[-1] if reachable else next(s for s in starts if s > chosen[-1]))
    return set(chosen)


def box_key(box: Sequence[slice]) -> tuple[tuple[int, int], ...]:
    """A window's box as a hashable key."""
    return tuple((b.start, b.stop) for b in box)


def logit(probability: float) -> float:
    """The logit at which a sigmoid output reaches ``probability``."""
    return math.log(probability / (1 - probability))


def pad_to_window(image: torch.Tensor, roi: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``image`` (C, X, Y, Z) padded with zeros to at least ``roi`` along each axis (half before, half
    after, as MONAI does), and the slices that recover the image from the padded one."""
    before = [max(r - n, 0) // 2 for r, n in zip(roi, image.shape[1:], strict=True)]
    after = [max(r - n, 0) - b for r, n, b in zip(roi, image.shape[1:], before, strict=True)]
    pad = [size for axis in (2, 1, 0) for size in (before[axis], after[axis])]
    padded = torch.nn.functional.pad(image, pad) if any(pad) else image
    inside = tuple(slice(b, b + n) for b, n in zip(before, image.shape[1:], strict=True))
    return padded, inside


def window_boxes(shape: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The windows (tuples of slices) that tile a volume of ``shape`` (at least ``roi``), as MONAI's
    sliding window places them: steps of ``int(roi·(1-overlap))``, the last window flush with the end."""
    from monai.data.utils import dense_patch_slices

    shape = [max(n, r) for n, r in zip(shape, roi, strict=True)]
    interval = [r if n == r else max(int(r * (1 - overlap)), 1) for n, r in zip(shape, roi, strict=True)]
    return [tuple(box) for box in dense_patch_slices(shape, roi, interval)]


def gaussian_weights(roi: Sequence[int], device: torch.device) -> torch.Tensor:
    """Blending weights of one window (``roi``), MONAI's Gaussian importance map."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=SIGMA_SCALE, device=device,
                                  dtype=torch.float32)


