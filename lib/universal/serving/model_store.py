"""A folder of models in use: the current model, every model published before it, the class
catalogue, and training runs.

Layout of ``FOLDER``::

    universal.pt          the current model (own format), replaced atomically on publish or restore
    catalog.yaml          the current model's class catalogue (ids, names, prompts)
    versions/v0001.pt     every published model, kept
    versions.json         one record per version (origin, classes, gate decision) and the current one
    runs/<time>/          training runs (universal.training.loop's run folders)
    train_stats.json      the last fine-tuning's outcome

A publication writes, each in one step, its version file, the catalogue, ``universal.pt`` and last the
index, which makes it count; :meth:`ModelStore.recover` rolls back one a killed process left part-way.

Weights for a folder without ``universal.pt`` come from :meth:`ModelStore.resolve_weights`: a
released file placed in the folder, then a given file or released name, then the release itself
(:func:`universal.io.download.resolve`: its variable, the cache, or a verified download).
"""

from __future__ import annotations

import contextlib
import datetime
import filecmp
import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from universal.catalog import DEFAULT_KIND, Catalog, ClassInfo
from universal.errors import UniversalError, WeightsUnavailableError
from universal.io.atomic import atomic_open, atomic_write_text
from universal.io.download import offline, resolve
from universal.nets.checkpoint import RELEASED_CHECKPOINTS, load_model, read_checkpoint, released_name, save_model
from universal.nets.model import UniversalModel
from universal.nets.registry import DEFAULT_BACKBONE, backbone_record
from universal.serving.training_status import TrainingStatus

log = logging.getLogger(__name__)

CURRENT, CATALOG, INDEX, VERSIONS, RUNS, STATS = (
    "universal.pt", "catalog.yaml", "versions.json", "versions", "runs", "train_stats.json")


