"""MONAI Label app for the CLIP-Driven Universal Model.

Start with ``monailabel start_server --app apps/universal --studies DIR --conf models universal``
(``--conf`` keys: see the README). The app is a door into the ``universal`` library: the tasks in
``lib/`` turn requests into library calls and library errors into HTTP answers.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from lib.activelearning import (
    DisagreementStrategy,
    FindingsStrategy,
    LesionStrategy,
    RandomStrategy,
    ReviewStrategy,
    UncertaintyScoring,
    UncertaintyStrategy,
)
from lib.batch import UniversalBatchInfer, batch_settings
from lib.conf import MODEL_NAME, AppConf, http_error
from lib.datastore import CheckedDatastore
from lib.infer import UniversalInfer
from lib.pacs import PacsDatastore, dicomweb_client
from lib.patches import add_routes, check_tokens, record_uploads, take_upload
from lib.prelabel import AppPrelabel
from lib.state import AppState, ModelNotReady
from lib.team import ANONYMOUS, annotator
from lib.trainer import UniversalTrainer, finetune_settings, train_on
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.tasks.activelearning.first import First

import universal
from universal.catalog import normalize_name
from universal.errors import UniversalError
from universal.io.download import offline
from universal.io.names import plain_name
from universal.nets.text import EMBEDDING_DIM
from universal.quality.label_files import label_findings
from universal.serving.annotations import AnnotationError, label_info_values, new_class_names, read_annotation
from universal.serving.label_versions import TEAM_FOLDER

log = logging.getLogger(__name__)


class UniversalApp(MONAILabelApp):
    """Infer task, trainer, scoring and strategies named ``universal`` (plus ``lesion``, ``review``,
    ``disagreement``, ``random`` and ``first``), over a model folder (``<app>/model`` or ``--conf
    model_dir``) and the team's label history (``<studies>/.universal-team``, ``<app>/team`` for a PACS,
    or ``--conf team_dir``)."""

    def __init__(self, app_dir, studies, conf):
        try:
            self.app_conf = AppConf.parse(conf or {})
        except ValueError as error:
            raise SystemExit(f"Universal Model app: {error}") from error
        pacs = str(studies).startswith(("http://", "https://"))
        self.state = AppState(app_dir, self.app_conf, Path(app_dir) / "team" if pacs else Path(studies) / TEAM_FOLDER)
        prelabel = self.app_conf.prelabel == "true" or (self.app_conf.prelabel == "auto" and not pacs)
        self.prelabel = AppPrelabel(self.state, lambda: self.datastore(), enabled=prelabel)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Universal Model",
            description="CLIP-Driven Universal Model: 25 abdominal organs and 6 tumour types in CT, named by "
                        "text prompts; new structures are taught by name",
            version=universal.__version__,
        )

    # -- tasks --

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return PacsDatastore(dicomweb_client(self.studies), settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
                                 settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or None, check_label=self.check_label,
                                 catalog=self.state.catalog, on_final=self.keep_version)
        return CheckedDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            check_label=self.check_label,
            on_final=self.keep_version,
            max_voxels=self.app_conf.max_image_voxels,
        )

    def init_infers(self):
        return {MODEL_NAME: UniversalInfer(self.state, self.prelabel)}

    def init_trainers(self):
        return {MODEL_NAME: UniversalTrainer(self.state)}

    def init_batch_infer(self):
        return UniversalBatchInfer(self.state)

    def init_strategies(self):
        return {
            "uncertainty": UncertaintyStrategy(self.state),
            "lesion": LesionStrategy(self.state),
            "findings": FindingsStrategy(),
            "review": ReviewStrategy(self.state),
            "disagreement": DisagreementStrategy(self.state),
            "random": RandomStrategy(),
            "first": First(),
        }

    def init_scoring_methods(self):
        return {"uncertainty": UncertaintyScoring(self.state)}

    # -- server life --

    def server_mode(self, mode: bool):
        super().server_mode(mode)
        if mode:
            import monailabel.app
            from monailabel.interfaces.utils.app import app_instance

            add_routes(monailabel.app.app, lambda: app_instance().state, int(self.app_conf.max_upload_mb * 2**20),
                       self.check_task, lambda: app_instance().datastore())
            record_uploads()
            check_tokens()

    def on_init_complete(self):  # the server's process only (monailabel/app.py), not its training processes
        if self.state.store.folder.is_dir():
            self.state.store.recover()  # what a killed server left half-done
        if self.app_conf.restore and self.state.store.index().get("restored") != self.app_conf.restore:
            try:
                self.state.store.restore(self.app_conf.restore)
            except UniversalError as error:
                log.error("--conf restore %d: %s", self.app_conf.restore, error)
        self.keep_unkept_versions()
        ready = self.state.refresh(download=False, announce=False)
        if ready:
            log.info("Universal Model weights: %s (version %s)", self.state.source, self.state.version())
            warning = self.state.describe()["warning"]
            if warning:
                log.warning("Universal Model: %s", warning)
            if self.app_conf.preload:
                self.state.model(self.app_conf.device)
        elif self.app_conf.download and not offline():
            threading.Thread(target=self.state.refresh, kwargs={"download": True}, name="weights",
                             daemon=True).start()
        else:
            log.warning("Universal Model %s", self.state.status)
        self.prelabel.start()
        super().on_init_complete()

    # -- requests --

    def info(self, request=None):
        meta = super().info()
        meta["universal"] = self.state.describe()
        meta["universal"]["classes"] = self.state.catalog().to_records()
        return meta

    def infer(self, request, datastore=None):
        if request.get("model") != MODEL_NAME:
            raise http_error(404, f"no model '{request.get('model')}'; this app serves '{MODEL_NAME}'")
        if request.get("save_label"):  # MONAI Label saves the answer under label_tag: a plain name, asked first
            plain_name(str(request.get("label_tag") or DefaultLabelTag.ORIGINAL.value), "label_tag")
        # who asks, and which datastore image (none for an upload): read here, as the task runs in another thread
        request = {**request, "annotator": annotator(request), "image_id": None}
        image = request.get("image")
        if isinstance(image, str) and os.path.exists(image):
            if not (self.app_conf.allow_local_paths or take_upload(image) or self._is_session_image(image)):
                raise http_error(403, f"the server does not read files by path ('{image}'): use an image id from "
                                      "GET /datastore/?output=all, upload the image as 'file', or add it to the "
                                      "studies; on a single-user workstation start with --conf allow_local_paths true")
        elif isinstance(image, str):
            store = datastore or self.datastore()
            if not store.get_image_uri(image):
                raise http_error(404, f"no image '{image}' in the datastore; use an id from "
                                      "GET /datastore/?output=all, or upload the image as 'file'")
            request["image_id"] = image  # the served prediction is remembered for this image
        result = super().infer(request, datastore)
        findings = ((result.get("params") or {}).get("report") or {}).get("findings")
        if request["image_id"] and findings is not None:
            self.keep_findings(request["image_id"], findings, "prediction")
        return result

    def _is_session_image(self, path: str) -> bool:
        """Whether ``path`` is the image of a MONAI Label session (a client's earlier upload)."""
        sessions = self.sessions()
        return sessions is not None and Path(path).resolve().is_relative_to(Path(sessions.store_path).resolve())

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise http_error(404, f"no active learning strategy '{strategy}'; choose one of "
                                  f"{', '.join(self._strategies)}")
        try:
            found = super().next_sample(request)
        except ModelNotReady as error:
            raise http_error(503, str(error)) from error
        if isinstance(found, dict) and found.get("id"):
            self.prelabel.want(found["id"])  # the annotator asks for its segmentation next
        return found

    def check_task(self, task: str, params: dict) -> None:
        """Raise the library's error for a training (``task`` ``"train"``) or batch inference (``"batch"``)
        request that can only fail: a read-only model folder, or a parameter out of range."""
        params = params.get(MODEL_NAME, params) if isinstance(params.get(MODEL_NAME), dict) else params
        if task == "train":
            self.state.store.require_writable("train")
            finetune_settings(self.app_conf, params)
            train_on(self.app_conf, params)
            return
        try:
            batch_settings(params, self.app_conf.device)
        except ValueError as error:
            raise UniversalError(f"bad batch inference parameter: {error}") from error

    def check_label(self, image_id: str, label_file: str, info: dict) -> dict:
        """Refuse a final label the trainer could not use (422), adding the classes its
        ``label_info`` names that the model lacks; returns the label info to keep."""
        catalog = self.state.catalog()
        try:
            annotation = read_annotation(image_id, self.datastore().get_image_uri(image_id), label_file,
                                         info.get("label_info"), catalog, max_voxels=self.app_conf.max_image_voxels)
        except AnnotationError as error:
            raise http_error(422, f"label for '{image_id}' not saved: {error}") from error
        for name in new_class_names([annotation], catalog):
            try:
                self.state.add_class(name)
            except ModelNotReady as error:
                raise http_error(503, f"label not saved: it names the new class '{name}', and {error}") from error
            except UniversalError as error:
                message = (f"label not saved: cannot add the new class '{name}': {error}. Add it first with "
                           f"POST /universal/classes (name, prompt, or a {EMBEDDING_DIM}-value embedding)")
                raise http_error(422, message) from error
        catalog = self.state.catalog()
        info["classes"] = sorted({catalog[name].name for name in annotation.values.values()
                                  if normalize_name(name)}, key=lambda n: catalog[n].id)
        named = label_info_values(info["label_info"]) if info.get("label_info") else annotation.values
        info["values"] = {str(value): catalog[name].name if name in catalog else name for value, name in named.items()}
        info["annotator"] = annotator(info)
        info["findings"] = [f.to_record() for f in label_findings(label_file, named, catalog)]
        return info

    def keep_findings(self, image_id: str, findings: list[dict], source: str) -> None:
        self.state.keep_findings(self.datastore(), image_id, findings, source)

    def keep_unkept_versions(self) -> None:
        """Final labels saved by a server killed before it kept them as versions are kept now."""
        store = self.datastore()
        if not isinstance(store, CheckedDatastore):
            return
        for image_id in store.get_labeled_images():
            info = store.get_label_info(image_id, "final") or {}
            if info.get("sha256") and info.get("values") and not self.state.team.holds(image_id, sha256=info["sha256"]):
                self.keep_version(image_id, store.get_label_uri(image_id, "final"), info, source="recovered")

    def keep_version(self, image_id: str, label_file: str, info: dict, source: str = "saved") -> None:
        """Keep a final label just saved (checked by :meth:`check_label`), or a DICOM SEG seen in the PACS,
        as the image's next version (once per SEG series)."""
        series = info.get("seg_series")
        if series and self.state.team.holds(image_id, seg_series=series):
            return
        self._infers[MODEL_NAME].flush()  # the prediction this annotator was just served is kept first
        values = {int(value): name for value, name in (info.get("values") or {}).items()}
        findings = info.get("findings")
        if findings is None:
            findings = [f.to_record() for f in label_findings(label_file, values, self.state.catalog())]
        extra = {"findings": findings, **({"seg_series": series} if series else {})}
        version = self.state.team.add_version(image_id, label_file, values, info.get("annotator") or ANONYMOUS,
                                              source=source, extra=extra)
        self.keep_findings(image_id, findings, "label")
        log.info("label version %d of %s kept (%s)", version["version"], image_id, version["annotator"])
