"""Cheap per-scan scores for choosing what to annotate next: how unsure the model is of each class,
and how much tumour it suspects.

One sliding-window pass without window overlap (a quarter of the windows of a segmentation at
overlap 0.5); the blended logits are reduced slab by slab, so memory holds one band of logits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from universal.catalog import ClassKey
from universal.errors import UniversalError
from universal.inference.preprocess import to_model_space
from universal.inference.segmenter import Segmenter
from universal.io.scans import Scan

PLAUSIBLE = 0.05  # a voxel takes part in a class's uncertainty when its probability exceeds this
MIN_REGION_ML = 1.0  # a class's uncertain region counts as at least this volume (a speck is not "unsure")


@dataclass
class UncertaintyScore:
    """Scores of one scan.

    ``entropy``: per class, mean binary entropy (bits, 0..1) of its probability over the voxels
    where it is plausible (p > 0.05; the region counted as at least 1 mL). ``score``: the highest of
    them, for class ``top_class``. ``lesion_ml``: per lesion class, the volume (mL) above the
    threshold; ``lesion_score``: their sum; ``lesion_probability``: the highest lesion probability.
    """

    score: float
    top_class: str
    entropy: dict[str, float] = field(default_factory=dict)
    lesion_score: float = 0.0
    lesion_probability: float = 0.0
    lesion_ml: dict[str, float] = field(default_factory=dict)

    def to_record(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def score_scan(segmenter: Segmenter, scan: Scan, classes: Iterable[ClassKey] | None = None) -> UncertaintyScore:
    """Uncertainty and tumour suspicion of ``scan`` under the segmenter's model (all classes, or those
    named). Uses the segmenter's device, precision, threshold and overlap (0 is cheapest)."""
    catalog = segmenter.catalog
    wanted = catalog.select(classes)
    try:
        image, affine = to_model_space(scan.image, scan.affine, segmenter.model.input_spec)
    except ValueError as error:
        raise UniversalError(f"{scan.source or scan.name}: {error}") from error
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    entropy_sum = torch.zeros(len(wanted), dtype=torch.float64)
    plausible = torch.zeros(len(wanted), dtype=torch.float64)
    above = torch.zeros(len(wanted), dtype=torch.float64)
    highest = torch.zeros(len(wanted), dtype=torch.float64)
    for _, logits in segmenter.blended_logits(image, [class_id - 1 for class_id in wanted], scan.name):
        p = torch.sigmoid(logits.double()).flatten(1)
        bits = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / np.log(2.0)
        region = p > PLAUSIBLE
        entropy_sum += (bits * region).sum(1).cpu()
        plausible += region.sum(1).cpu()
        above += (p > segmenter.settings.threshold).sum(1).cpu()
        highest = torch.maximum(highest, p.amax(1).cpu())
    floor = MIN_REGION_ML / voxel_ml
    entropy = {catalog[c].name: float(entropy_sum[i] / max(float(plausible[i]), floor)) for i, c in enumerate(wanted)}
    top = max(entropy, key=entropy.__getitem__)
    lesions = [(i, catalog[c]) for i, c in enumerate(wanted) if catalog[c].is_lesion]
    lesion_ml = {info.name: float(above[i]) * voxel_ml for i, info in lesions}
    return UncertaintyScore(
        score=entropy[top],
        top_class=top,
        entropy=entropy,
        lesion_score=float(sum(lesion_ml.values())),
        lesion_probability=float(max((highest[i] for i, _ in lesions), default=0.0)),
        lesion_ml=lesion_ml,
    )
