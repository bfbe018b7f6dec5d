"""Answers computed ahead of the request: a bounded folder of label maps and reports, one entry per
(image content, model, inference settings).

    CACHE/<key>/answer.npz    label_map (uint8 (X, Y, Z), catalogue ids, on the scan's grid), affine (4, 4)
    CACHE/<key>/report.json   the result's report (volumes, findings, timings of the run that computed it)
    CACHE/<key>/encoded.<suffix>  optionally, the answer already written as a file (sent as it is)

An entry is written in a temporary folder and renamed into place, so a reader sees it whole or not at
all, also after a crash; the least recently used entries go when the folder outgrows its bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from universal.inference.settings import InferenceSettings

ANSWER, REPORT, ENCODED = "answer.npz", "report.json", "encoded"
DIGESTS_KEPT = 4096  # image digests remembered by (path, size, modification time)
STALE_S = 3600  # an entry still being written after this long was left by a crash


@dataclass(frozen=True)
class Answer:
    """A segmentation to send: ``label_map`` uint8 (X, Y, Z), catalogue ids on the scan's grid, its
    ``affine`` (4, 4), the ``report``, and ``encoded``, the answer already written as a file, if it was."""

    label_map: np.ndarray
    affine: np.ndarray
    report: dict
    encoded: Path | None = None


class CachedAnswer:
    """An :class:`Answer` kept in the cache's entry ``folder``; its label map is read when first used
    (an answer sent as its kept file needs none)."""

    def __init__(self, folder: Path, affine: np.ndarray, report: dict, encoded: Path | None):
        self.folder, self.affine, self.report, self.encoded = folder, affine, report, encoded

    @cached_property
    def label_map(self) -> np.ndarray:
        with np.load(self.folder / ANSWER) as arrays:
            return arrays["label_map"]


class PrelabelCache:
    """The cache at ``folder``, holding at most ``max_bytes`` (the least recently used entries go)."""

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._digests: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, image: str | Path, model: str, settings: InferenceSettings) -> str:
        """The entry name of ``image``'s answer (a file, or a DICOM series folder: its content) from the
        model named ``model`` with ``settings``."""
        document = json.dumps({"image": self.digest(image), "model": model, "settings": asdict(settings)},
                              sort_keys=True)
        return hashlib.sha256(document.encode()).hexdigest()[:32]

    def digest(self, image: str | Path) -> str:
        """SHA-256 of the image's bytes (a folder's files in name order), remembered while the files'
        sizes and modification times stay the same."""
        files = sorted(p for p in Path(image).rglob("*") if p.is_file()) if Path(image).is_dir() else [Path(image)]
        stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        with self._lock:
            if stamp in self._digests:
                self._digests.move_to_end(stamp)
                return self._digests[stamp]
        hasher = hashlib.sha256()
        for path in files:
            if Path(image).is_dir():  # a series: its files' names are part of it
                hasher.update(str(path.relative_to(image)).encode())
            with path.open("rb") as stream:
                while block := stream.read(1 << 22):
                    hasher.update(block)
        with self._lock:
            self._digests[stamp] = hasher.hexdigest()
            while len(self._digests) > DIGESTS_KEPT:
                self._digests.popitem(last=False)
        return hasher.hexdigest()

    def __contains__(self, key: str) -> bool:
        return (self.folder / key / REPORT).is_file()

    def get(self, key: str) -> CachedAnswer | None:
        """The answer kept under ``key`` (marked as used now), or ``None``."""
        entry = self.folder / key
        try:
            with np.load(entry / ANSWER) as arrays:  # reads the affine's member alone
                affine = arrays["affine"]
            report = json.loads((entry / REPORT).read_text())
        except (OSError, ValueError, KeyError):
            return None
        with contextlib.suppress(OSError):
            os.utime(entry)
        return CachedAnswer(entry, affine, report, next(entry.glob(f"{ENCODED}.*"), None))

    def put(self, key: str, label_map: np.ndarray, affine: np.ndarray, report: dict,
            encoded: Path | None = None) -> None:
        """Keep an answer under ``key`` (with ``encoded``, the answer written as a file, if given), then
        drop the least recently used entries beyond the bound."""
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.folder))
        try:
            np.savez_compressed(staging / ANSWER, label_map=label_map.astype(np.uint8), affine=affine)
            (staging / REPORT).write_text(json.dumps(report))
            if encoded is not None:
                suffix = encoded.name[encoded.name.index("."):] if "." in encoded.name else ""
                shutil.copyfile(encoded, staging / f"{ENCODED}{suffix}")
            if (self.folder / key).exists():
                shutil.rmtree(self.folder / key, ignore_errors=True)
            staging.rename(self.folder / key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.evict()

    def entries(self) -> list[tuple[Path, int, float]]:
        """(folder, bytes, last use) of each whole entry."""
        found = []
        for entry in self.folder.iterdir() if self.folder.is_dir() else ():
            if entry.name.startswith(".") or not (entry / REPORT).is_file():
                continue
            with contextlib.suppress(OSError):
                found.append((entry, sum(f.stat().st_size for f in entry.iterdir()), entry.stat().st_mtime))
        return found

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> None:
        """Remove the least recently used entries until the cache fits its bound, and leftovers of writes
        a crash interrupted."""
        for leftover in self.folder.glob(".incoming-*"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < time.time() - STALE_S:
                    shutil.rmtree(leftover, ignore_errors=True)
        entries = sorted(self.entries(), key=lambda item: item[2])
        total = sum(size for _, size, _ in entries)
        while entries and total > self.max_bytes:
            entry, size, _ = entries.pop(0)
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
