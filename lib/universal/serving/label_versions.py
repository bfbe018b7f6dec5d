"""Every label every annotator saved, kept per image, and the predictions each annotator was served:
nothing is overwritten. The datastore's ``final`` label stays the accepted one that MONAI Label and
training read; this store keeps the history beside it.

Layout of ``FOLDER``::

    files/<sha256><suffix>   label maps and predictions, named by their content, each written once
    images/<image>.json      one record per image, replaced in one step at every change

An image's record::

    {"image": "case3",
     "versions": [{"version": 1, "annotator": "ann1", "time": "2026-12-04T10:00:00+00:00", "ts": 1796...,
                   "file": "<sha256>.nii.gz", "values": {"1": "Liver"}, "source": "saved",
                   "model_version": 3, "seconds": 84.2, "effort": {"Liver": {"added": 120, "removed": 40,
                                                                              "dice": 0.97}}}],
     "served": {"ann1": {"time": ..., "ts": ..., "model_version": 3, "file": "<sha256>.nii.gz",
                         "values": {"6": "Liver"}}},
     "reviews": [{"version": 1, "class": "Liver", "state": "approved", "reviewer": "rev1", "time": ...,
                  "comment": ""}],
     "final": 1}

A file is written (atomically) before the record that names it, so a process killed at any point
leaves every earlier version whole and its record readable; a file no record names is harmless.
``values`` name each label value (the annotator's ``label_info``, empty segments included);
``effort`` compares a version with the prediction its annotator was last served for the image
(:mod:`universal.serving.effort`); ``seconds`` run from that prediction to the save.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from filelock import FileLock

from universal.errors import UniversalError
from universal.io.atomic import atomic_open, atomic_write_text, sha256_of
from universal.io.labels import read_label_map, write_label_file
from universal.io.names import plain_name
from universal.io.scans import IMAGE_SUFFIXES
from universal.serving.effort import class_effort

PRELABEL = "pre-labelling"  # the annotator name of predictions written by batch inference
TEAM_FOLDER = ".universal-team"  # where the history is kept beside a local datastore's images


class LabelVersions:
    """The label history of a datastore's images, in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder / ".lock"))

    # -- reading --

    def images(self) -> list[str]:
        """The images that have a record, in name order."""
        return sorted(path.stem for path in (self.folder / "images").glob("*.json"))

    def record(self, image: str) -> dict:
        """The record of ``image``; an empty one before its first version or prediction."""
        path = self._record_path(image)
        if not path.is_file():
            return {"image": image, "versions": [], "served": {}, "reviews": [], "final": None}
        return json.loads(path.read_text())

    def records(self) -> Iterator[dict]:
        """Every image's record, one at a time."""
        for image in self.images():
            yield self.record(image)

    def version(self, image: str, version: int) -> dict:
        """One version's record; UniversalError naming the kept ones for another."""
        record = self.record(image)
        found = next((v for v in record["versions"] if v["version"] == version), None)
        if found is None:
            kept = ", ".join(str(v["version"]) for v in record["versions"]) or "none"
            raise UniversalError(f"image '{image}' has no label version {version}; its versions: {kept}")
        return found

    def holds(self, image: str, *, sha256: str | None = None, seg_series: str | None = None) -> bool:
        """Whether a version of ``image`` holds the file whose SHA-256 is ``sha256``, or came from the
        DICOM SEG series ``seg_series``."""
        return any((sha256 and v["file"].startswith(sha256)) or (seg_series and v.get("seg_series") == seg_series)
                   for v in self.record(image)["versions"])

    def file(self, entry: Mapping) -> Path:
        """The stored file of a version or served prediction."""
        return self.folder / "files" / entry["file"]

    def label_map(self, image: str, version: int) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """(label map (X, Y, Z), its RAS affine, value → class name) of a version."""
        entry = self.version(image, version)
        labels, affine = read_label_map(self.file(entry))
        return labels, affine, {int(value): name for value, name in entry["values"].items()}

    # -- writing --

    def add_version(self, image: str, label: str | Path, values: Mapping[int, str], annotator: str, *,
                    source: str = "saved", final: bool = True, now: float | None = None,
                    extra: Mapping | None = None) -> dict:
        """Keep the label file ``label`` (values named by ``values``) as ``image``'s next version by
        ``annotator``, with its effort against the prediction that annotator (else pre-labelling) was
        last served; ``final``: it is the image's accepted label; ``extra``: more fields of the record
        (a DICOM SEG's ``seg_series``). Returns the version's record."""
        now = time.time() if now is None else now
        stored = self._store(Path(label))
        labels, _ = read_label_map(self.file({"file": stored}))
        with self._lock:
            record = self.record(image)
            own = record["served"].get(annotator)
            served = own or record["served"].get(PRELABEL)
            entry = {"version": max((v["version"] for v in record["versions"]), default=0) + 1,
                     "annotator": annotator, "time": _iso(now), "ts": round(now, 3), "file": stored,
                     "values": {str(v): name for v, name in sorted(values.items())}, "source": source,
                     "model_version": served.get("model_version") if served else None,
                     "seconds": round(now - own["ts"], 3) if own else None,
                     "effort": self._effort(served, labels, values) if served else None, **(extra or {})}
            record["versions"].append(entry)
            if final:
                record["final"] = entry["version"]
            self._write(record)
        return entry

    def serve(self, image: str, annotator: str, label_map: np.ndarray | None, affine: np.ndarray,
              values: Mapping[int, str], model_version: int | None, now: float | None = None, *,
              encoded: bytes | None = None) -> dict:
        """Remember the prediction ``annotator`` was served for ``image``: the label map (X, Y, Z, values
        named by ``values``, the classes it computed) and the model version. ``encoded``: the label map
        already written as a uint8 ``.nii.gz`` (the answer's bytes), kept as it is (``label_map`` may
        then be ``None``)."""
        now = time.time() if now is None else now
        (self.folder / "files").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".serving-", dir=self.folder / "files") as scratch:
            written = Path(scratch) / "prediction.nii.gz"
            if encoded is None:
                write_label_file(label_map, affine, written)
            else:
                written.write_bytes(encoded)
            stored = self._store(written)
        entry = {"time": _iso(now), "ts": round(now, 3), "model_version": model_version, "file": stored,
                 "values": {str(v): name for v, name in sorted(values.items())}, "annotator": annotator}
        with self._lock:
            record = self.record(image)
            record["served"][annotator] = entry
            self._write(record)
        return entry

    def review(self, image: str, reviewer: str, decisions: Mapping[str, tuple[str, str]],
               version: int | None = None, now: float | None = None) -> list[dict]:
        """Record ``reviewer``'s decisions (class name → (``approved`` or ``rejected``, comment)) on
        ``version`` of ``image`` (default: its final version); returns the reviews recorded."""
        now = time.time() if now is None else now
        with self._lock:
            record = self.record(image)
            version = record["final"] if version is None else version
            entry = next((v for v in record["versions"] if v["version"] == version), None)
            if entry is None:
                raise UniversalError(f"image '{image}' has no label version {version} to review; save a label first")
            unknown = sorted(set(decisions) - set(entry["values"].values()))
            if unknown:
                raise UniversalError(f"version {version} of '{image}' names no class {', '.join(unknown)}; its "
                                     f"classes: {', '.join(sorted(set(entry['values'].values())))}")
            reviews = [{"version": version, "class": name, "state": state, "reviewer": reviewer, "time": _iso(now),
                        "comment": comment} for name, (state, comment) in sorted(decisions.items())]
            record["reviews"].extend(reviews)
            self._write(record)
        return reviews

    def make_final(self, image: str, version: int) -> None:
        """Make a kept version the image's accepted one."""
        with self._lock:
            record = self.record(image)
            self.version(image, version)
            record["final"] = version
            self._write(record)

    # -- inside --

    def _record_path(self, image: str) -> Path:
        return self.folder / "images" / f"{plain_name(image, 'image id')}.json"

    def _write(self, record: dict) -> None:
        atomic_write_text(self._record_path(record["image"]), json.dumps(record, indent=1) + "\n")

    def _store(self, path: Path) -> str:
        """Copy ``path`` to ``files/<its sha256><its suffix>`` (once); returns that name."""
        suffix = next((s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)), None)
        if suffix is None:
            raise UniversalError(f"{path.name}: a label file is NIfTI or NRRD ({', '.join(IMAGE_SUFFIXES)})")
        name = f"{sha256_of(path)}{suffix}"
        target = self.folder / "files" / name
        if not target.is_file():
            with path.open("rb") as source, atomic_open(target) as stream:
                shutil.copyfileobj(source, stream, 1 << 20)
        return name

    def _effort(self, served: Mapping, labels: np.ndarray, values: Mapping[int, str]) -> dict | None:
        prediction, _ = read_label_map(self.file(served))
        if prediction.shape != labels.shape:
            return None
        predicted = {int(v): name for v, name in served["values"].items()}
        return class_effort(prediction, predicted, labels, values)


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")
