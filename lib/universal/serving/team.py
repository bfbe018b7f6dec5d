"""What a team asks of the label history (:class:`~universal.serving.label_versions.LabelVersions`):
an image's versions with their states, how far its annotators agree, a consensus of their labels,
and the effort summed per annotator and per model version."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np

from universal.errors import UniversalError
from universal.serving.agreement import consensus, pairwise_agreement
from universal.serving.effort import summed_effort
from universal.serving.label_versions import LabelVersions
from universal.serving.review import class_states, decisions

CONSENSUS = "consensus"  # the annotator name of a consensus version


def image_summary(record: Mapping) -> dict:
    """An image's versions (each with its annotator, time, model version, seconds, effort and the
    reviews of it), the state of each class, and the accepted version."""
    versions = [{**{k: v for k, v in version.items() if k != "file"},
                 "reviews": decisions(record, version["version"])} for version in record["versions"]]
    return {"image": record["image"], "final": record["final"], "states": class_states(record),
            "versions": versions, "served": {name: {k: v for k, v in served.items() if k != "file"}
                                             for name, served in record["served"].items()}}


def latest_by_annotator(record: Mapping) -> dict[str, dict]:
    """Each annotator's latest version of the image (consensus versions left out)."""
    latest: dict[str, dict] = {}
    for version in record["versions"]:
        if version["annotator"] != CONSENSUS:
            latest[version["annotator"]] = version
    return latest


def image_agreement(store: LabelVersions, image: str) -> dict:
    """Per class and pair of annotators (their latest versions): Dice, mean surface distance and
    95th-percentile Hausdorff distance in mm; and the lowest Dice over them (``None`` for fewer than
    two annotators)."""
    latest = latest_by_annotator(store.record(image))
    masks, spacing = {}, None
    for annotator, version in latest.items():
        labels, affine, values = store.label_map(image, version["version"])
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        masks[annotator] = {name: labels == value for value, name in values.items()}
    classes = pairwise_agreement(masks, spacing) if len(masks) > 1 else {}
    scores = [pair["dice"] for pairs in classes.values() for pair in pairs]
    return {"image": image, "annotators": {a: v["version"] for a, v in latest.items()}, "classes": classes,
            "lowest_dice": min(scores) if scores else None}


def lowest_dice(store: LabelVersions, image: str) -> float | None:
    """The lowest Dice over the classes and pairs of the image's annotators (their latest versions),
    or ``None`` for fewer than two annotators: what the ``disagreement`` queue ranks by."""
    latest = latest_by_annotator(store.record(image))
    if len(latest) < 2:
        return None
    masks = {}
    for annotator, version in latest.items():
        labels, _, values = store.label_map(image, version["version"])
        masks[annotator] = {name: labels == value for value, name in values.items()}
    scores = [2 * np.count_nonzero(a[name] & b[name]) / max(np.count_nonzero(a[name]) + np.count_nonzero(b[name]), 1)
              if (a[name].any() or b[name].any()) else 1.0
              for a, b in itertools.combinations(masks.values(), 2) for name in set(a) & set(b)]
    return round(min(scores), 6) if scores else None


def consensus_label(store: LabelVersions, image: str, method: str = "majority"
                    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(label map, affine, value → class name) agreed by the image's annotators (their latest
    versions), classes numbered 1..K by name; UniversalError with fewer than two annotators."""
    latest = latest_by_annotator(store.record(image))
    if len(latest) < 2:
        raise UniversalError(f"image '{image}' has labels of {len(latest)} annotator(s); a consensus needs two or more")
    maps = [store.label_map(image, version["version"]) for version in latest.values()]
    names = sorted({name for _, _, values in maps for name in values.values()})
    number = {name: value for value, name in enumerate(names, start=1)}
    renumbered = []
    for labels, _, values in maps:
        table = np.zeros(256, np.uint8)
        for value, name in values.items():
            table[value] = number[name]
        renumbered.append(table[labels])
    try:
        agreed = consensus(renumbered, method)
    except ValueError as error:
        raise UniversalError(str(error)) from error
    return agreed, maps[0][1], {value: name for name, value in number.items()}


def effort_by(records: Iterable[Mapping]) -> dict:
    """The annotators' versions summed ``by_annotator`` (also the images they labelled and the seconds
    from prediction to save) and ``by_model_version`` of the prediction they started from: versions,
    voxels added and removed, mean Dice against the prediction (versions without a served prediction
    count for images and seconds only; consensus versions for nothing). The loop's learning curve."""
    groups: dict[str, dict[str, dict]] = {"by_annotator": {}, "by_model_version": {}}
    for record in records:
        for version in record["versions"]:
            if version["annotator"] == CONSENSUS:
                continue
            for table, key in (("by_annotator", version["annotator"]), ("by_model_version",
                                                                         str(version["model_version"]))):
                group = groups[table].setdefault(key, {"efforts": [], "seconds": 0.0, "images": set()})
                group["images"].add(record["image"])
                group["seconds"] += version.get("seconds") or 0.0
                if version.get("effort") is not None:
                    group["efforts"].append(version["effort"])
    return {table: {key: {**summed_effort(group["efforts"]), "images": len(group["images"]),
                          "seconds": round(group["seconds"], 3)} for key, group in sorted(found.items())}
            for table, found in groups.items()}
