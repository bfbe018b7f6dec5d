"""Per-class targets from partial labels: a label map in a dataset's values becomes one binary
channel per catalogue class and an "annotated" flag per class (classes a case does not annotate never
enter the loss); right/left pairs drawn as one value are split by the patient's side."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from universal.catalog import Catalog, normalize_name
from universal.errors import UnknownClassError
from universal.training.datasets import DatasetTemplate


def check_template_classes(template: DatasetTemplate, catalog: Catalog) -> None:
    """Raise :class:`UnknownClassError` naming the template's classes that ``catalog`` lacks."""
    missing = [name for name in template.classes if name not in catalog]
    if missing:
        raise UnknownClassError(
            f"dataset '{template.name}' annotates {', '.join(missing)}, which the model does not have; "
            "add them as new classes (universal train adds them when asked with --add-class or by default "
            "for datasets that name them)"
        )


class PartialLabelTargetd:
    """Dictionary transform: a label map in model space → per-class targets and annotation flags.

    Reads ``label`` (1, X, Y, Z) in the dataset's values and ``dataset`` (template name), in RAS
    orientation, and for templates with right/left pairs ``left`` (1, X, Y, Z) bool from
    :func:`left_side_mask` (computed here from ``image`` when absent). Writes ``target``
    (K, X, Y, Z) uint8, one channel per catalogue class, and ``annotated`` (K,) bool: the classes the
    case's dataset annotates.
    """

    def __init__(self, catalog: Catalog, templates: Mapping[str, DatasetTemplate]):
        self.catalog = catalog
        self.templates = dict(templates)
        for template in self.templates.values():
            check_template_classes(template, catalog)

    def __call__(self, data: Mapping) -> dict:
        template = self.templates[data["dataset"]]
        label = np.asarray(data["label"])[0]
        left = data.get("left")
        if left is None and template.has_pairs:
            left = left_side_mask(label, np.asarray(data["image"])[0], template, self.catalog)
        left = None if left is None else np.asarray(left).reshape(label.shape).astype(bool)
        target = np.zeros((len(self.catalog), *label.shape), np.uint8)
        annotated = np.zeros(len(self.catalog), bool)
        for value, names in template.labels.items():
            region = organ_region(label, value, template, self.catalog)
            channels = [self.catalog[name].id - 1 for name in names]
            annotated[channels] = True
            if len(channels) == 1:
                target[channels[0]] = region
            else:
                target[channels[0]], target[channels[1]] = region & ~left, region & left
        return {**data, "target": torch.from_numpy(target), "annotated": torch.from_numpy(annotated)}


def organ_region(label: np.ndarray, value: int, template: DatasetTemplate, catalog: Catalog) -> np.ndarray:
    """Voxels of ``value``, with those of lesions inside it when the template counts lesions as their
    organ (a lesion value whose class has the value's class among its catalogue parents)."""
    region = label == value
    if not template.lesions_in_organ or catalog[template.labels[value][0]].is_lesion:
        return region
    organs = {normalize_name(n) for n in template.labels[value]}
    for lesion_value, names in template.labels.items():
        info = catalog[names[0]]
        if info.is_lesion and organs & {normalize_name(p) for p in info.parents}:
            region |= label == lesion_value
    return region


def left_side_mask(label: np.ndarray, image: np.ndarray, template: DatasetTemplate, catalog: Catalog) -> np.ndarray:
    """bool (X, Y, Z): the voxels of the template's right/left pairs that belong to the left organ.

    ``label`` (X, Y, Z) in the dataset's values and ``image`` (X, Y, Z) in 0..1, RAS. Each pair's
    region is split by 26-connected components: a component whose centre lies on the patient's right
    of the body's midline (larger RAS x than the centre of the tissue along x) is the right organ,
    the others the left.
    """
    left = np.zeros(label.shape, bool)
    midline = _tissue_midline(image)
    for value, names in template.labels.items():
        if len(names) == 2:
            left |= split_by_side(organ_region(label, value, template, catalog), midline)[1]
    return left


def _tissue_midline(image: np.ndarray) -> float:
    """The x index (voxels) of the centre of the voxels above the intensity window's lower end."""
    profile = (image > 0).sum(axis=(1, 2)).astype(np.float64)
    if profile.sum() == 0:
        return (image.shape[0] - 1) / 2
    return float((profile * np.arange(image.shape[0])).sum() / profile.sum())


def split_by_side(region: np.ndarray, midline: float) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) masks of ``region`` (X, Y, Z, RAS): its 26-connected components whose centre
    lies at x > ``midline`` are right, the others left."""
    import cc3d

    components, count = cc3d.connected_components(region.astype(np.uint8), connectivity=26, return_N=True)
    right = np.zeros_like(region, dtype=bool)
    if count:
        x = np.arange(region.shape[0], dtype=np.float64)[:, None, None]
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        x_sums = np.bincount(components.ravel(), weights=np.broadcast_to(x, region.shape).ravel(), minlength=count + 1)
        is_right = np.zeros(count + 1, bool)
        is_right[1:] = x_sums[1:] / np.maximum(sizes[1:], 1) > midline
        right = is_right[components]
    return right, region.astype(bool) & ~right


