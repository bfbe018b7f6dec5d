"""Training on partially labelled datasets: dataset templates and datalists, per-class targets,
crop sampling, the partial-label loss, metrics, the loop and its run log, and several processes."""

from universal.training.loop import TrainResult, train
from universal.training.settings import NewClass, TrainSettings

__all__ = ["NewClass", "TrainResult", "TrainSettings", "train"]
