"""The outcome of the last fine-tuning of a model folder (``train_stats.json``), which MONAI Label's
clients read as ``train_stats``: while a fine-tuning runs it holds a note of it beside the last
outcome; the outcome replaces the note, and a note whose process is gone is reported as failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from universal.io.atomic import atomic_write_text


class TrainingStatus:
    """The status file at ``path`` (a JSON object; ``{}`` before the first fine-tuning)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def write(self, stats: dict) -> None:
        atomic_write_text(self.path, json.dumps(stats, indent=2) + "\n")

    def running(self, details: dict) -> None:
        """Note, beside the last outcome, that this process is fine-tuning (``details``: what it was asked)."""
        self.write({**self.read(), "running": {"pid": os.getpid(), **details}})

    def failed(self, reason: str) -> None:
        """Replace this process's note with ``failed``: when it started, and why."""
        stats = self.read()
        running = stats.pop("running", {})
        self.write({**stats, "failed": {"start_ts": running.get("start_ts"), "reason": reason}})

    def report_lost(self) -> str | None:
        """Report a note whose process is gone as an interrupted, failed fine-tuning; returns what was
        reported, or ``None``."""
        stats = self.read()
        running = stats.pop("running", None)
        if not running or alive(running.get("pid")):
            return None
        stats["interrupted"] = {**running, "status": "FAILED",
                                "reason": "the training process stopped before it finished (killed, or the server "
                                          "stopped); nothing was published from it: train again"}
        self.write(stats)
        return f"a fine-tuning (process {running.get('pid')}) stopped before it finished; reported as failed"


def alive(pid) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
