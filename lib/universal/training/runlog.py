"""A run's logs: ``metrics.csv`` (step, learning rate, loss, seconds), ``validation.csv`` (step,
class, Dice) and TensorBoard events, kept consistent with the checkpoint a run resumes from."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Mapping
from pathlib import Path

from universal.io.atomic import atomic_open
from universal.training.run_folder import METRICS_COLUMNS, VALIDATION_COLUMNS, RunFolder


class RunLog:
    """metrics.csv, validation.csv and TensorBoard events of a run; rows past ``step`` (left by an
    interrupted run) are dropped when it resumes."""

    def __init__(self, run: RunFolder, step: int, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        run.path.mkdir(parents=True, exist_ok=True)
        self.metrics, self.scores = run.metrics, run.validation
        keep_rows(self.metrics, list(METRICS_COLUMNS), step)
        keep_rows(self.scores, list(VALIDATION_COLUMNS), step)
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run.tensorboard), purge_step=step + 1)

    def step(self, step: int, rate: float, loss: float, seconds: float) -> None:
        if not self.enabled:
            return
        with self.metrics.open("a", newline="") as stream:
            csv.writer(stream).writerow([step, f"{rate:.6g}", f"{loss:.6f}", f"{seconds:.3f}"])
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", rate, step)

    def validation(self, step: int, scores: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled or not scores:
            return
        with self.scores.open("a", newline="") as stream:
            for name, value in scores.items():
                csv.writer(stream).writerow([step, f"{prefix}{name}", f"{value:.4f}"])
        if self.writer is not None:
            for name, value in scores.items():
                self.writer.add_scalar(f"dice/{prefix}{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def keep_rows(path: Path, header: list[str], step: int) -> None:
    """Rewrite ``path`` keeping its header and the rows of steps up to ``step``."""
    rows = []
    if path.is_file():
        with path.open(newline="") as stream:
            rows = [row for row in list(csv.reader(stream))[1:] if row and int(row[0]) <= step]
    with atomic_open(path, "w") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
