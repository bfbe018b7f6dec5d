"""A training run's folder: the one contract between the training loop, its log and whoever reads a
run (resuming it, fine-tuning, ``universal segment --model RUN/model.pt``)::

    RUN/checkpoint.pt   resumable state (the model in the own format, optimiser, schedule, step)
    RUN/model.pt        the latest model in the own format
    RUN/metrics.csv     step, learning rate, loss, seconds per step
    RUN/validation.csv  step, class, mean Dice over the validation cases that annotate it
    RUN/tensorboard/    the same figures for TensorBoard (when it is installed)
    RUN/run.json        the datalist, the settings, the classes added and how
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT, MODEL, METRICS, VALIDATION, TENSORBOARD, RUN_INFO = (
    "checkpoint.pt", "model.pt", "metrics.csv", "validation.csv", "tensorboard", "run.json")
METRICS_COLUMNS = ("step", "learning_rate", "loss", "seconds")
VALIDATION_COLUMNS = ("step", "class", "dice")


class RunFolder:
    """The files of the run at ``path``: ``checkpoint``, ``model``, ``metrics``, ``validation``,
    ``tensorboard`` and ``info`` (``run.json``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint, self.model, self.metrics, self.validation, self.tensorboard, self.info = (
            self.path / name for name in (CHECKPOINT, MODEL, METRICS, VALIDATION, TENSORBOARD, RUN_INFO))
