"""The one transform chain from a CT to the model's input space, shared by inference and training,
and the way back to the scan's grid.

Model space (:class:`~universal.nets.model.InputSpec`, released: RAS, 1.5 mm, HU -175..250): reorient,
resample (bilinear for the image, nearest for labels), map the HU window to 0..1 with clipping, and
crop to the box of voxels above the window's lower end. Every step keeps the affine, so a result in
model space goes back to the scan's grid through the two affines alone (:func:`to_scan_grid`).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def to_scan_box(
    mask: np.ndarray, volume_affine: np.ndarray, scan_affine: np.ndarray, scan_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``to_scan_grid(mask, ...)`` within the smallest box of the scan's grid that can hold the mask's
    voxels (bool (X, Y, Z) and its corner's scan index (3,)): the voxels outside it are 0, so a measure of
    the crop is the measure of the whole at a fraction of the cost. The whole grid where the axes are
    not aligned."""
    gathers = _axis_gathers(mask.shape, volume_affine, scan_affine, scan_shape)
    if gathers is None:
        return to_scan_grid(mask, volume_affine, scan_affine, scan_shape), np.zeros(3, np.int64)
    follows, per_axis = gathers
    oriented = np.transpose(mask, follows)
    chosen = []
    for axis, (nearest, inside) in enumerate(per_axis):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(oriented.any(axis=others))
        indices = np.flatnonzero(inside & (nearest >= present[0]) & (nearest <= present[-1])) if len(present) \
            else present
        if not len(indices):
            return np.zeros((0, 0, 0), bool), np.zeros(3, np.int64)
        chosen.append(indices)
    crop = oriented[np.ix_(*(nearest[indices] for (nearest, _), indices in zip(per_axis, chosen, strict=True)))]
    return crop, np.array([indices[0] for indices in chosen], np.int64)


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
