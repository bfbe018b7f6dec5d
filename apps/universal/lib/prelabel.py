"""Pre-labelling in the background (:mod:`universal.serving.prelabel`) over the app's datastore: the
unlabelled images, those *Next Sample* served last first, then the most uncertain, then by id (none
while a fine-tuning runs); each segmented as an ``/infer`` without parameters would, and its answer
kept in ``<team>/prelabel-cache`` under a key of the image's content, the model and the settings, so
that ``/infer`` answers from it. Once an annotator has asked for int8 (a mark in the cache's folder keeps
it over restarts), each new model's int8 trunk is calibrated in the background before pre-labelling goes
on, so that the next int8 request does not wait for it; once it is ready, each image is pre-labelled in
int8 too, after its default answer."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import universal
from universal.devices import INT8, resolve_device
from universal.io.atomic import atomic_write_text
from universal.io.labels import write_label_file
from universal.io.scans import image_suffix
from universal.nets.openvino import openvino_trunk
from universal.serving.prelabel import Cancelled, InteractiveFirst, Prelabeller, stepwise
from universal.serving.prelabel_cache import CachedAnswer, PrelabelCache
from universal.serving.training_status import alive
from universal.synth import calibration_windows

from .conf import RESULT_COMPRESS, RESULT_DTYPE
from .state import AppState

log = logging.getLogger(__name__)

CACHE_FOLDER = "prelabel-cache"  # in the team's folder
INT8_ASKED = "int8-asked"  # in the cache's folder: an annotator asked for int8 (kept over restarts)
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
        self.int8_wanted = (self.cache.folder / INT8_ASKED).is_file()  # an annotator asked for int8
        self.int8_prepared: dict[str, str] = {}  # model name → how its background int8 preparation went
        self.worker = Prelabeller(self.cache, self.gate, self.pending, self.compute,
                                  prepare=self.prepare_int8) if enabled else None

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
            log.info("pre-labelling in the background: on (cache %s, at most %d MB)", self.cache.folder,
                     self.state.conf.prelabel_cache_mb)

    def status(self) -> dict:
        if self.worker is None:
            return {"enabled": False}
        int8 = self.int8_prepared.get(self.model_name(), "queued") if self.int8_wanted else "not asked"
        return {**self.worker.status(), "int8": int8}

    def want(self, image_id: str) -> None:
        """``image_id`` was just served by *Next Sample*: pre-label it first."""
        with self._lock:
            self.wanted = [image_id, *(i for i in self.wanted if i != image_id)][:WANTED_KEPT]
        if self.worker is not None:
            self.worker.nudge()

    def int8_trunk(self, model: universal.UniversalModel) -> None:
        """Load, or calibrate, ``model``'s int8 trunk for a request (which holds the gate); while the
        background calibrates it, wait for that, stepping aside so that it goes on. From now on a new
        model's int8 trunk is prepared in the background."""
        if not self.int8_wanted:
            self.cache.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.cache.folder / INT8_ASKED, "an annotator asked for precision int8\n")
            self.int8_wanted = True
        openvino_trunk(model, INT8, calibration_windows, waiting=self.gate.stepped_aside)

    def prepare_int8(self, before_step: Callable[[], None]) -> None:
        """Calibrate the model in use's int8 trunk, once per model, if int8 was asked for and the model
        runs on the CPU; before each calibration window it steps aside and waits out a fine-tuning, and it
        stops once the model changes."""
        if not (self.int8_wanted and self.state.ready) or resolve_device(self.settings.device).type != "cpu":
            return
        name = self.model_name()
        if name in self.int8_prepared:
            return
        model, _ = self.state.serving(self.settings.device)
        self.int8_prepared[name] = "preparing"
        started = time.perf_counter()
        try:
            openvino_trunk(model, INT8, stepwise(calibration_windows, self.stepping_aside(name, before_step)))
        except Cancelled:
            self.int8_prepared[name] = "stopped"
            raise
        except Exception as error:
            self.int8_prepared[name] = f"failed: {error}"
            raise
        self.int8_prepared[name] = "ready"
        log.info("the int8 trunk of model %s is ready (prepared in the background in %.0f s)",
                 self.state.model_key(), time.perf_counter() - started)

    def stepping_aside(self, name: str, before_step: Callable[[], None]) -> Callable[[], None]:
        """What background work for the model ``name`` runs before each step: it waits out a fine-tuning and
        steps aside for interactive requests (``before_step``); :class:`Cancelled` once the model in use
        is no longer ``name``."""

        def before() -> None:
            while self.training():
                before_step()
                time.sleep(TRAINING_POLL_S)
            if self.model_name() != name:
                raise Cancelled
            before_step()

        return before

    def model_name(self) -> str:
        """Names the weights in use: their published version and their file's identity."""
        return f"{self.state.model_key()}|{self.state.source_key()}"

    def kept_settings(self) -> list[universal.InferenceSettings]:
        """The settings whose answers are pre-labelled: those of an ``/infer`` without parameters, and once an
        annotator asked for int8 and the model in use's int8 trunk is ready, the same in int8."""
        int8 = self.int8_wanted and self.int8_prepared.get(self.model_name()) == "ready"
        return [self.settings, *([replace(self.settings, precision=INT8)] if int8 else [])]

    def lookup(self, image: str, settings: universal.InferenceSettings) -> CachedAnswer | None:
        """The kept answer for ``image`` (a path) with the model in use and ``settings``, if any."""
        if not self.state.ready or settings not in self.kept_settings() or not self.cache.folder.is_dir():
            return None
        return self.cache.get(self.cache.key(image, self.model_name(), settings))

    def training(self) -> bool:
        """Whether a fine-tuning runs (its process has the CPU or GPU first)."""
        running = self.state.store.training.read().get("running")
        return bool(running) and alive(running.get("pid"))

    def pending(self) -> Iterator[tuple[str, str]]:
        """The unlabelled images with their cache keys (one per kept settings), most wanted first; none while
        a fine-tuning runs."""
        if not self.state.ready or self.training():
            return
        datastore = self.datastore()
        images = set(datastore.get_unlabeled_images())
        with self._lock:
            first = [i for i in self.wanted if i in images]
        scores = {i: datastore.get_image_info(i).get("uncertainty") for i in images - set(first)}
        rest = sorted(scores, key=lambda i: (scores[i] is None, -(scores[i] or 0), i))
        model, kept = self.model_name(), self.kept_settings()
        for image_id in [*first, *rest]:
            uri = datastore.get_image_uri(image_id)
            for settings in kept if uri else ():
                yield image_id, self.cache.key(uri, model, settings)

    def compute(self, image_id: str, key: str, before_step: Callable[[], None]) -> None:
        """Segment ``image_id`` and keep its answer under ``key``, stepping aside before each step (reading,
        preparing, each window, post-processing, keeping) for interactive requests and while a fine-tuning
        runs; :class:`Cancelled` once the model in use changes (its answer would be stale)."""
        model, _ = self.state.serving(self.settings.device)
        name = self.model_name()
        uri = self.datastore().get_image_uri(image_id)
        settings = next((s for s in self.kept_settings() if self.cache.key(uri, name, s) == key), None)
        if settings is None:
            raise Cancelled
        before = self.stepping_aside(name, before_step)
        segmenter = universal.Segmenter(model, settings, progress=False, calibration=calibration_windows,
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
