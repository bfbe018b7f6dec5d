"""A folder of models in use: the current model, every model published before it, the class
catalogue, and training runs.

Layout of ``FOLDER``::

    universal.pt          the current model (own format), replaced atomically on publish or restore
    catalog.yaml          the current model's class catalogue (ids, names, prompts)
    versions/v0001.pt     every published model, kept, with its catalogue (v0001.yaml)
    versions.json         one record per version (origin, classes, gate decision) and the current one
    runs/<time>/          training runs (universal.training.loop's run folders)
    train_stats.json      the last fine-tuning's outcome

A publication writes its version file and catalogue, then puts the catalogue, ``universal.pt`` and
the index beside their places (hard links of the kept files, taking no space) and moves them there,
the index last, which makes it count: a full disk leaves the folder as it was, and
:meth:`ModelStore.recover` rolls back one a killed process left part-way without needing free space.
A folder this process may not write is served as it is; publishing into it is refused.

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
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from universal.catalog import DEFAULT_KIND, Catalog, ClassInfo
from universal.errors import ReadOnlyError, UniversalError, WeightsUnavailableError
from universal.io.atomic import FULL_DISK, full_disk_as_error
from universal.io.download import offline, resolve
from universal.nets.checkpoint import (
    RELEASED_CHECKPOINTS,
    load_model,
    non_finite,
    read_checkpoint,
    released_name,
    save_model,
)
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
                        download: bool = True, progress: bool = True, current: bool = True) -> Path:
        """The checkpoint to serve: ``universal.pt`` (unless ``current`` is false); a released file of
        ``backbone`` in the folder; ``weights`` (a file, or a released name); the release of ``backbone``
        as :func:`~universal.io.download.resolve` finds it, downloaded only when ``download``.

        Raises :class:`WeightsUnavailableError` saying where to put the file.
        """
        if current and self.current_path.is_file():
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
        """The published version ``source`` is (the current model, or a kept version's file), or ``None``
        for weights from outside the folder."""
        if source is not None and source == self.current_path:
            return self.index().get("current")
        if source is not None and source.parent == self.folder / VERSIONS and source.stem[1:].isdigit():
            return int(source.stem[1:])
        return None

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

    def writable(self) -> bool:
        """Whether this process may write into the folder (created when it is missing)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".write-test.", dir=self.folder)
        except OSError:
            return False
        os.close(handle)
        os.unlink(probe)
        return True

    def require_writable(self, what: str) -> None:
        """A :class:`ReadOnlyError` saying ``what`` cannot be done, unless the folder is writable."""
        if not self.writable():
            raise ReadOnlyError(f"cannot {what}: the model folder {self.folder} is read-only, so this server serves "
                                "its current model but changes nothing; make the folder writable and restart")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive access to the folder between processes (the server and its training process); a
        folder this process may not write is only read, without a lock."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.folder / ".lock", "a")  # noqa: SIM115 - closed below
        except OSError:
            yield
            return
        with handle:
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
        """:meth:`publish` for a caller that holds :meth:`lock`. A model whose weights are not all finite
        is refused; a publication that cannot be written whole (a full disk) changes nothing."""
        self.require_writable("publish a model")
        bad = non_finite(model.state_dict())
        if bad:
            raise UniversalError(f"the model was not published: its weights hold NaN or infinite values (in "
                                 f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the current model stays")
        index = self.index()
        version = max((record["version"] for record in index["versions"]), default=0) + 1
        record = {
            "version": version,
            "file": str(self.version_path(version).relative_to(self.folder)),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "origin": origin,
            "classes": len(model.catalog),
            **(details or {}),
        }
        with self._rolled_back_on_failure(), full_disk_as_error(f"model version {version} was not published"):
            save_model(model, self.version_path(version), provenance={"version": version, "origin": origin})
            model.catalog.save_yaml(self.version_catalog_path(version))
            self._install(version, {**index, "versions": [*index["versions"], record], "current": version})
        log.info("published model version %d (%s)", version, origin)
        return record

    def restore(self, version: int) -> dict:
        """Make a kept version current again; returns its record. A version that cannot be read whole,
        or whose weights are not finite, is refused."""
        with self.lock():
            self.require_writable(f"restore version {version}")
            index = self.index()
            record = next((r for r in index["versions"] if r["version"] == version), None)
            if record is None:
                kept = ", ".join(str(r["version"]) for r in index["versions"]) or "none"
                raise UniversalError(f"no model version {version} in {self.folder / VERSIONS}; kept versions: {kept}")
            problem = self.damage(self.version_path(version))
            if problem:
                raise UniversalError(f"version {version} cannot be restored: {problem}")
            with self._rolled_back_on_failure(), full_disk_as_error(f"version {version} was not restored"):
                self._install(version, {**index, "current": version, "restored": version})
        log.info("restored model version %d (%s)", version, record["origin"])
        return record

    def damage(self, path: Path) -> str | None:
        """What makes the weights file ``path`` unusable (unreadable, truncated, NaN or infinite
        weights), or ``None`` for a whole one."""
        try:
            checkpoint = read_checkpoint(path)
        except UniversalError as error:
            return str(error)
        bad = non_finite(checkpoint.state_dict)
        return f"{path.name} has NaN or infinite weights (in {', '.join(bad[:3])})" if bad else None

    def intact_versions(self) -> Iterator[int]:
        """The kept versions whose files are whole, newest first."""
        for record in sorted(self.versions(), key=lambda r: r["version"], reverse=True):
            if self.version_path(record["version"]).is_file() and self.damage(self.version_path(record["version"])) \
                    is None:
                yield record["version"]

    def recover(self) -> list[str]:
        """Undo what a killed process left half-done; returns what was undone (also logged). Needs no free
        space: it removes files and links kept ones. A read-only folder is left as it is.

        A publication the index does not name (a version file without its record) is rolled back:
        ``universal.pt`` and ``catalog.yaml`` become the index's current version again (before the
        first publication: ``universal.pt`` is removed only where it is that unrecorded file). The
        temporary files of interrupted atomic writes are removed, and a fine-tuning whose process is
        gone is reported as failed in the stats (``interrupted``).
        """
        if not self.writable():
            log.warning("model folder %s is read-only: served as it is, nothing to recover", self.folder)
            return []
        undone = []
        with self.lock():
            for leftover in [*self.folder.glob(".*.part"), *(self.folder / VERSIONS).glob(".*.part")]:
                leftover.unlink(missing_ok=True)
                undone.append(f"removed {leftover.name}, left by an interrupted write")
            rolled = self._roll_back()
            undone += [rolled] if rolled else []
        lost = self.training.report_lost()
        undone += [lost] if lost else []
        for line in undone:
            log.warning("model folder %s: %s", self.folder, line)
        return undone

    def version_catalog_path(self, version: int) -> Path:
        return self.version_path(version).with_suffix(".yaml")

    @contextlib.contextmanager
    def _rolled_back_on_failure(self) -> Iterator[None]:
        """A publication or restore that fails part-way (a full disk, a failed write) is undone at once."""
        try:
            yield
        except Exception:
            self._roll_back()
            raise

    def _roll_back(self) -> str | None:
        """Make the index's current version current again and remove unrecorded version files; returns
        what was done, or ``None`` when there was nothing to undo."""
        index = self.index()
        recorded = {self.version_path(r["version"]) for r in index["versions"]}
        unrecorded = sorted(p for p in (self.folder / VERSIONS).glob("v*.pt") if p not in recorded)
        if not unrecorded:
            return None
        current = index["current"]
        if current is not None:
            self._install(current)
        elif self.current_path.is_file() and any(filecmp.cmp(self.current_path, p, shallow=False) for p in unrecorded):
            self.current_path.unlink()
            self.catalog_path.unlink(missing_ok=True)
        for path in unrecorded:
            path.unlink()
            self.version_catalog_path(int(path.stem[1:])).unlink(missing_ok=True)
        names = ", ".join(p.name for p in unrecorded)
        return (f"rolled back an interrupted publication ({names}); the current model is "
                f"{f'version {current}' if current is not None else 'the one before it'}")

    def _install(self, version: int, index: dict | None = None) -> None:
        """Make kept ``version`` the current model and catalogue, and write ``index`` (when given): each
        file is first put beside its place (a hard link of the kept one, taking no space, where the file
        system has them), and only once all are there moved into place, the index last."""
        catalog = self.version_catalog_path(version)
        if not catalog.is_file():  # a version kept before catalogues were kept beside versions
            read_checkpoint(self.version_path(version)).catalog.save_yaml(catalog)
        staged: list[tuple[Path, Path]] = []
        try:
            staged.append((_beside(self.catalog_path, lambda temp: _link_or_copy(catalog, temp)), self.catalog_path))
            staged.append((_beside(self.current_path, lambda temp: _link_or_copy(self.version_path(version), temp)),
                           self.current_path))
            if index is not None:
                text = json.dumps(index, indent=2) + "\n"
                staged.append((_beside(self.folder / INDEX, lambda temp: temp.write_text(text)), self.folder / INDEX))
        except BaseException:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            raise
        for temporary, target in staged:
            os.replace(temporary, target)
            temporary.unlink(missing_ok=True)  # a rename onto a link of the same file leaves both names

    # -- classes --

    def add_class(self, source: str | Path, name: str, prompt: str | None = None,
                  embedding: torch.Tensor | Sequence[float] | None = None, *, kind: str = DEFAULT_KIND,
                  parents: Iterable[str] = (), synonyms: Iterable[str] = (), text_encoder=None) -> ClassInfo:
        """Add a class to the model in ``source`` and publish the result; returns the new class.

        Its embedding is ``embedding`` or the CLIP embedding of its prompt (default: the released
        template around ``name``). Existing classes compute exactly as before.
        """
        self.require_writable(f"add the class '{name}'")
        with self.lock():
            model = load_model(self.current_path if self.current_path.is_file() else source)
            info = model.add_class(name, prompt, embedding, kind=kind, parents=parents, synonyms=synonyms,
                                   text_encoder=text_encoder)
            self.publish_locked(model, f"class added: {info.name}")
        return info


def _beside(target: Path, write) -> Path:
    """A temporary file beside ``target`` that ``write(path)`` fills; removed when writing fails."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        temporary.unlink()
        write(temporary)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _link_or_copy(source: Path, destination: Path) -> None:
    """``destination`` as a hard link of ``source`` (no space taken), or a copy where links are not possible."""
    try:
        os.link(source, destination)
    except OSError as error:
        if error.errno in FULL_DISK:
            raise
        shutil.copyfile(source, destination)
