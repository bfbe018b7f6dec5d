"""How far annotators agree: per class and pair of annotators, Dice, the mean surface distance and the
95th-percentile Hausdorff distance in mm (MONAI's metrics, on the voxels' spacing); and a consensus
of several label maps (SimpleITK's majority vote or multi-label STAPLE)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from universal.masks import bounding_box

CONSENSUS_METHODS = ("majority", "staple")


def mask_agreement(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> dict:
    """Dice of two bool masks (X, Y, Z), their mean surface distance (symmetric: the mean over both
    surfaces of each point's distance to the other surface) and 95th-percentile Hausdorff distance
    (the larger of the two directions), in mm; distances are ``None`` when a mask is empty."""
    both, total = int(np.count_nonzero(a & b)), int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    found = {"dice": round(2 * both / total, 6) if total else 1.0, "msd_mm": None, "hd95_mm": None}
    if not a.any() or not b.any():
        return found
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    box = bounding_box(a | b, margin=2)  # distances within the masks' box (with a margin): the same, much cheaper
    pair = [np.ascontiguousarray(mask[box])[None, None] for mask in (a, b)]
    spacing = [float(s) for s in spacing]
    surface = compute_average_surface_distance(*pair, include_background=True, symmetric=True, spacing=spacing)
    hausdorff = compute_hausdorff_distance(*pair, include_background=True, percentile=95, spacing=spacing)
    found.update(msd_mm=round(float(surface.item()), 4), hd95_mm=round(float(hausdorff.item()), 4))
    return found


def pairwise_agreement(masks: Mapping[str, Mapping[str, np.ndarray]], spacing: Sequence[float]) -> dict:
    """``masks``: annotator → class name → bool mask. Returns class → a list of
    ``{"annotators": [a, b], "dice", "msd_mm", "hd95_mm"}``, one per pair that both annotated the class."""
    classes = sorted({name for by_class in masks.values() for name in by_class})
    found: dict[str, list[dict]] = {}
    for name in classes:
        raters = sorted(annotator for annotator, by_class in masks.items() if name in by_class)
        for first, second in itertools.combinations(raters, 2):
            found.setdefault(name, []).append(
                {"annotators": [first, second], **mask_agreement(masks[first][name], masks[second][name], spacing)})
    return found


def consensus(label_maps: Sequence[np.ndarray], method: str = "majority") -> np.ndarray:
    """One label map (uint8) from several on one grid, values in one numbering: ``majority``, a voxel's
    value is the one more than half of the maps give it, else 0 (SimpleITK's LabelVoting with ties
    undecided); ``staple``, SimpleITK's MultiLabelSTAPLE (undecided voxels 0)."""
    import SimpleITK as sitk

    if method not in CONSENSUS_METHODS:
        raise ValueError(f"a consensus is made by {' or '.join(CONSENSUS_METHODS)}, not {method!r}")
    if len(label_maps) < 2:
        raise ValueError("a consensus needs the labels of two annotators or more")
    images = [sitk.GetImageFromArray(np.ascontiguousarray(m.astype(np.uint8))) for m in label_maps]
    if method == "staple":
        voted = sitk.MultiLabelSTAPLE(images, 0)
    else:
        voted = sitk.LabelVoting(images, 0)
        counts = np.zeros(label_maps[0].shape, np.int64)  # LabelVoting takes the most frequent: keep > half
        result = sitk.GetArrayFromImage(voted)
        for label_map in label_maps:
            counts += label_map == result
        return np.where(counts * 2 > len(label_maps), result, 0).astype(np.uint8)
    return sitk.GetArrayFromImage(voted).astype(np.uint8)
