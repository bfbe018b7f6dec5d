"""Anatomical clean-up of thresholded masks, after the released model's rules.

- Single organs keep their largest 26-connected component.
- The lungs: the two largest components of the union of both lung masks; the one on the patient's
  left (lower world x) is the left lung. Lungs that touch are cut at the neck between them.
- Kidney and liver tumours are kept inside their organ: the organs' raw masks (top component per
  organ), closed and dilated with a 5×5×5 cube.
- The portal and splenic vein keeps only voxels at or above the lowest pancreas voxel.
- Every other class (hepatic vessel, other lesions, classes added later) stays as thresholded.

Rules go by class name, so a catalogue with added classes keeps them; a rule whose classes are
absent is skipped. Masks are bool (X, Y, Z) in one grid whose affine maps voxel index to world mm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cc3d
import numpy as np
from scipy import ndimage

from universal.catalog import Catalog

SINGLE_ORGANS = (
    "Spleen", "Right Kidney", "Left Kidney", "Gallbladder", "Esophagus", "Liver", "Stomach", "Aorta",
    "Inferior Vena Cava", "Pancreas", "Right Adrenal Gland", "Left Adrenal Gland", "Duodenum", "Colon",
    "Intestine", "Rectum", "Bladder", "Prostate", "Left Femoral Head", "Right Femoral Head", "Celiac Trunk",
)
LUNGS = ("Right Lung", "Left Lung")
LESION_ORGANS = {"Kidney Tumor": ("Right Kidney", "Left Kidney"), "Liver Tumor": ("Liver",)}
VEIN, VEIN_REFERENCE = "Portal Vein and Splenic Vein", "Pancreas"
SEPARATE_LUNGS = 0.2  # a second component this fraction of the first is the other lung, not a fragment
LUNG_NECK = 0.5  # touching lungs are cut where the cross-section is at most half the mean
ORGAN_MARGIN = np.ones((5, 5, 5), dtype=bool)  # closing and dilation of the organ a tumour must lie in


def required_classes(class_ids: Iterable[int], catalog: Catalog) -> list[int]:
    """``class_ids`` and the classes their rules read (both lungs, a tumour's organs, the pancreas
    for the vein), ascending."""
    needed = set(class_ids)
    names = {catalog[i].name for i in needed}
    extra: list[str] = []
    if names & set(LUNGS):
        extra += LUNGS
    for lesion, organs in LESION_ORGANS.items():
        if lesion in names:
            extra += organs
    if VEIN in names:
        extra.append(VEIN_REFERENCE)
    needed |= {catalog[name].id for name in extra if name in catalog}
    return sorted(needed)


def postprocess(masks: Mapping[int, np.ndarray], catalog: Catalog, affine: np.ndarray) -> dict[int, np.ndarray]:
    """Cleaned masks for the same class ids; ``masks`` (thresholded, bool (X, Y, Z)) is not changed."""
    ids = {catalog[i].name: i for i in masks}
    out = {i: mask for i, mask in masks.items()}
    for name in SINGLE_ORGANS:
        if name in ids:
            out[ids[name]] = largest_components(masks[ids[name]], 1)
    if all(name in ids for name in LUNGS):
        right, left = split_lungs(masks[ids[LUNGS[0]]], masks[ids[LUNGS[1]]], affine)
        out[ids[LUNGS[0]]], out[ids[LUNGS[1]]] = right, left
    for lesion, organs in LESION_ORGANS.items():
        if lesion in ids and all(organ in ids for organ in organs):
            organ = np.zeros_like(masks[ids[lesion]])
            for name in organs:
                organ |= largest_components(masks[ids[name]], 1)
            out[ids[lesion]] = masks[ids[lesion]] & grow(organ)
    if VEIN in ids and VEIN_REFERENCE in ids:
        out[ids[VEIN]] = above_lowest(masks[ids[VEIN]], out[ids[VEIN_REFERENCE]], affine)
    return out


def largest_components(mask: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest 26-connected components of ``mask`` (bool, same shape)."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    return cc3d.largest_k(mask, k=count, connectivity=26) > 0


def split_lungs(right: np.ndarray, left: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right lung, left lung) from the union of both masks, by the patient's side (world x, RAS+: the
    patient's left has the lower x).

    Two comparable components (the smaller at least :data:`SEPARATE_LUNGS` of the larger) are the
    two lungs. Otherwise the lungs touch (or one is in view): the largest component is cut at its
    narrowest sagittal cross-section when it has a neck, else each lung keeps its own voxels of it.
    """
    labels = cc3d.largest_k(right | left, k=2, connectivity=26)
    sizes = np.bincount(labels.ravel(), minlength=3)[1:3]
    if sizes.min() >= SEPARATE_LUNGS * sizes.max():
        first, second = labels == 1, labels == 2
        if mean_world(first, affine)[0] < mean_world(second, affine)[0]:
            return second, first
        return first, second
    largest = labels == (int(np.argmax(sizes)) + 1)
    if not largest.any():
        return largest, largest.copy()
    index = np.nonzero(largest)
    x = affine[0, :3] @ np.array(index, dtype=np.float64) + affine[0, 3]
    cut = narrowest_cut(x, float(np.linalg.norm(affine[:3, :3], axis=0).min()))
    if cut is None:
        return right & largest, left & largest
    out_right, out_left = np.zeros_like(largest), np.zeros_like(largest)
    on_left = x < cut
    out_left[tuple(i[on_left] for i in index)] = True
    out_right[tuple(i[~on_left] for i in index)] = True
    return out_right, out_left


