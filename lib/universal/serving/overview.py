"""Where a team's work stands, from the records the rest of the product keeps (nothing kept twice):
progress by image and class, the annotators' effort, agreement per class, the anatomy findings to
review, the model versions with their regression gate's Dice, and the training runs' curves."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from universal.serving.label_versions import PRELABEL, LabelVersions
from universal.serving.model_store import RUNS, ModelStore
from universal.serving.review import class_states
from universal.serving.team import effort_by, latest_by_annotator
from universal.training.run_folder import RunFolder

IMAGE_STATES = ("unlabelled", "predicted", "corrected", "approved")
RECENT_RUNS = 5


def image_state(record: Mapping, labelled: bool) -> str:
    """``approved`` (an accepted label whose every class a reviewer approved), ``corrected`` (an accepted
    label), ``predicted`` (a prediction served or pre-labelled), else ``unlabelled``."""
    states = class_states(record)
    if record.get("final") is not None or labelled:
        final = [s for s in states.values() if s != "predicted"]
        return "approved" if final and all(s == "approved" for s in final) else "corrected"
    return "predicted" if record["served"] else "unlabelled"


def progress(team: LabelVersions, images: Iterable[str], labelled: set[str]) -> dict:
    """Images by state (:data:`IMAGE_STATES`), and per class the images in each class state."""
    by_image = dict.fromkeys(IMAGE_STATES, 0)
    by_class: dict[str, dict[str, int]] = {}
    prelabelled = 0
    for image in images:
        record = team.record(image)
        by_image[image_state(record, image in labelled)] += 1
        prelabelled += PRELABEL in record["served"]
        for name, state in class_states(record).items():
            by_class.setdefault(name, {}).setdefault(state, 0)
            by_class[name][state] += 1
    return {"images": by_image, "classes": dict(sorted(by_class.items())), "prelabelled": prelabelled}


def agreement_by_class(team: LabelVersions) -> dict[str, dict]:
    """Per class, over the images two or more annotators labelled: the mean and lowest Dice of their
    pairs (their latest versions), and how many pairs."""
    found: dict[str, list[float]] = {}
    for record in team.records():
        latest = latest_by_annotator(record)
        if len(latest) < 2:
            continue
        maps = {a: team.label_map(record["image"], v["version"]) for a, v in latest.items()}
        for (_, (a, _, av)), (_, (b, _, bv)) in itertools.combinations(maps.items(), 2):
            for name in set(av.values()) & set(bv.values()):
                first = np.isin(a, [v for v, n in av.items() if n == name])
                second = np.isin(b, [v for v, n in bv.items() if n == name])
                total = int(first.sum()) + int(second.sum())
                found.setdefault(name, []).append(2 * int((first & second).sum()) / total if total else 1.0)
    return {name: {"mean_dice": round(float(np.mean(d)), 4), "lowest_dice": round(float(np.min(d)), 4),
                   "pairs": len(d)} for name, d in sorted(found.items())}


def findings_to_review(infos: Mapping[str, Mapping]) -> list[dict]:
    """The images whose latest result has warnings or errors, the most severe first."""
    severities = ("info", "warning", "error")
    listed = [{"image": image, "worst": info["findings_worst"], "of": info.get("findings_of"),
               "findings": [f for f in info.get("findings", []) if f["severity"] != "info"]}
              for image, info in infos.items() if info.get("findings_worst") in ("warning", "error")]
    return sorted(listed, key=lambda item: (-severities.index(item["worst"]), -len(item["findings"]), item["image"]))


def model_versions(store: ModelStore) -> list[dict]:
    """Each published version: when, from what, and its regression gate's Dice per class after it."""
    index = store.index() if store.folder.is_dir() else {"versions": [], "current": None}
    return [{"version": v["version"], "created": v["created"], "origin": v["origin"], "classes": v["classes"],
             "current": v["version"] == index["current"], "gate_dice": (v.get("gate") or {}).get("after", {}),
             "gate_before": (v.get("gate") or {}).get("before", {})} for v in index["versions"]]


def training_runs(store: ModelStore, recent: int = RECENT_RUNS) -> list[dict]:
    """The latest training runs' loss per step and validation Dice per class and step."""
    runs = sorted((store.folder / RUNS).glob("*"), reverse=True)[:recent] if (store.folder / RUNS).is_dir() else []
    found = []
    for path in reversed(runs):
        run = RunFolder(path)
        loss = [(int(r["step"]), float(r["loss"])) for r in _rows(run.metrics)]
        validation: dict[str, list] = {}
        for row in _rows(run.validation):
            validation.setdefault(row["class"], []).append((int(row["step"]), float(row["dice"])))
        found.append({"run": path.name, "loss": loss, "validation": validation})
    return found


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def overview(team: LabelVersions, store: ModelStore, infos: Mapping[str, Mapping], labelled: set[str]) -> dict:
    """Everything the dashboard shows. ``infos``: each image's info (its findings); ``labelled``: the
    images with an accepted label."""
    return {"progress": progress(team, list(infos), labelled),
            "annotators": effort_by(team.records())["by_annotator"],
            "effort_by_model_version": effort_by(team.records())["by_model_version"],
            "agreement": agreement_by_class(team), "findings": findings_to_review(infos),
            "versions": model_versions(store), "runs": training_runs(store)}
