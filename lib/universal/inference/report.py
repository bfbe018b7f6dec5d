"""Numbers a radiologist reads from a segmentation: volumes, component counts, lesion findings.

All figures are measured on the scan's own grid: masks are bool (X, Y, Z), or the model-space voxels
that a scan's mask repeats with their repeats per axis (the same figures at the model space's cost), and
the affine maps voxel index to world mm. Distances are between voxel centres.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import cc3d
import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from universal.masks import bounding_box

Repeats = Sequence[np.ndarray]  # per axis (X, Y, Z), how many scan voxels each index of a mask stands for


def class_statistics(mask: np.ndarray, affine: np.ndarray, repeats: Repeats | None = None) -> dict:
    """``{"voxels", "volume_ml", "components"}`` of one class (26-connected components). ``repeats``: per
    axis, how many voxels of the scan each index of ``mask`` stands for (a mask held as
    :class:`~universal.inference.preprocess.ScanBlocks`); None: one each."""
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    voxels = scan_voxels(mask, repeats)
    components = component_count(mask) if voxels else 0  # repeating a slice neither joins nor splits pieces
    return {"voxels": voxels, "volume_ml": round(voxels * voxel_ml, 3), "components": components}


def lesion_findings(mask: np.ndarray, affine: np.ndarray, offset: np.ndarray | None = None,
                    repeats: Repeats | None = None) -> dict:
    """``{"detected", "count", "largest_volume_ml", "largest_diameter_mm"}`` of one lesion class;
    ``offset`` places ``mask``'s voxel (0, 0, 0) in the grid of ``affine`` (a crop of the scan), and
    ``repeats`` are as for :func:`class_statistics`.

    The diameter is the longest distance across the largest lesion (0 when nothing is detected).
    """
    box = bounding_box(mask)
    if box is None:
        return {"detected": False, "count": 0, "largest_volume_ml": 0.0, "largest_diameter_mm": 0.0}
    repeats = each_once(mask) if repeats is None else repeats
    labels, count = cc3d.connected_components(mask[box], connectivity=26, return_N=True)
    in_box = [r[s] for r, s in zip(repeats, box, strict=True)]
    sizes = np.bincount(labels.ravel(), weights=block_voxels(in_box).ravel())[1:]  # scan voxels per piece
    largest = int(np.argmax(sizes)) + 1
    starts = [int(first_scan_index(r)[s.start]) for r, s in zip(repeats, box, strict=True)]  # the box's corner
    offset = np.array(starts) + (0 if offset is None else offset)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    return {
        "detected": True,
        "count": int(count),
        "largest_volume_ml": round(float(sizes[largest - 1]) * voxel_ml, 3),
        "largest_diameter_mm": round(longest_diameter(labels == largest, affine, offset, in_box), 2),
    }


def longest_diameter(mask: np.ndarray, affine: np.ndarray, offset: np.ndarray | None = None,
                     repeats: Repeats | None = None) -> float:
    """The longest distance (mm) between two voxel centres of ``mask``; ``offset`` and ``repeats`` are as
    for :func:`lesion_findings`."""
    index = block_corners(line_ends(mask), each_once(mask) if repeats is None else repeats).astype(np.float64)
    if offset is not None:
        index += offset
    points = index @ affine[:3, :3].T + affine[:3, 3]
    if len(points) > 4:
        points = points[hull_vertices(points)]
    return float(pdist(points).max()) if len(points) > 1 else 0.0


def scan_voxels(mask: np.ndarray, repeats: Repeats | None = None) -> int:
    """How many voxels of the scan ``mask`` covers, each index counted as often as it ``repeats``."""
    if repeats is None or not mask.any():
        return int(np.count_nonzero(mask))
    across, along, deep = repeats
    return int(((mask.reshape(-1, mask.shape[2]) @ deep).reshape(mask.shape[:2]) @ along) @ across)


def each_once(mask: np.ndarray) -> Repeats:
    return tuple(np.ones(n, np.int64) for n in mask.shape)


def block_voxels(repeats: Repeats) -> np.ndarray:
    """int64 (X, Y, Z): how many scan voxels each index stands for."""
    across, along, deep = repeats
    return across[:, None, None] * along[None, :, None] * deep[None, None, :]


def block_corners(index: np.ndarray, repeats: Repeats) -> np.ndarray:
    """The scan indices (M, 3) of the corners of the blocks that the indices ``index`` (N, 3) stand for:
    each block lies within the hull of its corners, so the hull and the longest distance are theirs."""
    ends = [(first_scan_index(r), first_scan_index(r) + r - 1) for r in repeats]  # first and last scan voxel
    corners = [np.stack([ends[axis][side][index[:, axis]] for axis, side in enumerate(sides)], axis=1)
               for sides in itertools.product((0, 1), repeat=3)]
    return distinct_rows(np.concatenate(corners))


def first_scan_index(repeats: np.ndarray) -> np.ndarray:
    """The scan index of the first voxel each index stands for, along one axis (from the first index's)."""
    return np.cumsum(repeats) - repeats


def distinct_rows(index: np.ndarray) -> np.ndarray:
    """The distinct rows of ``index`` (N, 3) (voxel indices, not negative), in ascending order: as
    ``np.unique(index, axis=0)``, one sort of one number per row."""
    if not len(index):
        return index
    shape = index.max(axis=0) + 1
    return np.stack(np.unravel_index(np.unique(np.ravel_multi_index(index.T, shape)), shape), axis=1)


def line_ends(mask: np.ndarray) -> np.ndarray:
    """Indices (N, 3) of the first and last voxel of ``mask`` on each line along the first axis: the
    only voxels that can be corners of its convex hull (any other lies between two of them), so the
    longest distance is found among them at a fraction of the cost for a large mask (a line of one voxel
    gives it twice: :func:`block_corners` keeps each once)."""
    present = mask.any(axis=0)
    first = mask.argmax(axis=0)
    last = mask.shape[0] - 1 - mask[::-1].argmax(axis=0)
    y, z = np.nonzero(present)
    return np.concatenate([np.stack([first[y, z], y, z], axis=1), np.stack([last[y, z], y, z], axis=1)])


def hull_vertices(points: np.ndarray) -> np.ndarray:
    """Indices of ``points`` (N, 3) on their convex hull; flat sets are joggled into 3D."""
    try:
        return ConvexHull(points).vertices
    except QhullError:
        return ConvexHull(points, qhull_options="QJ").vertices


def component_count(mask: np.ndarray) -> int:
    """The number of 26-connected components of ``mask``."""
    box = bounding_box(mask)
    if box is None:
        return 0
    return int(cc3d.connected_components(mask[box], connectivity=26, return_N=True)[1])
