"""Where a bool mask (X, Y, Z) lies, from its voxel counts along each axis (no list of voxel indices):
its bounding box and the centre of its voxels, in voxel indices; and its growth by one voxel."""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding ``mask``'s voxels, grown by ``margin`` voxels on every side within the
    array; None when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        if not len(present):
            return None
        box.append(slice(max(int(present[0]) - margin, 0), int(present[-1]) + margin + 1))
    return tuple(box)


def voxel_centre(mask: np.ndarray) -> np.ndarray:
    """The mean voxel index (ndim,) float64 of ``mask``'s voxels; NaN when it is empty."""
    axes = range(mask.ndim)
    sums = [np.arange(mask.shape[a]) @ np.count_nonzero(mask, axis=tuple(o for o in axes if o != a)) for a in axes]
    count = np.count_nonzero(mask)
    return np.array(sums, dtype=np.float64) / count if count else np.full(mask.ndim, np.nan)


def grown_by_one(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the voxels that share a face with it (its dilation by the 6-connected cross, nothing
    beyond the array's edges), by shifting it one voxel each way along each axis."""
    grown = mask.copy()
    for axis in range(mask.ndim):
        lower, upper = [slice(None)] * mask.ndim, [slice(None)] * mask.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        grown[tuple(lower)] |= mask[tuple(upper)]
        grown[tuple(upper)] |= mask[tuple(lower)]
    return grown
