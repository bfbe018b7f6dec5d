"""MONAI Label's batch inference (``POST /batch/infer/universal``) as one call of
:func:`universal.segment` over the datastore's images, in the training-like process MONAI Label
starts for it: pre-labelling a new dataset runs the same library path as ``universal segment``, in
this process or on Ray, and each finished image's label map is saved as soon as it is done.

Request parameters: MONAI Label's own (``images``: ``all``, ``labeled``, ``unlabeled`` or a list of
ids; ``label_tag``, default ``original``; ``max_batch_size``) and the infer task's (``classes`` or
``label_prompt``, ``threshold``, ``overlap``, ``postprocess``, ``device``), plus ``engine`` (``local``
or ``ray``), ``ray_address`` (a Ray cluster; default: a Ray instance started for the run) and
``workers`` (network workers on Ray).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.batch_infer import BatchInferTask

import universal
from universal.errors import UniversalError
from universal.inference.batch import ENGINES
from universal.inference.cases import CaseInput
from universal.inference.jobs import CaseOutcome
from universal.inference.result import LABEL_MAP_NAME, PREVIEW_NAME, REPORT_NAME
from universal.io.labels import read_label_map
from universal.io.names import plain_name
from universal.serving.label_versions import PRELABEL
from universal.synth import calibration_windows

from .conf import MODEL_NAME, parse_number
from .delivery import PREVIEWS
from .infer import inference_settings, requested_classes
from .state import AppState

log = logging.getLogger(__name__)


def batch_settings(request: dict, default_device: str):
    """(engine, workers, image limit, label tag, inference settings) of a batch request; a ValueError or
    UniversalError naming a malformed one."""
    engine = str(request.get("engine") or "local")
    if engine not in ENGINES:
        raise UniversalError(f"engine must be {' or '.join(ENGINES)}, got {engine!r}")
    workers = parse_number("workers", request.get("workers"), 0, integer=True) or None
    limit = parse_number("max_batch_size", request.get("max_batch_size"), 0, integer=True)
    tag = plain_name(str(request.get("label_tag") or DefaultLabelTag.ORIGINAL.value), "label_tag")
    if str(request.get("device") or "").startswith("cuda") and not torch.cuda.is_available():
        # the endpoint's default asks for cuda; MONAI Label falls back to the CPU then
        # (monailabel/utils/others/generic.py, name_to_device), and so does this task
        log.info("batch inference: no CUDA GPU here, so it runs on the CPU")
        request = {**request, "device": "cpu"}
    return engine, workers, limit, tag, inference_settings(request, default_device)


class UniversalBatchInfer:
    """``batch(request, datastore, infer)`` → ``{image id: {"status", "label", "error", "seconds"}}``."""

    def __init__(self, state: AppState):
        self.state = state

    def __call__(self, request: dict, datastore: Datastore, infer=None) -> dict:
        if request.get("model", MODEL_NAME) != MODEL_NAME:
            raise ValueError(f"no model '{request.get('model')}'; this app serves '{MODEL_NAME}'")
        engine, workers, limit, tag, settings = batch_settings(request, self.state.conf.device)
        image_ids = sorted(BatchInferTask().get_images(request, datastore))  # MONAI Label's choice of images
        image_ids = image_ids[:limit] if limit > 0 else image_ids
        model, version = self.state.serving(settings.device)
        label_names = model.catalog.label_map()
        computed = {i: model.catalog[i].name for i in model.catalog.select(requested_classes(request))}
        log.info("batch inference of %d images on %s (label tag %s)", len(image_ids), engine, tag)
        results: dict[str, dict] = {}
        with tempfile.TemporaryDirectory() as folder:

            def save(outcome: CaseOutcome) -> None:
                entry = {"status": outcome.status, "error": outcome.error, "seconds": outcome.seconds}
                if outcome.status == "done":
                    info = {"model": MODEL_NAME, "params": {"label_names": label_names, "version": version}}
                    saved = outcome.folder / LABEL_MAP_NAME
                    entry["label"] = datastore.save_label(outcome.name, str(saved), tag, info)
                    labels, affine = read_label_map(saved)  # the prediction annotators will start from
                    self.state.team.serve(outcome.name, PRELABEL, labels, affine, computed, version)
                    report = json.loads((outcome.folder / REPORT_NAME).read_text())
                    self.state.keep_findings(datastore, outcome.name, report["findings"], "prediction")
                    previews = self.state.team.folder / PREVIEWS
                    previews.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(outcome.folder / PREVIEW_NAME, previews / f"{outcome.name}.png")
                else:
                    log.warning("batch inference of %s failed: %s", outcome.name, outcome.error)
                results[outcome.name] = entry

            cases = [CaseInput(image_id, Path(datastore.get_image_uri(image_id))) for image_id in image_ids]
            if cases:
                universal.segment(cases, folder, model=model, settings=settings, progress=False, on_case=save,
                                  preview=True, classes=requested_classes(request),
                                  engine=engine, address=request.get("ray_address") or None, workers=workers,
                                  calibration=calibration_windows)
        done = sum(entry["status"] == "done" for entry in results.values())
        log.info("batch inference: %d of %d images labelled (%s)", done, len(image_ids), tag)
        return results
