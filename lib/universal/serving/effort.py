"""How much an annotator changed the prediction they were served: per class, the voxels added and
removed, and Dice(prediction, label). Summed over versions per annotator or per model version, it is
the loop's learning curve in the team's own numbers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def class_effort(prediction: np.ndarray, predicted: Mapping[int, str], label: np.ndarray,
                 labelled: Mapping[int, str]) -> dict[str, dict]:
    """Per class: ``added`` (labelled, not predicted), ``removed`` (predicted, not labelled), voxels,
    and ``dice`` (1.0 when both are empty).

    ``prediction``, ``label``: label maps (X, Y, Z) on one grid; ``predicted``: prediction value →
    class name of the classes it computed; ``labelled``: label value → class name of every segment the
    annotator's label names (empty ones included). A class in either counts: one the annotator left
    out of a prediction was erased.
    """
    if prediction.shape != label.shape:
        raise ValueError(f"the prediction {prediction.shape} and the label {label.shape} lie on different grids")
    joint = np.bincount(prediction.astype(np.int64).ravel() * 256 + label.astype(np.int64).ravel(),
                        minlength=256 * 256).reshape(256, 256)  # [prediction value, label value]: voxels
    by_name: dict[str, tuple[list[int], list[int]]] = {}
    for value, name in predicted.items():
        by_name.setdefault(name, ([], []))[0].append(int(value))
    for value, name in labelled.items():
        by_name.setdefault(name, ([], []))[1].append(int(value))
    found = {}
    for name, (in_prediction, in_label) in by_name.items():
        both = int(joint[np.ix_(in_prediction, in_label)].sum()) if in_prediction and in_label else 0
        predicted_voxels = int(joint[in_prediction].sum()) if in_prediction else 0
        labelled_voxels = int(joint[:, in_label].sum()) if in_label else 0
        total = predicted_voxels + labelled_voxels
        found[name] = {"added": labelled_voxels - both, "removed": predicted_voxels - both,
                       "dice": round(2 * both / total, 6) if total else 1.0}
    return found


def summed_effort(efforts: Iterable[Mapping[str, Mapping]]) -> dict:
    """Versions' efforts summed: ``versions`` counted, voxels ``added`` and ``removed``, and the mean
    Dice of the classes they hold (``None`` without any)."""
    versions, added, removed, dice = 0, 0, 0, []
    for effort in efforts:
        versions += 1
        for values in effort.values():
            added, removed = added + values["added"], removed + values["removed"]
            dice.append(values["dice"])
    return {"versions": versions, "added": added, "removed": removed,
            "mean_dice": round(float(np.mean(dice)), 6) if dice else None}