class ModelStore:
    """The model folder of an application (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.training = TrainingStatus(self.folder / STATS)

    # -- paths --

    @property
    def current_path(self) -> Path:
        return self.folder / CURRENT

    @property
    def catalog_path(self) -> Path:
        return self.folder / CATALOG

    def version_path(self, version: int) -> Path:
        return self.folder / VERSIONS / f"v{version:04d}.pt"

    def new_run_dir(self) -> Path:
        """A fresh folder under ``runs/`` named by the current UTC time."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        for suffix in ("", *(f"-{n}" for n in range(1, 1000))):
            candidate = self.folder / RUNS / f"{stamp}{suffix}"
            if not candidate.exists():
                candidate.mkdir(parents=True)
                return candidate
        raise UniversalError(f"cannot create a run folder under {self.folder / RUNS}")

    # -- weights --

    def resolve_weights(self, weights: str | Path | None = None, backbone: str = DEFAULT_BACKBONE,
                        download: bool = True, progress: bool = True) -> Path:
        """The checkpoint to serve: ``universal.pt``; a released file of ``backbone`` in the folder;
        ``weights`` (a file, or a released name); the release of ``backbone`` as
        :func:`~universal.io.download.resolve` finds it, downloaded only when ``download``.

        Raises :class:`WeightsUnavailableError` saying where to put the file.
        """
        if self.current_path.is_file():
            return self.current_path
        released = RELEASED_CHECKPOINTS[backbone_record(backbone).name]
        placed = self.folder / Path(released.filename).name
        if placed.is_file():
            return placed
        if weights and released_name(weights) is None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailableError(f"weights file {path} does not exist; give an existing checkpoint")
            return path
        if weights:
            released = RELEASED_CHECKPOINTS[released_name(weights)]
        try:
            return resolve(released, progress=progress, download=download)
        except WeightsUnavailableError as error:
            if download and not offline():  # the download failed: its message says why
                raise
            raise WeightsUnavailableError(f"no weights: put {Path(released.filename).name} into {self.folder}/ (from "
                                          f"{released.url}), or give a checkpoint file") from error

    def catalog_of(self, source: Path | None) -> Catalog:
        """The classes of the weights file ``source``: the folder's catalogue for the current model, the
        file's own otherwise (the released classes for a file without one, or one that cannot be read);
        without a source, the folder's catalogue, else the released classes."""
        if source is None or source == self.current_path:
            if self.catalog_path.is_file():
                return Catalog.from_yaml(self.catalog_path)
            if source is None:
                return Catalog.default()
        try:
            return read_checkpoint(source).catalog or Catalog.default()
        except UniversalError:
            return Catalog.default()

    def version_of(self, source: Path | None) -> int | None:
        """The published version ``source`` is, or ``None`` for weights from outside the folder."""
        return self.index().get("current") if source is not None and source == self.current_path else None

    # -- versions --

    def index(self) -> dict:
        """``{"current": version or None, "restored": version or None, "versions": [records]}``."""
        path = self.folder / INDEX
        if not path.is_file():
            return {"current": None, "restored": None, "versions": []}
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise UniversalError(f"{path} is damaged ({error}); restore it from a backup or remove it") from error

    def versions(self) -> list[dict]:
        return list(self.index()["versions"])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive access to the folder between processes (the server and its training process)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as handle:
            try:
                import fcntl
            except ImportError:  # no advisory locks on this platform: writes are still atomic
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(self, model: UniversalModel, origin: str, details: dict | None = None) -> dict:
        """Keep ``model`` as the next version and make it current; returns its record."""
        with self.lock():
            return self.publish_locked(model, origin, details)

    def publish_locked(self, model: UniversalModel, origin: str, details: dict | None = None) -> dict:
        """:meth:`publish` for a caller that holds :meth:`lock`."""
        index = self.index()
        version = max((record["version"] for record in index["versions"]), default=0) + 1
        path = save_model(model, self.version_path(version), provenance={"version": version, "origin": origin})
        record = {
            "version": version,
            "file": str(path.relative_to(self.folder)),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "origin": origin,
            "classes": len(model.catalog),
            **(details or {}),
        }
        model.catalog.save_yaml(self.catalog_path)  # before the model: a reader of the new model reads its classes
        self._make_current(path)
        index["versions"].append(record)
        index["current"] = version
        self._write_index(index)
        log.info("published model version %d (%s)", version, origin)
        return record

    def restore(self, version: int) -> dict:
        """Make a kept version current again; returns its record."""
        with self.lock():
            index = self.index()
            record = next((r for r in index["versions"] if r["version"] == version), None)
            if record is None:
                kept = ", ".join(str(r["version"]) for r in index["versions"]) or "none"
                raise UniversalError(f"no model version {version} in {self.folder / VERSIONS}; kept versions: {kept}")
            path = self.version_path(version)
            catalog = read_checkpoint(path).catalog
            if catalog is not None:
                catalog.save_yaml(self.catalog_path)
            self._make_current(path)
            index["current"] = index["restored"] = version
            self._write_index(index)
        log.info("restored model version %d (%s)", version, record["origin"])
        return record

    def recover(self) -> list[str]:
        """Undo what a killed process left half-done; returns what was undone (also logged).

        A publication the index does not name (a version file without its record) is rolled back:
        ``universal.pt`` and ``catalog.yaml`` become the index's current version again (before the
        first publication: ``universal.pt`` is removed only where it is that unrecorded file). The
        temporary files of interrupted atomic writes are removed, and a fine-tuning whose process is
        gone is reported as failed in the stats (``interrupted``).
        """
        undone = []
        with self.lock():
            for leftover in [*self.folder.glob(".*.part"), *(self.folder / VERSIONS).glob(".*.part")]:
                leftover.unlink(missing_ok=True)
                undone.append(f"removed {leftover.name}, left by an interrupted write")
            index = self.index()
            recorded = {self.version_path(r["version"]) for r in index["versions"]}
            unrecorded = sorted(p for p in (self.folder / VERSIONS).glob("v*.pt") if p not in recorded)
            if unrecorded:
                current = index["current"]
                if current is not None:
                    self._make_current(self.version_path(current))
                elif self.current_path.is_file() and any(filecmp.cmp(self.current_path, p, shallow=False)
                                                         for p in unrecorded):
                    self.current_path.unlink()
                if self.current_path.is_file():
                    catalog = read_checkpoint(self.current_path).catalog
                    if catalog is not None:
                        catalog.save_yaml(self.catalog_path)
                else:
                    self.catalog_path.unlink(missing_ok=True)
                for path in unrecorded:
                    path.unlink()
                names = ", ".join(p.name for p in unrecorded)
                undone.append(f"rolled back an interrupted publication ({names}); the current model is "
                              f"{f'version {current}' if current is not None else 'the one before it'}")
        lost = self.training.report_lost()
        undone += [lost] if lost else []
        for line in undone:
            log.warning("model folder %s: %s", self.folder, line)
        return undone

    def _make_current(self, path: Path) -> None:
        with open(path, "rb") as source, atomic_open(self.current_path) as target:
            shutil.copyfileobj(source, target, 1 << 20)

    def _write_index(self, index: dict) -> None:
        atomic_write_text(self.folder / INDEX, json.dumps(index, indent=2) + "\n")

    # -- classes --

    def add_class(self, source: str | Path, name: str, prompt: str | None = None,
                  embedding: torch.Tensor | Sequence[float] | None = None, *, kind: str = DEFAULT_KIND,
                  parents: Iterable[str] = (), synonyms: Iterable[str] = (), text_encoder=None) -> ClassInfo:
        """Add a class to the model in ``source`` and publish the result; returns the new class.

        Its embedding is ``embedding`` or the CLIP embedding of its prompt (default: the released
        template around ``name``). Existing classes compute exactly as before.
        """
        with self.lock():
            model = load_model(self.current_path if self.current_path.is_file() else source)
            info = model.add_class(name, prompt, embedding, kind=kind, parents=parents, synonyms=synonyms,
                                   text_encoder=text_encoder)
            self.publish_locked(model, f"class added: {info.name}")
        return info
