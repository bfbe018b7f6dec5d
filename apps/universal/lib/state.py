"""What the app's tasks share: the app's settings and the model it serves
(:class:`universal.serving.served.ServedModel` over the model folder), and the datastore's labels
as training reads them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from universal.devices import INT8
from universal.errors import UniversalError
from universal.nets.openvino import int8_available
from universal.quality import SEVERITIES
from universal.serving.annotations import Annotation, AnnotationError, read_annotation, restrict
from universal.serving.label_versions import LabelVersions
from universal.serving.model_store import ModelStore
from universal.serving.review import trainable_classes
from universal.serving.served import ModelNotReady, ServedModel

from .conf import AppConf

log = logging.getLogger(__name__)

__all__ = ["AppState", "ModelNotReady", "device_choices"]


class AppState(ServedModel):
    """The served model of the model folder (``<app>/model`` or ``--conf model_dir``), as the app's
    ``--conf`` keys set it up (``weights``, ``backbone``, ``download``)."""

    def __init__(self, app_dir: str | Path, conf: AppConf, team_dir: str | Path):
        self.conf = conf
        self.model_dir = Path(conf.model_dir).expanduser().resolve() if conf.model_dir else Path(app_dir) / "model"
        self.team = LabelVersions(Path(conf.team_dir).expanduser() if conf.team_dir else team_dir)
        super().__init__(ModelStore(self.model_dir), weights=conf.weights, backbone=conf.backbone,
                         download=conf.download, demo=conf.demo_model or None)
        self.refresh(download=False, announce=False)

    def annotations(self, datastore, train_on: str | None = None) -> list[Annotation]:
        """The datastore's final labels, each with the classes that may train (``train_on``, default
        ``--conf train_on``: ``final``, all but the classes a reviewer rejected; ``approved``, only the
        approved ones); unusable labels are logged and left out."""
        catalog, train_on = self.catalog(), train_on or self.conf.train_on
        found = []
        for image_id in sorted(datastore.get_labeled_images()):
            info = datastore.get_label_info(image_id, "final") or {}
            try:
                annotation = read_annotation(image_id, datastore.get_image_uri(image_id),
                                             datastore.get_label_uri(image_id, "final"), info.get("label_info"),
                                             catalog, max_voxels=self.conf.max_image_voxels)
            except (AnnotationError, UniversalError) as error:
                log.warning("final label of %s left out of training: %s", image_id, error)
                continue
            kept = restrict(annotation, trainable_classes(self.team.record(image_id), train_on))
            if kept.values != annotation.values:
                left = sorted(set(annotation.values.values()) - set(kept.values.values()))
                log.info("final label of %s: %s left out of training (%s)", image_id, ", ".join(left), train_on)
            found.append(kept)
        return found


    @staticmethod
    def keep_findings(datastore, image_id: str, findings: list[dict], source: str) -> None:
        """An image's latest anatomy findings (of a ``prediction`` or a saved ``label``) in its image info,
        where the ``findings`` strategy and the dashboard read them."""
        worst = max((f["severity"] for f in findings), key=SEVERITIES.index, default=None)
        try:
            datastore.update_image_info(image_id, {"findings": findings, "findings_worst": worst,
                                                   "findings_of": source, "findings_ts": int(time.time())})
        except Exception as error:  # the image info is a cache: a datastore that cannot keep it serves on
            log.warning("the findings of %s were not kept in its info: %s", image_id, error)


def device_choices() -> list[str]:
    """Device options for the clients' option tables, the default first (3D Slicer shows a list as a
    drop-down whose first item is chosen: Project-MONAI/MONAILabel plugins/slicer/MONAILabel/
    MONAILabel.py, updateConfigTable and getParamsFromConfig)."""
    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def precision_choices() -> list[str]:
    """Precision options for the clients' option tables, the default first: ``int8`` where OpenVINO and
    NNCF are installed (an int8 trunk on the CPU)."""
    return ["auto", INT8] if int8_available() else ["auto"]
