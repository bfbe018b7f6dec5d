"""Segmentation quality: Dice of two masks, and mean Dice per class over annotated cases, as
training's validation and the regression gate measure it (model space, the segmenter's threshold,
no post-processing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from universal.catalog import Catalog
from universal.inference.segmenter import Segmenter


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total


def class_dice(segmenter: Segmenter, cases: Iterable[Mapping], target_catalog: Catalog,
               classes: Sequence[str] | None = None) -> dict[str, float]:
    """Mean Dice per class of ``segmenter``'s model over the ``cases`` that annotate it.

    ``cases`` hold ``image`` (1, X, Y, Z), ``target`` (K, X, Y, Z) and ``annotated`` (K,) in the
    channels of ``target_catalog`` (:meth:`~universal.training.sampler.PreparedCases.with_targets`).
    Measured: the model's classes (only ``classes`` when given) that a case annotates; keyed by the
    model's class names.
    """
    model_catalog = segmenter.catalog
    names = [n for n in (classes if classes is not None else model_catalog.names) if n in model_catalog]
    scores: dict[str, list[float]] = {}
    for case in cases:
        annotated = {target_catalog[int(c) + 1].name for c in case["annotated"].nonzero().flatten()}
        wanted = [model_catalog[name].name for name in names if model_catalog[name].name in annotated]
        if not wanted:
            continue
        with torch.no_grad():
            masks = segmenter.predict_masks(case["image"], [model_catalog[name].id - 1 for name in wanted])
        for name, mask in zip(wanted, masks, strict=True):
            truth = case["target"][target_catalog[name].id - 1].numpy().astype(bool)
            scores.setdefault(name, []).append(dice(mask, truth))
    order = {name: model_catalog[name].id for name in scores}
    return {name: float(np.mean(scores[name])) for name in sorted(scores, key=order.__getitem__)}
