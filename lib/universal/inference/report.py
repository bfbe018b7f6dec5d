"""Numbers a radiologist reads from a segmentation: volumes, component counts, lesion findings.

All figures are measured on the scan's own grid: masks are bool (X, Y, Z) and the affine maps voxel
index to world mm. Distances are between voxel centres.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from universal.masks import bounding_box


def class_statistics(mask: np.ndarray, affine: np.ndarray) -> dict:
    """``{"voxels", "volume_ml", "components"}`` of one class (26-connected components)."""
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    voxels = int(np.count_nonzero(mask))
    components = component_count(mask) if voxels else 0
    return {"voxels": voxels, "volume_ml": round(voxels * voxel_ml, 3), "components": components}


def lesion_findings(mask: np.ndarray, affine: np.ndarray, offset: np.ndarray | None = None) -> dict:
    """``{"detected", "count", "largest_volume_ml", "largest_diameter_mm"}`` of one lesion class;
    ``offset`` places ``mask``'s voxel (0, 0, 0) in the grid of ``affine`` (a crop of the scan).

    The diameter is the longest distance across the largest lesion (0 when nothing is detected).
    """
    box = bounding_box(mask)
    if box is None:
        return {"detected": False, "count": 0, "largest_volume_ml": 0.0, "largest_diameter_mm": 0.0}
    labels, count = cc3d.connected_components(mask[box], connectivity=26, return_N=True)
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    offset = np.array([s.start for s in box]) + (0 if offset is None else offset)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    return {
        "detected": True,
        "count": int(count),
        "largest_volume_ml": round(float(sizes[largest - 1]) * voxel_ml, 3),
        "largest_diameter_mm": round(longest_diameter(labels == largest, affine, offset), 2),
    }


def longest_diameter(mask: np.ndarray, affine: np.ndarray, offset: np.ndarray | None = None) -> float:
    """The longest distance (mm) between two voxel centres of ``mask``; ``offset`` places ``mask``'s
    voxel (0, 0, 0) in the grid of ``affine``."""
    index = line_ends(mask).astype(np.float64)
    if offset is not None:
        index += offset
    points = index @ affine[:3, :3].T + affine[:3, 3]
    if len(points) > 4:
        points = points[hull_vertices(points)]
    return float(pdist(points).max()) if len(points) > 1 else 0.0


def line_ends(mask: np.ndarray) -> np.ndarray:
    """Indices (N, 3) of the first and last voxel of ``mask`` on each line along the first axis: the
    only voxels that can be corners of its convex hull (any other lies between two of them), so the
    longest distance is found among them at a fraction of the cost for a large mask."""
    present = mask.any(axis=0)
    first = mask.argmax(axis=0)
    last = mask.shape[0] - 1 - mask[::-1].argmax(axis=0)
    y, z = np.nonzero(present)
    ends = np.concatenate([np.stack([first[y, z], y, z], axis=1), np.stack([last[y, z], y, z], axis=1)])
    return np.unique(ends, axis=0)


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
