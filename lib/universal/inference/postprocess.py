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

import functools
from collections.abc import Iterable, Mapping

import cc3d
import numpy as np
from scipy import ndimage

from universal.catalog import Catalog
from universal.masks import bounding_box, voxel_centre

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
ORGAN_MARGIN = 5  # the side (voxels) of the cube that closes and dilates the organ a tumour must lie in


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
            out[ids[name]] = largest_component(masks[ids[name]])
    if all(name in ids for name in LUNGS):
        right, left = split_lungs(masks[ids[LUNGS[0]]], masks[ids[LUNGS[1]]], affine)
        out[ids[LUNGS[0]]], out[ids[LUNGS[1]]] = right, left
    for lesion, organs in LESION_ORGANS.items():
        if lesion in ids and all(organ in ids for organ in organs):
            organ = np.zeros_like(masks[ids[lesion]])
            for name in organs:  # each a single organ: ``out`` holds its top component
                organ |= out[ids[name]]
            out[ids[lesion]] = masks[ids[lesion]] & grow(organ)
    if VEIN in ids and VEIN_REFERENCE in ids:
        out[ids[VEIN]] = above_lowest(masks[ids[VEIN]], out[ids[VEIN_REFERENCE]], affine)
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (bool, same shape); of equal ones, the one the scan
    meets first."""
    labels, sizes = components(mask)
    return labels == 1 + int(np.argmax(sizes)) if len(sizes) > 1 else labels > 0


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mask``'s 26-connected components numbered in the order the scan meets them (X, Y, Z) and their
    sizes (voxels) by number less one."""
    labels = cc3d.connected_components(mask, connectivity=26, binary_image=True)
    return labels, np.bincount(labels.ravel())[1:]


def split_lungs(right: np.ndarray, left: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right lung, left lung) from the union of both masks, by the patient's side (world x, RAS+: the
    patient's left has the lower x).

    Two comparable components (the smaller at least :data:`SEPARATE_LUNGS` of the larger) are the
    two lungs. Otherwise the lungs touch (or one is in view): the largest component is cut at its
    narrowest sagittal cross-section when it has a neck, else each lung keeps its own voxels of it.
    """
    labels, sizes = components(right | left)
    if not len(sizes):
        return np.zeros_like(right), np.zeros_like(left)
    order = 1 + np.argsort(-sizes, kind="stable")  # component numbers, the largest first
    first, second = int(order[0]), (int(order[1]) if len(order) > 1 else None)
    if second is not None and sizes[second - 1] >= SEPARATE_LUNGS * sizes[first - 1]:
        one, other = labels == first, labels == second
        if mean_world(one, affine)[0] < mean_world(other, affine)[0]:
            return other, one
        return one, other
    largest = labels == first
    index = np.nonzero(largest)
    x = world(index, affine, 0)
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
    box = bounding_box(organ, margin=ORGAN_MARGIN + 1)  # the closing's and the dilation's reach, plus one
    if box is None:
        return organ
    # a cube's dilation and erosion are maximum and minimum filters, one axis at a time
    dilate, erode = (functools.partial(f, size=ORGAN_MARGIN, mode="constant", cval=0)
                     for f in (ndimage.maximum_filter, ndimage.minimum_filter))
    grown = np.zeros_like(organ)
    grown[box] = dilate(erode(dilate(organ[box].view(np.uint8)))).view(bool)
    return grown


def above_lowest(mask: np.ndarray, reference: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``mask`` without voxels below (lower world z than) the lowest voxel of ``reference``; unchanged
    when ``reference`` is empty."""
    if not reference.any() or not mask.any():
        return mask
    lowest = world(np.nonzero(reference), affine, 2).min()
    index = np.nonzero(mask)
    keep = world(index, affine, 2) >= lowest - 1e-6
    out = np.zeros_like(mask)
    out[tuple(i[keep] for i in index)] = True
    return out


def world(index: tuple[np.ndarray, ...], affine: np.ndarray, axis: int) -> np.ndarray:
    """World coordinate ``axis`` (mm) of the voxels at ``index`` (three index arrays)."""
    return affine[axis, 0] * index[0] + affine[axis, 1] * index[1] + affine[axis, 2] * index[2] + affine[axis, 3]


def mean_world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the centre of ``mask``'s voxels."""
    return affine[:3, :3] @ voxel_centre(mask) + affine[:3, 3]