def narrowest_cut(x: np.ndarray, step: float) -> float | None:
    """The world x (mm) of the thinnest slab (``step`` mm) in the middle half of the points' x range,
    if it holds at most :data:`LUNG_NECK` of the mean slab; None when there is no such neck."""
    edges = np.arange(x.min(), x.max() + step, step)
    if len(edges) < 5:
        return None
    counts, _ = np.histogram(x, bins=edges)
    quarter = len(counts) // 4
    middle = counts[quarter: len(counts) - quarter]
    thinnest = quarter + int(np.argmin(middle))
    if counts[thinnest] > LUNG_NECK * counts.mean():
        return None
    return float(edges[thinnest] + step / 2)


def grow(organ: np.ndarray) -> np.ndarray:
    """``organ`` closed, then dilated, by a 5×5×5 cube (computed on its bounding box)."""
    if not organ.any():
        return organ
    margin = 6  # the closing's and the dilation's reach, plus one
    box = tuple(
        slice(max(int(np.min(i)) - margin, 0), int(np.max(i)) + margin + 1) for i in np.nonzero(organ)
    )
    grown = np.zeros_like(organ)
    region = ndimage.binary_closing(organ[box], ORGAN_MARGIN)
    grown[box] = ndimage.binary_dilation(region, ORGAN_MARGIN)
    return grown


def above_lowest(mask: np.ndarray, reference: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``mask`` without voxels below (lower world z than) the lowest voxel of ``reference``; unchanged
    when ``reference`` is empty."""
    if not reference.any() or not mask.any():
        return mask
    lowest = world_z(np.nonzero(reference), affine).min()
    index = np.nonzero(mask)
    keep = world_z(index, affine) >= lowest - 1e-6
    out = np.zeros_like(mask)
    out[tuple(i[keep] for i in index)] = True
    return out


def world_z(index: tuple[np.ndarray, ...], affine: np.ndarray) -> np.ndarray:
    return affine[2, 0] * index[0] + affine[2, 1] * index[1] + affine[2, 2] * index[2] + affine[2, 3]


def mean_world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the centre of ``mask``'s voxels."""
    centre = np.array([i.mean() for i in np.nonzero(mask)])
    return affine[:3, :3] @ centre + affine[:3, 3]
