"""A local datastore that checks uploads before keeping them, so a bad upload changes nothing, and
saves labels so that a server killed mid-save leaves the old label or the new one, each with its own
record, and a valid ``datastore_v2.json``: the label file and the index are each replaced in one
step, and a note of the save in progress (``labels/<tag>/.<name>.saving.json``, written first and
removed last) lets the next start give a new file its record.

Every image id and label tag a request names becomes part of a file's path, so each must be a plain
name (:func:`universal.io.names.plain_name`) in every method that takes one; a full disk answers 507
and leaves what was saved before as it was."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from watchdog.events import FileModifiedEvent

from universal.io.atomic import atomic_open, atomic_write_text, full_disk_as_error, sha256_of
from universal.io.names import plain_name
from universal.io.scans import ScanError, ScanTooLargeError, read_scan

from .conf import http_error

log = logging.getLogger(__name__)


class CheckedDatastore(LocalDatastore):
    """:class:`LocalDatastore` whose ``add_image`` accepts only readable CT volumes and whose
    ``save_label`` passes final labels through ``check_label(image_id, label_file, info) -> info``
    (which raises an HTTP error for a label it refuses) before anything is written, and hands each
    saved final label to ``on_final(image_id, saved_file, info)`` (the team's label history)."""

    def __init__(self, *args, check_label: Callable[[str, str, dict], dict],
                 on_final: Callable[[str, str, dict], None], max_voxels: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_label, self.on_final = check_label, on_final
        self.max_voxels = max_voxels
        self._finish_interrupted_saves()
        if getattr(self, "_handler", None) is not None:  # auto reload watches the folder
            self._handler.on_moved = self._on_moved_event

    @property
    def folder(self) -> Path:
        """The studies folder."""
        return Path(self._datastore_path)

    def _on_moved_event(self, event) -> None:
        """A file moved into place is a file written: this datastore writes the index and labels so, in
        the server and in the processes it starts (training, batch inference). watchdog reports such a
        rename as a move (watchdog/events.py: PathMatchingEventHandler.dispatch matches its dest_path),
        which ``LocalDatastore`` leaves unhandled, so the server would never see another process's saves."""
        written = FileModifiedEvent(os.fsdecode(event.dest_path))
        if written.src_path == self._datastore_config_path:
            self._on_modify_event(written)  # the index: read again, unless this process wrote it
        else:
            self._on_any_event(written)  # an image or a label: reconcile the index with the files

    def add_image(self, image_id: str, image_filename: str, image_info: dict) -> str:
        """``LocalDatastore.add_image`` (its file name and record) for a readable CT only, the file copied
        beside its place and moved there in one step."""
        _, extension = self._to_id(os.path.basename(image_filename))
        plain_name(image_id, "image id")
        name = plain_name(self._filename(image_id, extension), "image file name")
        if image_id in self._datastore.objects:
            raise http_error(409, f"image '{image_id}' exists already; remove it first (DELETE /datastore/image, "
                                  "admin) or add the new image under another id")
        try:
            read_scan(image_filename, max_voxels=self.max_voxels)
        except ScanError as error:
            status = 413 if isinstance(error, ScanTooLargeError) else 422
            raise http_error(status, f"image '{image_id}' was not added: {error}") from error
        info = {**(image_info or {}), "ts": int(time.time()), "name": name}
        with FileLock(self._lock_file), full_disk_as_error(f"image '{image_id}' was not added"):
            with open(image_filename, "rb") as source, atomic_open(Path(self._datastore.image_path()) / name) as target:
                shutil.copyfileobj(source, target, 1 << 20)
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=extension))
            self._update_datastore_file(lock=False)
        log.info("image added: %s", image_id)
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict) -> str:
        plain_name(label_tag, "label tag")
        if not self.get_image_uri(image_id):
            raise http_error(404, f"no image '{image_id}' in the datastore; add the image first "
                                  "(PUT /datastore/image) or use an id from GET /datastore/?output=all")
        if label_tag != "final":
            return self._save_label_atomically(image_id, label_filename, label_tag, label_info)
        label_info = {**self.check_label(image_id, label_filename, dict(label_info or {})),
                      "sha256": sha256_of(label_filename)}
        self._save_label_atomically(image_id, label_filename, label_tag, label_info)
        self.on_final(image_id, self.get_label_uri(image_id, label_tag), label_info)
        return image_id

    def _save_label_atomically(self, image_id: str, label_filename: str, label_tag: str, label_info: dict) -> str:
        """``LocalDatastore.save_label`` (monailabel/datastore/local.py: the same file name, record and
        lock) with the file copied beside its place and moved there in one step."""
        _, extension = self._to_id(os.path.basename(label_filename))
        name = self._filename(image_id, extension)
        folder = Path(self._datastore.label_path(label_tag))
        info = {**(label_info or {}), "ts": int(time.time()), "name": name}
        with FileLock(self._lock_file), full_disk_as_error(f"the {label_tag} label of '{image_id}' was not saved"):
            note = folder / f".{name}.saving.json"
            atomic_write_text(note, json.dumps({"image": image_id, "tag": label_tag, "ext": extension, "info": info,
                                                "sha256": sha256_of(label_filename)}))
            with open(label_filename, "rb") as source, atomic_open(folder / name) as target:
                shutil.copyfileobj(source, target, 1 << 20)
            self._datastore.objects[image_id].labels[label_tag] = DataModel(info=info, ext=extension)
            self._update_datastore_file(lock=False)
            note.unlink()
        log.info("label saved: %s (%s)", image_id, label_tag)
        return image_id

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        return super().get_label_uri(label_id, plain_name(label_tag, "label tag"))

    def get_label_info(self, label_id: str, label_tag: str) -> dict:
        return super().get_label_info(label_id, plain_name(label_tag, "label tag"))

    def remove_label(self, label_id: str, label_tag: str) -> None:
        return super().remove_label(label_id, plain_name(label_tag, "label tag"))

    def update_label_info(self, label_id: str, label_tag: str, info: dict) -> None:
        return super().update_label_info(label_id, plain_name(label_tag, "label tag"), info)

    def _finish_interrupted_saves(self) -> None:
        """After a kill mid-save: a label file that is the noted new one gets the noted record (else
        the old file kept its old record); the notes and half-written copies are removed."""
        labels = Path(self._datastore.label_path("final")).parent
        if not labels.is_dir():
            return
        with FileLock(self._lock_file):
            index = Path(self._datastore_config_path)
            for leftover in [*labels.glob("*/.*.part"), *index.parent.glob(f".{index.name}.*.part")]:
                leftover.unlink()
            for note_path in labels.glob("*/.*.saving.json"):
                try:
                    self._finish_save(json.loads(note_path.read_text()), note_path.parent)
                except (ValueError, KeyError, OSError) as error:
                    log.warning("an interrupted label save left %s, which cannot be read (%s); removed",
                                note_path, error)
                note_path.unlink()

    def _finish_save(self, note: dict, folder: Path) -> None:
        label = folder / note["info"]["name"]
        if label.is_file() and sha256_of(label) == note["sha256"] and note["image"] in self._datastore.objects:
            self._datastore.objects[note["image"]].labels[note["tag"]] = DataModel(info=note["info"], ext=note["ext"])
            self._update_datastore_file(lock=False)
            log.warning("an interrupted save of the %s label of %s was completed", note["tag"], note["image"])

    def _update_datastore_file(self, lock: bool = True):
        """``LocalDatastore._update_datastore_file`` writing the index beside itself, then moving it over."""

        def write():
            self._ignore_event_config = True
            index = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic_write_text(self._datastore_config_path, index)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()
