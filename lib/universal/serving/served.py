"""The model a server answers with: which weights file is in use (the model folder's current model once
one is published, else the weights :meth:`ModelStore.resolve_weights` finds, else a demo model),
whether it is ready, and the loaded model per device, reloaded when the file changes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from universal.catalog import DEFAULT_KIND, Catalog, ClassInfo
from universal.devices import resolve_device
from universal.errors import UniversalError, WeightsUnavailableError
from universal.nets.checkpoint import RELEASED_CHECKPOINTS, load_model, read_checkpoint
from universal.nets.model import UniversalModel
from universal.nets.registry import DEFAULT_BACKBONE
from universal.serving.model_store import ModelStore

log = logging.getLogger(__name__)

DEMO_WARNING = ("a demo model trained on synthetic phantoms is in use: it segments synthetic images only, not "
                "patients; put the released weights in place to segment real CT")


class ModelNotReady(UniversalError):
    """No weights yet (offline and absent, or still downloading)."""


class ServedModel:
    """The weights in use for ``store`` and the models loaded from them.

    ``weights``: a file or released name to serve until the folder has a model of its own;
    ``backbone``: the release looked for otherwise; ``download``: whether that release may be
    downloaded (by :meth:`refresh` with ``download=True``); ``demo``: a model for synthetic images
    (:mod:`universal.synth.demo`), served only while no other weights are found, and announced as such.

    A current model that cannot be used (unreadable, truncated, not finite) is not served: the newest
    whole kept version is, with a warning.
    """

    def __init__(self, store: ModelStore, *, weights: str = "", backbone: str = DEFAULT_BACKBONE,
                 download: bool = True, demo: str | Path | None = None):
        self.store = store
        self.weights, self.backbone, self.download = weights, backbone, download
        self.demo_path = Path(demo) if demo else None
        self.source: Path | None = None
        self.status = "looking for weights"
        self.warning: str | None = None
        self.demo = False  # whether the weights in use are (or were fine-tuned from) the demo model
        self._downloads = 0  # downloads running (refresh(download=True) calls in flight)
        self._lock = threading.RLock()
        self._models: dict[str, tuple[tuple, UniversalModel]] = {}
        self._catalog: tuple[tuple, Catalog] | None = None
        self._inspected: dict[tuple, tuple[str | None, bool]] = {}  # file key: (its damage, whether it is demo)

    # -- weights --

    def refresh(self, download: bool = False, announce: bool = True) -> bool:
        """Look for weights (downloading the release only when ``download``); returns whether the
        model is ready. Not ready: one log line says where to put the file. While a download runs,
        other refreshes leave its status alone."""
        with self._lock:
            if download:
                self._downloads += 1
                self.status = f"downloading the released {self.backbone} weights"
        try:
            source, warning = self._find(download and self.download)
        except UniversalError as error:
            with self._lock:
                before = self.status
                self.source, self.warning, self.demo = None, None, False
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
            self.source, self.warning, self.demo = source, warning, self._inspect(source)[1]
            self.status = "ready"
        if changed and announce:
            released = next((r for r in RELEASED_CHECKPOINTS.values() if Path(r.filename).name == source.name), None)
            licence = f"; licence: {released.licence}" if released else ""
            log.info("Universal Model weights: %s%s", source, licence)
            for line in filter(None, (warning, DEMO_WARNING if self.demo else None)):
                log.warning("Universal Model: %s", line)
        return True

    def _find(self, download: bool) -> tuple[Path, str | None]:
        """(the weights to serve, a warning about them): the folder's current model, or its newest whole
        kept version when the current one cannot be used; released or given weights before a model
        fine-tuned from the demo; the demo model when nothing else is found."""
        try:
            source = self.store.resolve_weights(self.weights or None, self.backbone, download=download)
        except WeightsUnavailableError:
            if self.demo_path is None or not self.demo_path.is_file():
                raise
            source = self.demo_path
        problem, demo = self._inspect(source)
        if source == self.store.current_path and problem:
            version = next(self.store.intact_versions(), None)
            if version is not None:
                return self.store.version_path(version), (
                    f"the current model cannot be used ({problem}); serving kept version {version}. Restore a "
                    "version (--conf restore N) or publish a new model")
        if source == self.store.current_path and (problem or demo):
            try:  # released or given weights replace a model grown from the demo as soon as they are there
                return self.store.resolve_weights(self.weights or None, self.backbone, download=False,
                                                  current=False), None
            except WeightsUnavailableError:
                if problem:
                    raise UniversalError(f"the current model cannot be used: {problem}; no kept version is whole, "
                                         "and no other weights are found") from None
        elif problem:
            raise UniversalError(problem)
        return source, None

    def _inspect(self, source: Path) -> tuple[str | None, bool]:
        """(what makes ``source`` unusable or ``None``, whether it is the demo model or grown from it),
        read once per file content."""
        try:
            stat = source.stat()
            key = (str(source), stat.st_mtime_ns, stat.st_size)
        except OSError:
            return f"{source} cannot be read", False
        if key not in self._inspected:
            problem = self.store.damage(source)
            demo = not problem and bool(read_checkpoint(source).provenance.get("demo"))
            self._inspected[key] = (problem, demo)
        return self._inspected[key]

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
        return self.store.version_of(self.source)

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
        while other weights are in use, and away from the demo model once other weights are there."""
        published = self.source != self.store.current_path and self.store.current_path.is_file()
        if self.source is not None and (published or self.demo):
            self.refresh(download=False, announce=not self.warning)

    # -- models --

    def model(self, device: str = "cpu") -> UniversalModel:
        """The model in use on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), loaded once per
        weights file."""
        return self.serving(device)[0]

    def serving(self, device: str = "cpu") -> tuple[UniversalModel, int | None]:
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
                self._models[str(target)] = (key, load_model(source, target))
            key, model = self._models[str(target)]
        published = self.store.version_of(Path(key[0])) is not None
        return model, model.provenance.get("version") if published else None

    def catalog(self) -> Catalog:
        """The classes of the model in use, without loading it when the folder or the file names them."""
        self.follow_publications()
        with self._lock:
            key = self.source_key()
            if self._catalog is None or self._catalog[0] != key:
                loaded = next((m for k, m in self._models.values() if k == key), None)
                in_folder = self.source == self.store.current_path and self.store.catalog_path.is_file()
                catalog = loaded.catalog if loaded is not None and not in_folder else self.store.catalog_of(self.source)
                self._catalog = (key, catalog)
            return self._catalog[1]

    def describe(self) -> dict:
        """The model's state for /info (weights placed since the last look are found)."""
        if not self.ready and not self.downloading:
            self.refresh(download=False)
        self.follow_publications()
        return {
            "ready": self.ready,
            "status": self.status,
            "demo": self.demo,
            "warning": " ".join(filter(None, (self.warning, DEMO_WARNING if self.demo else None))) or None,
            "weights": str(self.source) if self.source else None,
            "backbone": self.backbone,
            "version": self.version(),
            "model_dir": str(self.store.folder),
            "versions": len(self.store.versions()) if self.store.folder.is_dir() else 0,
        }

    # -- classes --

    def add_class(self, name: str, prompt: str | None = None, embedding=None, *, kind: str = DEFAULT_KIND,
                  parents=(), synonyms=()) -> ClassInfo:
        """Add a class to the model in use and publish it (CLIP embeds the prompt unless
        ``embedding`` is given)."""
        source = self.require_source()
        info = self.store.add_class(source, name, prompt, embedding, kind=kind, parents=parents, synonyms=synonyms)
        self.refresh(download=False)
        log.info("class added: %s (id %d, prompt %r)", info.name, info.id, info.prompt)
        return info
