"""Active learning: the ``uncertainty`` scoring method (cached in each image's info) and the
strategies ``uncertainty``, ``lesion`` and ``random`` (``first`` is MONAI Label's own), ``findings``
(anatomy findings, most severe first), and the team's queues ``review`` and ``disagreement``. Their
answers carry ``score``, the number that chose the image."""

from __future__ import annotations

import logging
import random
import time

from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

import universal
from universal.errors import UniversalError
from universal.inference.uncertainty import score_scan
from universal.quality import SEVERITIES
from universal.serving.review import waiting_for_review
from universal.serving.team import latest_by_annotator, lowest_dice

from .state import AppState, ModelNotReady

log = logging.getLogger(__name__)

RECENT_S = 600  # an image served by a strategy within this many seconds goes after the others


def score_image(state: AppState, datastore, image_id: str, device: str | None = None) -> dict:
    """Score one image with the model in use (one pass, no window overlap) and cache the result in its
    image info; returns the cached fields."""
    device = device or state.conf.device
    settings = universal.InferenceSettings(overlap=0.0, device=device)
    segmenter = universal.Segmenter(state.model(device), settings, progress=False)
    scan = universal.read_scan(datastore.get_image_uri(image_id), max_voxels=state.conf.max_image_voxels)
    score = score_scan(segmenter, scan)
    fields = {
        "uncertainty": round(score.score, 6),
        "uncertainty_class": score.top_class,
        "uncertainty_classes": {k: round(v, 6) for k, v in score.entropy.items()},
        "lesion": round(score.lesion_score, 3),
        "lesion_probability": round(score.lesion_probability, 6),
        "lesion_ml": {k: round(v, 3) for k, v in score.lesion_ml.items()},
        "uncertainty_model": state.model_key(),
        "uncertainty_ts": int(time.time()),
    }
    datastore.update_image_info(image_id, fields)
    return fields


class UncertaintyScoring(ScoringMethod):
    """Scores every unlabelled image not yet scored with the model in use: per-class predictive
    entropy (``uncertainty``, the highest class's) and suspected tumour volume (``lesion``, mL)."""

    def __init__(self, state: AppState):
        super().__init__("Per-class predictive entropy and suspected tumour volume of unlabelled images")
        self.state = state

    def __call__(self, request, datastore) -> dict:
        if not self.state.ready and not self.state.refresh():
            log.info("uncertainty scoring skipped: the model is %s", self.state.status)
            return {"total": 0, "executed": 0, "skipped": 0, "detail": self.state.status}
        key = self.state.model_key()
        images = datastore.get_unlabeled_images()
        executed = skipped = failed = 0
        for image_id in images:
            if datastore.get_image_info(image_id).get("uncertainty_model") == key:
                skipped += 1
                continue
            try:
                score_image(self.state, datastore, image_id, request.get("device"))
                executed += 1
            except UniversalError as error:
                failed += 1
                log.warning("cannot score %s: %s", image_id, error)
        result = {"total": len(images), "executed": executed, "skipped": skipped, "failed": failed, "model": key}
        log.info("uncertainty scoring: %s", result)
        return result


def _served_recently(info: dict, strategy: str, now: float) -> bool:
    return now - info.get("strategy", {}).get(strategy, {}).get("ts", 0) < RECENT_S


class ScoredStrategy(Strategy):
    """The unlabelled image with the highest cached score (``field``), among those not served in the
    last ten minutes when there are any. Images without a score for the model in use are scored
    first, up to ``--conf inline_scoring`` per request."""

    field = "uncertainty"
    tie_break = "lesion"

    def __init__(self, state: AppState, description: str):
        super().__init__(description)
        self.state = state

    def __call__(self, request, datastore) -> dict | None:
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        key, now = self.state.model_key(), time.time()
        infos = {image: datastore.get_image_info(image) for image in images}
        budget = self.state.conf.inline_scoring
        for image in sorted(images):
            if budget <= 0:
                break
            if infos[image].get("uncertainty_model") != key:
                try:
                    infos[image] = {**infos[image], **score_image(self.state, datastore, image)}
                except ModelNotReady:
                    break
                except UniversalError as error:
                    log.warning("cannot score %s: %s", image, error)
                budget -= 1
        scored = [image for image in images if self.field in infos[image]]
        if not scored:
            if not self.state.ready:
                raise ModelNotReady(f"no image is scored yet and the Universal Model is {self.state.status}")
            return None
        strategy = request.get("strategy", self.field)

        def rank(image):
            info = infos[image]
            return (not _served_recently(info, strategy, now), info.get("uncertainty_model") == key,
                    info[self.field], info.get(self.tie_break, 0.0), image)

        chosen = max(scored, key=rank)
        info = infos[chosen]
        return {"id": chosen, "score": info[self.field], "score_name": self.field,
                "current_model": info.get("uncertainty_model") == key,
                "uncertainty_class": info.get("uncertainty_class")}


