"""The one transform chain from a CT to the model's input space, shared by inference and training,
and the way back to the scan's grid.

Model space (:class:`~universal.nets.model.InputSpec`, released: RAS, 1.5 mm, HU -175..250): reorient,
resample (bilinear for the image, nearest for labels), map the HU window to 0..1 with clipping, and
crop to the box of voxels above the window's lower end. Every step keeps the affine, so a result in
model space goes back to the scan's grid through the two affines alone (:func:`to_scan_grid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from universal.nets.model import InputSpec


def preprocessing(spec: InputSpec, image_key: str = "image", label_keys: Sequence[str] = ()):
    """A MONAI ``Compose`` over dictionaries of channel-first MetaTensors (C, X, Y, Z) with affines.

    ``image_key`` holds HU; ``label_keys`` hold label maps that follow the image voxel for voxel.
    """
    from monai.transforms import Compose, CropForegroundd, Orientationd, ScaleIntensityRanged, Spacingd

    keys = [image_key, *label_keys]
    low, high = spec.intensity_range
    return Compose([
        Orientationd(keys, axcodes=spec.orientation),
        Spacingd(keys, pixdim=spec.spacing, mode=["bilinear"] + ["nearest"] * len(label_keys)),
        ScaleIntensityRanged(image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys, source_key=image_key, allow_smaller=True),
    ])


def to_model_space(image: np.ndarray, affine: np.ndarray, spec: InputSpec) -> tuple[torch.Tensor, np.ndarray]:
    """HU (X, Y, Z) with its affine → model input (1, X', Y', Z') in 0..1 and its affine (4, 4).

    Raises ValueError when no voxel lies above the window's lower end (nothing to segment).
    """
    from monai.data import MetaTensor

    volume = MetaTensor(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                        affine=torch.as_tensor(affine, dtype=torch.float64))
    out = preprocessing(spec)({"image": volume})["image"]
    if min(out.shape[1:]) == 0:
        raise ValueError(f"no voxel above {spec.intensity_range[0]:g} HU: the scan holds no tissue to segment")
    return out.as_tensor(), np.asarray(out.affine, dtype=np.float64)


def to_scan_grid(
    volume: np.ndarray, volume_affine: np.ndarray, scan_affine: np.ndarray, scan_shape: Sequence[int]
) -> np.ndarray:
    """Nearest-neighbour resampling of ``volume`` (X', Y', Z') onto the scan's grid (``scan_shape``).

    Each scan voxel takes the value of the model-space voxel nearest its centre; voxels outside the
    model-space box (cropped away as background) get 0. Both affines map voxel index to world mm.
    """
    gathers = _axis_gathers(volume.shape, volume_affine, scan_affine, scan_shape)
    if gathers is not None:  # reorienting and resampling along the axes: one gather per axis
        follows, per_axis = gathers
        out = np.zeros(tuple(scan_shape), dtype=volume.dtype)
        out[np.ix_(*(inside for _, inside in per_axis))] = np.transpose(volume, follows)[
            np.ix_(*(nearest[inside] for nearest, inside in per_axis))
        ]
        return out
    from scipy import ndimage

    to_volume = np.linalg.inv(volume_affine) @ scan_affine
    return ndimage.affine_transform(volume, to_volume[:3, :3], to_volume[:3, 3], output_shape=tuple(scan_shape),
                                    order=0, mode="constant", cval=0)


class ScanBlocks(NamedTuple):
    """A bool mask on the scan's grid, held as the model-space voxels it repeats: ``core`` (x, y, z), the
    distinct voxels in the scan's axis order; ``corner``, the scan index (3,) of the first; ``repeats``,
    per axis, how many scan voxels each core index fills (int64 arrays). :meth:`expanded` is the box of
    the scan's grid that holds the mask (every voxel outside it is 0)."""

    core: np.ndarray
    corner: np.ndarray
    repeats: tuple[np.ndarray, ...]

    def expanded(self) -> np.ndarray:
        out = self.core
        for axis, repeats in enumerate(self.repeats):
            out = np.repeat(out, repeats, axis=axis)
        return out


def to_scan_blocks(
    mask: np.ndarray, volume_affine: np.ndarray, scan_affine: np.ndarray, scan_shape: Sequence[int]
) -> ScanBlocks:
    """``to_scan_grid(mask, ...)`` as :class:`ScanBlocks`: within the smallest box of the scan's grid that
    can hold the mask's voxels, each model-space voxel once with how often it repeats, so that counts and
    connected components (which repeating a slice does not change) cost the model space's size, not the
    scan's. Where the axes are not aligned, the whole grid with every voxel once."""
    gathers = _axis_gathers(mask.shape, volume_affine, scan_affine, scan_shape)
    if gathers is None:
        whole = to_scan_grid(mask, volume_affine, scan_affine, scan_shape)
        return ScanBlocks(whole, np.zeros(3, np.int64), tuple(np.ones(n, np.int64) for n in whole.shape))
    follows, per_axis = gathers
    oriented = np.transpose(mask, follows)
    sources, corner, repeats = [], [], []
    for axis, (nearest, inside) in enumerate(per_axis):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(oriented.any(axis=others))
        chosen = np.flatnonzero(inside & (nearest >= present[0]) & (nearest <= present[-1])) if len(present) \
            else present
        if not len(chosen):
            return ScanBlocks(np.zeros((0, 0, 0), bool), np.zeros(3, np.int64), (np.zeros(0, np.int64),) * 3)
        source = nearest[chosen]  # monotone: runs of one model-space index
        first = np.flatnonzero(np.diff(source, prepend=source[0] - 1))
        sources.append(source[first])
        corner.append(chosen[0])
        repeats.append(np.diff(first, append=len(source)))
    core = oriented[np.ix_(*sources)]
    return ScanBlocks(core, np.array(corner, np.int64), tuple(repeats))


def _axis_gathers(volume_shape: Sequence[int], volume_affine: np.ndarray, scan_affine: np.ndarray,
                  scan_shape: Sequence[int]):
    """Where the two grids' axes are aligned: (the model-space axis each scan axis follows, per scan axis
    (the nearest model-space index of each scan index, whether it falls inside the volume)); else None."""
    to_volume = np.linalg.inv(volume_affine) @ scan_affine  # scan index → model-space index
    linear = to_volume[:3, :3]
    source_axis = np.abs(linear).argmax(axis=1)  # the scan axis each model-space axis follows
    axis_aligned = np.allclose(np.abs(linear).sum(axis=1), np.abs(linear).max(axis=1), atol=1e-6) and (
        len(set(source_axis.tolist())) == 3
    )
    if not axis_aligned:
        return None
    follows = np.argsort(source_axis)  # the model-space axis that follows each scan axis
    per_axis = []
    for scan_axis, axis in enumerate(follows):
        position = linear[axis, scan_axis] * np.arange(scan_shape[scan_axis]) + to_volume[axis, 3]
        nearest = np.floor(position + 0.5).astype(np.int64)
        per_axis.append((nearest, (nearest >= 0) & (nearest < volume_shape[axis])))
    return follows, per_axis
