"""What the app's tasks share: the model folder, the loaded model and whether it is ready."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

import universal
from universal.catalog import Catalog
from universal.devices import resolve_device
from universal.errors import UniversalError, WeightsUnavailableError
from universal.nets.checkpoint import RELEASED_CHECKPOINTS, read_checkpoint
from universal.serving.annotations import Annotation, AnnotationError, read_annotation
from universal.serving.model_store import ModelStore

from .conf import AppConf

log = logging.getLogger(__name__)


class ModelNotReady(UniversalError):
    """No weights yet (offline and absent, or still downloading)."""


class AppState:
    """The model folder, the weights in use and the loaded models (one per device), reloaded when
    the published file changes."""

    def __init__(self, app_dir: str | Path, conf: AppConf):
        self.conf = conf
        self.model_dir = Path(conf.model_dir).expanduser().resolve() if conf.model_dir else Path(app_dir) / "model"
        self.store = ModelStore(self.model_dir)
        self.source: Path | None = None
        self.status = "looking for weights"
        self._downloads = 0  # downloads running (refresh(download=True) calls in flight)
        self._lock = threading.RLock()
        self._models: dict[str, tuple[tuple, universal.UniversalModel]] = {}
        self._catalog: tuple[tuple, Catalog] | None = None
        self.refresh(download=False, announce=False)

    # -- weights --

    def refresh(self, download: bool = False, announce: bool = True) -> bool:
        """Look for weights (model folder, ``--conf weights``, the release; downloading it only when
        ``download``); returns whether the model is ready. Not ready: one log line says where to put
        the file. While a download runs, other refreshes leave its status alone."""
        with self._lock:
            if download:
                self._downloads += 1
                self.status = f"downloading the released {self.conf.backbone} weights"
        try:
            source = self.store.resolve_weights(self.conf.weights or None, self.conf.backbone,
                                                download=download and self.conf.download)
        except UniversalError as error:
            with self._lock:
                before = self.status
                self.source = None
                if not self.downloading or download:
                    self.status = (f"not ready: {error} (start the server with --conf weights PATH)"
                                   if isinstance(error, WeightsUnavailableError) else f"not ready: {error}")
            if announce and self.status != before:
                log.warning("Universal Model %s", self.status)
            return False
        finally:
            if download:
                with self._lock:
                    self._downloads -= 1
        with self._lock:
            changed = source != self.source
            self.source = source
            self.status = "ready"
        if changed and announce:
            released = next((r for r in RELEASED_CHECKPOINTS.values() if Path(r.filename).name == source.name), None)
            licence = f"; licence: {released.licence}" if released else ""
            log.info("Universal Model weights: %s%s", source, licence)
        return True

    @property
    def downloading(self) -> bool:
        """Whether a download of the released weights is running."""
        return self._downloads > 0

    @property
    def ready(self) -> bool:
        return self.source is not None

    def source_key(self) -> tuple:
        """Identifies the weights file's content: (path, modification time, size)."""
        if self.source is None:
            return ()
        try:
            stat = self.source.stat()
        except OSError:
            return (str(self.source),)
        return str(self.source), stat.st_mtime_ns, stat.st_size

    def version(self) -> int | None:
        """The published version in use, or ``None`` for weights from outside the model folder."""
        if self.source is None or self.source != self.store.current_path:
            return None
        return self.store.index().get("current")

    def model_key(self) -> str:
        """A short name of the weights in use, for caching scores."""
        version = self.version()
        if version is not None:
            return f"v{version}"
        key = self.source_key()
        return f"{Path(key[0]).name}@{key[1]}" if len(key) > 1 else "none"

    def require_source(self) -> Path:
        """The weights file in use; :class:`ModelNotReady` with the status when there is none."""
        self.follow_publications()
        if self.source is None or not self.source.is_file():
            self.refresh(download=False)
        if self.source is None:
            raise ModelNotReady(f"the Universal Model is {self.status}")
        return self.source

    def follow_publications(self) -> None:
        """Switch to the model folder's current model once one is published (by a training process)
        while other weights are in use."""
        if self.source is not None and self.source != self.store.current_path and self.store.current_path.is_file():
            self.refresh(download=False)

    def model(self, device: str = "cpu") -> universal.UniversalModel:
        """The model in use on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), loaded once per
        weights file."""
        return self.serving(device)[0]

    def serving(self, device: str = "cpu") -> tuple[universal.UniversalModel, int | None]:
        """The model in use on ``device`` and its published version, read from the loaded file itself
        (the version its publication wrote into it), so an answer names the model that computed it
        even while a new one is published; ``None`` for weights from outside the model folder."""
        source = self.require_source()
        target = resolve_device(device)
        with self._lock:
            key = self.source_key()
            cached = self._models.get(str(target))
            if cached is None or cached[0] != key:
                log.info("loading the Universal Model from %s onto %s", source, target)
                self._models[str(target)] = (key, universal.load_model(source, target))
            key, model = self._models[str(target)]
        published = Path(key[0]) == self.store.current_path
        return model, model.provenance.get("version") if published else None

    def catalog(self) -> Catalog:
        """The classes of the model in use (without loading it when the file names them), or of the
        model folder's catalogue, or the released ones."""
        self.follow_publications()
        with self._lock:
            key = self.source_key()
            if self._catalog is not None and self._catalog[0] == key:
                return self._catalog[1]
            catalog = self._read_catalog()
            self._catalog = (key, catalog)
            return catalog

    def _read_catalog(self) -> Catalog:
        if self.source is not None and self.source == self.store.current_path and self.store.catalog_path.is_file():
            return Catalog.from_yaml(self.store.catalog_path)
        if self.source is not None:
            cached = next((m for k, m in self._models.values() if k == self.source_key()), None)
            if cached is not None:
                return cached.catalog
            try:
                return read_checkpoint(self.source).catalog or Catalog.default()
            except UniversalError:
                return Catalog.default()
        if self.store.catalog_path.is_file():
            return Catalog.from_yaml(self.store.catalog_path)
        return Catalog.default()

    def describe(self) -> dict:
        """The model's state for /info (weights placed since the last look are found)."""
        if not self.ready and not self.downloading:
            self.refresh(download=False)
        return {
            "ready": self.ready,
            "status": self.status,
            "weights": str(self.source) if self.source else None,
            "backbone": self.conf.backbone,
            "version": self.version(),
            "model_dir": str(self.model_dir),
            "versions": len(self.store.versions()) if self.store.folder.is_dir() else 0,
        }

    # -- classes --

    def add_class(self, name: str, prompt: str | None = None, embedding=None, *, kind: str = "organ",
                  parents=(), synonyms=()) -> universal.ClassInfo:
        """Add a class to the model in use and publish it (CLIP embeds the prompt unless
        ``embedding`` is given)."""
        source = self.require_source()
        info = self.store.add_class(source, name, prompt, embedding, kind=kind, parents=parents, synonyms=synonyms)
        self.refresh(download=False)
        log.info("class added: %s (id %d, prompt %r)", info.name, info.id, info.prompt)
        return info

    # -- annotations --

    def annotations(self, datastore) -> list[Annotation]:
        """The datastore's final labels, each with the classes it annotates; unusable ones are logged
        and left out."""
        catalog = self.catalog()
        found = []
        for image_id in sorted(datastore.get_labeled_images()):
            info = datastore.get_label_info(image_id, "final") or {}
            try:
                found.append(read_annotation(image_id, datastore.get_image_uri(image_id),
                                             datastore.get_label_uri(image_id, "final"), info.get("label_info"),
                                             catalog, max_voxels=self.conf.max_image_voxels))
            except (AnnotationError, UniversalError) as error:
                log.warning("final label of %s left out of training: %s", image_id, error)
        return found


def device_choices() -> list[str]:
    """Device options for the clients' option tables, the default first."""
    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
