"""Pre-labelling in the background: while no annotator waits, segment the images that will be asked
for next and keep the answers (:class:`PrelabelCache`).

Interactive work always goes first: a request holds :meth:`InteractiveFirst.interactive` while it
runs, and the background segmentation calls :meth:`InteractiveFirst.wait_until_idle` before each of
its steps (reading, preparing, each window, post-processing, keeping the answer), so a request waits
at most for the one step already running. A request that needs what the background is making (an int8
trunk being calibrated) steps aside while it waits for it (:meth:`InteractiveFirst.stepped_aside`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from universal.nets.model import InputSpec
from universal.nets.openvino import Calibration
from universal.serving.prelabel_cache import PrelabelCache

log = logging.getLogger(__name__)

POLL_S = 30.0  # with nothing to do, look again after this long (or when nudged)


class Cancelled(Exception):
    """The work in progress is no longer wanted (a new model was published, the server stops)."""


class InteractiveFirst:
    """Counts the interactive requests in flight; background work waits while there is one."""

    def __init__(self):
        self._running = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def interactive(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    @contextlib.contextmanager
    def stepped_aside(self) -> Iterator[None]:
        """Inside :meth:`interactive`: while a request waits for background work, that work goes on."""
        with self._idle:
            self._running -= 1
            self._idle.notify_all()
        try:
            yield
        finally:
            with self._idle:
                self._running += 1

    @property
    def busy(self) -> bool:
        return self._running > 0

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until no interactive request runs; whether that happened within ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


class StepwiseWindows(Sequence):
    """Calibration windows that call ``before_step()`` before each is handed out, so that a calibration
    in the background waits for interactive requests (or stops) between windows."""

    def __init__(self, windows: Sequence[np.ndarray], before_step: Callable[[], None]):
        self.windows, self.before_step = windows, before_step

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[np.ndarray]:
        for window in self.windows:
            self.before_step()
            yield window

    def __getitem__(self, index):
        if isinstance(index, slice):
            return StepwiseWindows(self.windows[index], self.before_step)
        self.before_step()
        return self.windows[index]


def stepwise(calibration: Calibration, before_step: Callable[[], None]) -> Calibration:
    """``calibration`` whose windows call ``before_step()`` as they are used (:class:`StepwiseWindows`)."""
    def windows(spec: InputSpec, count: int, seed: int) -> Sequence[np.ndarray]:
        return StepwiseWindows(calibration(spec, count, seed), before_step)
    return windows


class Prelabeller:
    """A daemon thread that takes, one at a time, the first of ``pending()`` (image ids with their cache
    key, most wanted first) whose key is not in ``cache`` and calls ``compute(image, key, before_step)``,
    which keeps the answer in the cache and calls ``before_step()`` before each step it takes (it
    waits for interactive requests, and raises :class:`Cancelled` once the thread is stopped; ``compute``
    raises it too when its answer is no longer wanted). An image that fails is logged and skipped until
    its key changes. ``prepare(before_step)``, when given, runs before each image is taken, stepping
    aside the same way: work that goes first (a new model's int8 trunk), returning at once when there
    is none."""

    def __init__(self, cache: PrelabelCache, gate: InteractiveFirst,
                 pending: Callable[[], Iterable[tuple[str, str]]],
                 compute: Callable[[str, str, Callable[[], None]], None],
                 prepare: Callable[[Callable[[], None]], None] | None = None):
        self.cache, self.gate = cache, gate
        self.pending, self.compute, self.prepare = pending, compute, prepare
        self.done = 0
        self.failed: dict[tuple[str, str], str] = {}
        self.current: str | None = None
        self.queued = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prelabel", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def nudge(self) -> None:
        """Look for work now (new images, a new model)."""
        self._wake.set()

    def status(self) -> dict:
        entries = self.cache.entries()
        return {"enabled": True, "queued": self.queued, "done": self.done, "failed": len(self.failed),
                "current": self.current, "cached": len(entries),
                "cache_mb": round(sum(size for _, size, _ in entries) / 2**20, 1),
                "cache_limit_mb": round(self.cache.max_bytes / 2**20)}

    def _next(self) -> tuple[str, str] | None:
        todo = [(image, key) for image, key in self.pending()
                if key not in self.cache and (image, key) not in self.failed]
        self.queued = len(todo)
        return todo[0] if todo else None

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self.gate.wait_until_idle()
            if self.prepare is not None:
                self._prepare()
            try:
                found = self._next()
            except Exception as error:  # the datastore may be changing: try again later
                log.warning("pre-labelling: cannot list the images to pre-label: %s", error)
                found = None
            if found is None:
                self._wake.wait(POLL_S)
                self._wake.clear()
                continue
            self._run(*found)

    def _before_step(self) -> None:
        if self._stopped.is_set():
            raise Cancelled
        self.gate.wait_until_idle()

    def _prepare(self) -> None:
        try:
            self.prepare(self._before_step)
        except Cancelled:
            log.info("background preparation stopped: no longer wanted")
        except Exception as error:  # pre-labelling goes on without it
            log.warning("background preparation failed: %s", error)

    def _run(self, image: str, key: str) -> None:
        self.current = image
        started = time.perf_counter()
        try:
            self.compute(image, key, self._before_step)
            self.done += 1
            log.info("pre-labelled %s in %.1f s", image, time.perf_counter() - started)
        except Cancelled:
            log.info("pre-labelling of %s stopped: no longer wanted", image)
        except Exception as error:  # one image's failure must not stop the others
            self.failed[(image, key)] = str(error)
            log.warning("pre-labelling of %s failed, skipped: %s", image, error)
        finally:
            self.current = None
