"""Pre-labelling in the background (:mod:`universal.serving.prelabel`) over the app's datastore: the
unlabelled images, those *Next Sample* served last first, then the most uncertain, then by id (none
while a fine-tuning runs); each segmented as an ``/infer`` without parameters would, and its answer
kept in ``<team>/prelabel-cache`` under a key of the image's content, the model and the settings, so
that ``/infer`` answers from it."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import universal
from universal.io.labels import write_label_file
from universal.io.scans import image_suffix
from universal.serving.prelabel import Cancelled, InteractiveFirst, Prelabeller
from universal.serving.prelabel_cache import CachedAnswer, PrelabelCache
from universal.serving.training_status import alive
from universal.synth import calibration_windows

from .conf import RESULT_COMPRESS, RESULT_DTYPE
from .state import AppState

log = logging.getLogger(__name__)

CACHE_FOLDER = "prelabel-cache"  # in the team's folder
WANTED_KEPT = 32  # images Next Sample served lately, which go first
TRAINING_POLL_S = 5.0  # while a fine-tuning runs, look again after this long


class AppPrelabel:
    """The cache ``/infer`` reads, the gate it holds while it runs, and (when ``enabled``) the worker
    that fills the cache while no request runs. ``datastore()`` gives the app's datastore."""

    def __init__(self, state: AppState, datastore: Callable[[], object], enabled: bool):
        self.state, self.datastore = state, datastore
        self.settings = universal.InferenceSettings(device=state.conf.device)  # an /infer without parameters
        self.cache = PrelabelCache(state.team.folder / CACHE_FOLDER, int(state.conf.prelabel_cache_mb * 2**20))
        self.gate = InteractiveFirst()
        self.wanted: list[str] = []
        self._lock = threading.Lock()
        self.worker = Prelabeller(self.cache, self.gate, self.pending, self.compute) if enabled else None

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
            log.info("pre-labelling in the background: on (cache %s, at most %d MB)", self.cache.folder,
                     self.state.conf.prelabel_cache_mb)

    def status(self) -> dict:
        return self.worker.status() if self.worker is not None else {"enabled": False}

    def want(self, image_id: str) -> None:
        """``image_id`` was just served by *Next Sample*: pre-label it first."""
        with self._lock:
            self.wanted = [image_id, *(i for i in self.wanted if i != image_id)][:WANTED_KEPT]
        if self.worker is not None:
            self.worker.nudge()

    def model_name(self) -> str:
        """Names the weights in use: their published version and their file's identity."""
        return f"{self.state.model_key()}|{self.state.source_key()}"

    def lookup(self, image: str, settings: universal.InferenceSettings) -> CachedAnswer | None:
        """The kept answer for ``image`` (a path) with the model in use and ``settings``, if any."""
        if settings != self.settings or not self.state.ready or not self.cache.folder.is_dir():
            return None
        return self.cache.get(self.cache.key(image, self.model_name(), settings))

    def training(self) -> bool:
        """Whether a fine-tuning runs (its process has the CPU or GPU first)."""
        running = self.state.store.training.read().get("running")
        return bool(running) and alive(running.get("pid"))

    def pending(self) -> Iterator[tuple[str, str]]:
        """The unlabelled images with their cache keys, most wanted first; none while a fine-tuning runs."""
        if not self.state.ready or self.training():
            return
        datastore = self.datastore()
        images = set(datastore.get_unlabeled_images())
        with self._lock:
            first = [i for i in self.wanted if i in images]
        scores = {i: datastore.get_image_info(i).get("uncertainty") for i in images - set(first)}
        rest = sorted(scores, key=lambda i: (scores[i] is None, -(scores[i] or 0), i))
        model = self.model_name()
        for image_id in [*first, *rest]:
            uri = datastore.get_image_uri(image_id)
            if uri:
                yield image_id, self.cache.key(uri, model, self.settings)

    def compute(self, image_id: str, key: str, before_step: Callable[[], None]) -> None:
        """Segment ``image_id`` and keep its answer under ``key``, stepping aside before each step (reading,
        preparing, each window, post-processing, keeping) for interactive requests and while a fine-tuning
        runs; :class:`Cancelled` once the model in use changes (its answer would be stale)."""
        model, _ = self.state.serving(self.settings.device)
        name = self.model_name()
        uri = self.datastore().get_image_uri(image_id)
        if self.cache.key(uri, name, self.settings) != key:
            raise Cancelled

        def before() -> None:
            while self.training():
                before_step()
                time.sleep(TRAINING_POLL_S)
            if self.model_name() != name:
                raise Cancelled
            before_step()

        segmenter = universal.Segmenter(model, self.settings, progress=False, calibration=calibration_windows,
                                        before_window=before)
        before()
        scan = universal.read_scan(uri, max_voxels=self.state.conf.max_image_voxels)
        before()
        prepared = segmenter.plan.prepare(scan)
        prediction = segmenter.predict(prepared)
        before()
        result = segmenter.plan.finish(prepared, prediction)
        before()
        with tempfile.TemporaryDirectory() as scratch:  # the file a request in the image's own type gets
            encoded = write_label_file(result.label_map, scan.affine, Path(scratch) / f"answer{image_suffix(uri)}",
                                       dtype=RESULT_DTYPE, compress=RESULT_COMPRESS)
            self.cache.put(key, result.label_map, scan.affine, result.report, encoded)