class UncertaintyStrategy(ScoredStrategy):
    field, tie_break = "uncertainty", "lesion"

    def __init__(self, state: AppState):
        super().__init__(state, "Highest per-class predictive entropy first")


class LesionStrategy(ScoredStrategy):
    field, tie_break = "lesion", "lesion_probability"

    def __init__(self, state: AppState):
        super().__init__(state, "Images with suspected tumours first (largest suspected tumour volume)")


class FindingsStrategy(Strategy):
    """The image whose latest result (a prediction, or a saved label) has the most severe anatomy
    findings, the most of that severity first, then the most uncertain; images served in the last ten
    minutes go after the others."""

    def __init__(self):
        super().__init__("Most severe anatomy findings first, then the most uncertain")

    def __call__(self, request, datastore) -> dict | None:
        now, strategy = time.time(), request.get("strategy", "findings")
        ranked = {}
        for image in datastore.list_images():
            info = datastore.get_image_info(image)
            worst = info.get("findings_worst")
            if worst not in ("warning", "error"):
                continue
            severe = sum(f["severity"] == worst for f in info.get("findings", []))
            ranked[image] = (not _served_recently(info, strategy, now), SEVERITIES.index(worst), severe,
                             info.get("uncertainty", 0.0), image)
        if not ranked:
            return None
        chosen = max(ranked, key=ranked.__getitem__)
        info = datastore.get_image_info(chosen)
        return {"id": chosen, "score": ranked[chosen][2], "score_name": f"{info['findings_worst']}_findings",
                "findings": info.get("findings", []), "findings_of": info.get("findings_of")}


class ReviewStrategy(Strategy):
    """The labelled image whose accepted label has waited longest for a reviewer's decision on some of
    its classes (those served in the last ten minutes go after the others)."""

    def __init__(self, state: AppState):
        super().__init__("Labels waiting for review, oldest first")
        self.state = state

    def __call__(self, request, datastore) -> dict | None:
        now, strategy = time.time(), request.get("strategy", "review")
        waiting = {record["image"]: since for record in self.state.team.records()
                   if (since := waiting_for_review(record)) is not None and datastore.get_image_uri(record["image"])}
        if not waiting:
            return None
        chosen = min(waiting, key=lambda image: (_served_recently(datastore.get_image_info(image), strategy, now),
                                                 waiting[image], image))
        return {"id": chosen, "score": round(now - waiting[chosen], 3), "score_name": "waiting_s"}


class DisagreementStrategy(Strategy):
    """The image whose annotators agree least (the lowest Dice over its classes and pairs of
    annotators), among images labelled by two annotators or more."""

    def __init__(self, state: AppState):
        super().__init__("Images whose annotators agree least first")
        self.state = state
        self._scores: dict[tuple, float | None] = {}  # (image, its annotators' versions): lowest Dice

    def __call__(self, request, datastore) -> dict | None:
        now, strategy = time.time(), request.get("strategy", "disagreement")
        scores = {}
        for record in self.state.team.records():
            key = (record["image"], tuple(sorted((a, v["version"]) for a, v in latest_by_annotator(record).items())))
            if len(key[1]) < 2 or not datastore.get_image_uri(record["image"]):
                continue
            if key not in self._scores:
                self._scores[key] = lowest_dice(self.state.team, record["image"])
            if self._scores[key] is not None:
                scores[record["image"]] = self._scores[key]
        if not scores:
            return None
        chosen = min(scores, key=lambda image: (_served_recently(datastore.get_image_info(image), strategy, now),
                                                scores[image], image))
        return {"id": chosen, "score": scores[chosen], "score_name": "lowest_dice"}


class RandomStrategy(Strategy):
    """A random unlabelled image, weighted by the seconds since this strategy last served it.

    MONAI Label's own ``Random`` (monailabel/tasks/activelearning/random.py) weighs by the same seconds
    but without a floor, so it raises when every image was served in the current second (all weights
    0, as with one image asked for twice); here each weight is at least one second."""

    def __init__(self):
        super().__init__("Random unlabelled image, the longest unserved most likely")

    def __call__(self, request, datastore) -> dict | None:
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        strategy, now = request.get("strategy", "random"), int(time.time())
        weights = [max(1, now - datastore.get_image_info(i).get("strategy", {}).get(strategy, {}).get("ts", 0))
                   for i in images]
        index = random.choices(range(len(images)), weights=weights)[0]
        return {"id": images[index], "score": weights[index] / sum(weights), "score_name": "probability"}
