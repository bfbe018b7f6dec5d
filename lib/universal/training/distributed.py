"""Training in several processes (one per GPU) with ``torchrun``.

:func:`train_in_processes` writes one launch record (``RUN/launch.json``: the datalist, the starting
model, the whole :class:`~universal.training.loop.TrainSettings` record and the classes to add) and starts
``torchrun`` on this module; every process reads the record, joins the process group and runs
:func:`~universal.training.loop.train` with exactly those settings. Process 0 writes ``RUN/train/``.

    python -m torch.distributed.run --standalone --nproc-per-node N -m universal.training.distributed RUN/launch.json
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from universal.errors import UniversalError
from universal.io.atomic import atomic_write_text
from universal.nets.checkpoint import load_model, save_model
from universal.nets.model import UniversalModel
from universal.training.datasets import Datalist
from universal.training.run_folder import RunFolder

log = logging.getLogger(__name__)

LAUNCH_FORMAT = "universal-launch"


@contextlib.contextmanager
def process_group():
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1; NCCL on GPUs, else gloo)
    and leave it afterwards; a single process does nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def train_in_processes(datalist: Datalist, run_dir: str | Path, model: UniversalModel, settings,
                       processes: int, add_classes: Sequence = ()) -> UniversalModel:
    """Train ``model`` on ``datalist`` in ``processes`` processes on this machine; returns the trained
    model. ``settings`` (:class:`~universal.training.loop.TrainSettings`) and ``add_classes``
    (:class:`~universal.training.loop.NewClass`) reach every process whole."""
    run_dir = Path(run_dir)
    record = {
        "format": LAUNCH_FORMAT,
        "datalist": str(datalist.save(run_dir / "datalist.json")),
        "model": str(save_model(model, run_dir / "start.pt")),
        "output": str(run_dir / "train"),
        "settings": settings.to_record(),
        "add_classes": [new.to_record() for new in add_classes],
    }
    launch = run_dir / "launch.json"
    atomic_write_text(launch, json.dumps(record, indent=2) + "\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", __name__, str(launch)]
    log.info("training in %d processes: %s", processes, " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise UniversalError(f"training in {processes} processes failed (exit code {completed.returncode}); "
                             "see the log above")
    return load_model(RunFolder(record["output"]).model)


def run_launch(path: str | Path) -> None:
    """One process's part of a launch record written by :func:`train_in_processes`."""
    from universal.training.loop import train
    from universal.training.settings import NewClass, TrainSettings

    record = json.loads(Path(path).read_text())
    if record.get("format") != LAUNCH_FORMAT:
        raise UniversalError(f"{path} is not a launch record written by universal.training.distributed")
    with process_group():
        train(record["datalist"], record["output"], model=record["model"], progress=False,
              settings=TrainSettings.from_record(record["settings"]),
              add_classes=[NewClass.from_record(new) for new in record["add_classes"]])


if __name__ == "__main__":
    run_launch(sys.argv[1])
