"""Many scans on Ray: the same three steps as in one process (:class:`~universal.inference.jobs.CaseJob`),
spread so that the network is fed while the CPUs read and write.

- ``read`` (file → model space) and ``write`` (post-process, measure, save) run as Ray tasks on CPU
  workers;
- the network runs in :class:`NetworkWorker` actors, one per GPU (or on the CPUs when there is none),
  each loading the model once from Ray's object store;
- this process reads a few cases ahead (Ray's pattern "Using ray.wait to limit the number of pending
  tasks", ray-project/ray doc/source/ray-core/patterns/limit-pending-tasks.rst), hands each read case
  to a network worker as soon as one is free, and records outcomes as they finish.

Faults: a case whose worker process dies is run again by Ray, at most ``RETRIES`` more times (tasks:
``max_retries``; actors: restarted with ``max_restarts`` and their calls retried with
``max_task_retries``, ray-project/ray doc/source/ray-core/fault_tolerance/tasks.rst and actors.rst).
A network worker holds one case at a time, since a call waiting on a worker that dies loses one of its
tries too: only the case it was running is lost when it keeps failing. A case that fails for its own
reasons (an unreadable file) is caught in its step and reported once, never retried.
"""

from __future__ import annotations

import copy
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence

import torch

from universal.errors import UniversalError
from universal.inference.cases import CaseInput
from universal.inference.jobs import CASE_ERRORS, CaseJob, CaseOutcome, describe_error
from universal.inference.segmenter import Segmenter
from universal.inference.settings import InferenceSettings
from universal.inference.stages import Prediction, PreparedScan
from universal.nets.model import UniversalModel
from universal.nets.runtime import Calibration

RETRIES = 2  # more runs of a case whose worker process died
INSTALL_HINT = "pip install 'universal-model[ray]'"


def import_ray():
    """The ``ray`` module, or a :class:`UniversalError` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise UniversalError(f"the Ray engine needs Ray, which is not installed: {INSTALL_HINT}") from error
    return ray


class NetworkWorker:
    """The network in one Ray actor: the model is loaded once, when the actor starts (and again
    if Ray restarts it)."""

    def __init__(self, model: UniversalModel, settings: InferenceSettings, threads: int,
                 calibration: Calibration | None = None):
        torch.set_num_threads(threads)
        self.segmenter = Segmenter(model, settings, progress=False, calibration=calibration)

    def predict(self, prepared: PreparedScan) -> Prediction | str:
        """The prediction, or the one-line reason the case failed."""
        try:
            return self.segmenter.predict(prepared)
        except CASE_ERRORS as error:
            return describe_error(error)


def read_step(job: CaseJob, case: CaseInput) -> tuple[CaseOutcome | None, PreparedScan | None]:
    """(None, the prepared scan), or (the failure, None) for a case that cannot be read."""
    started = time.perf_counter()
    try:
        return None, job.read(case)
    except CASE_ERRORS as error:
        return job.failure(case, error, time.perf_counter() - started), None


def write_step(job: CaseJob, case: CaseInput, prepared: PreparedScan, prediction: Prediction | str) -> CaseOutcome:
    if isinstance(prediction, str):
        return job.failure(case, prediction)
    try:
        return job.write(case, prepared, prediction)
    except CASE_ERRORS as error:
        return job.failure(case, error)


@functools.cache
def remote_steps():
    """The Ray forms of the steps, made once per process."""
    ray = import_ray()
    read = ray.remote(num_returns=2, max_retries=RETRIES)(read_step)
    write = ray.remote(max_retries=RETRIES)(write_step)
    worker = ray.remote(max_restarts=-1, max_task_retries=RETRIES)(NetworkWorker)
    return read, write, worker


def run_on_ray(job: CaseJob, cases: Sequence[CaseInput], model: UniversalModel, settings: InferenceSettings,
               record: Callable[[CaseOutcome], None], *, address: str | None = None,
               workers: int | None = None, calibration: Calibration | None = None) -> None:
    """Segment ``cases`` on the Ray cluster at ``address`` (a local instance started here when
    ``None``, or the one this process is already connected to), calling ``record`` with each outcome."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # Worker logs stay in Ray's session folder: outcomes carry each case's errors, and the
        # workers' lines would break the progress bar.
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    actors = []
    try:
        if not cases:
            return
        read, write, worker = remote_steps()
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(int(resources.get("CPU", 1)), 1)
        count = workers or max(gpus, 1)
        if gpus:  # more workers than GPUs share them
            options, threads = {"num_gpus": min(1.0, gpus / count), "num_cpus": 1}, 1
        else:  # network workers share the CPUs, and one CPU stays free for reading and writing
            options, threads = {"num_cpus": max(cpus - 1, 1) / count}, max(cpus // count, 1)
        model_ref, job_ref = ray.put(on_cpu(model)), ray.put(job)
        actors = [worker.options(**options).remote(model_ref, settings, threads, calibration) for _ in range(count)]
        idle = set(range(count))
        queue, prepared_cases = deque(cases), deque()
        reading, predicting, writing = {}, {}, {}
        while queue or prepared_cases or reading or predicting or writing:
            while queue and len(reading) + len(prepared_cases) < count + cpus:  # read ahead, a little
                case = queue.popleft()
                status, prepared = read.remote(job_ref, case)
                reading[status] = (case, prepared)
            while prepared_cases and idle:  # one case at a time per worker: a worker's death costs only its case
                case, prepared = prepared_cases.popleft()
                index = idle.pop()
                prediction = actors[index].predict.remote(prepared)
                predicting[prediction] = index
                writing[write.remote(job_ref, case, prepared, prediction)] = case
            (ready,), _ = ray.wait([*reading, *predicting, *writing], num_returns=1, fetch_local=False)
            if ready in reading:
                case, prepared = reading.pop(ready)
                failure = fetch(ray, ready, job, case)
                if failure is None:
                    prepared_cases.append((case, prepared))
                else:
                    record(failure)
            elif ready in predicting:
                idle.add(predicting.pop(ready))
            else:
                record(fetch(ray, ready, job, writing.pop(ready)))
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def on_cpu(model: UniversalModel) -> UniversalModel:
    """``model``, or a copy of it on the CPU (workers may have no GPU); the caller's model stays where it is."""
    if all(tensor.device.type == "cpu" for tensor in model.state_dict().values()):
        return model
    return copy.deepcopy(model).cpu()


def fetch(ray, ref, job: CaseJob, case: CaseInput):
    """The value of a step's ``ref``; a failed outcome when a worker it needed died every time it
    ran (Ray raises that directly, or as the cause of a step that needed the lost result). A step's
    own error (a bug, not a fault of the case) is raised."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:
        cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
        if not isinstance(cause, ray.exceptions.RayError):
            raise
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return job.failure(case, f"its worker stopped {RETRIES + 1} times ({type(cause).__name__}: {reason[:200]})")
