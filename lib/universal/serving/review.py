"""Where each image's classes stand, read from its record (:mod:`universal.serving.label_versions`):
``predicted`` (a prediction was served or pre-labelled, no annotator saved the class), ``corrected``
(the accepted version annotates it, no reviewer decided), ``approved`` or ``rejected`` (a reviewer's
latest decision on the accepted version); and which classes of the accepted label train."""

from __future__ import annotations

from collections.abc import Mapping

STATES = ("predicted", "corrected", "approved", "rejected")
DECISIONS = ("approved", "rejected")
TRAIN_ON = ("final", "approved")  # what trains: the accepted labels but rejected classes, or approved classes only


def final_version(record: Mapping) -> dict | None:
    """The accepted version's record, or ``None``."""
    return next((v for v in record["versions"] if v["version"] == record.get("final")), None)


def decisions(record: Mapping, version: int | None) -> dict[str, dict]:
    """Class name → the latest review of ``version``."""
    found = {}
    for review in record["reviews"]:
        if review["version"] == version:
            found[review["class"]] = review
    return found


def class_states(record: Mapping) -> dict[str, str]:
    """Class name → its state (see the module docstring), for every class the record mentions."""
    states = {name: "predicted" for served in record["served"].values() for name in served["values"].values()}
    final = final_version(record)
    if final is not None:
        decided = decisions(record, final["version"])
        for name in final["values"].values():
            states[name] = decided[name]["state"] if name in decided else "corrected"
    return states


def trainable_classes(record: Mapping | None, train_on: str) -> set[str] | None:
    """The classes of an image's accepted label that may train: with ``train_on`` ``final``, all but the
    rejected ones; with ``approved``, only the approved ones. ``None`` (no limit) for an image without a
    record under ``final``; nothing under ``approved``."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be {' or '.join(TRAIN_ON)}, got {train_on!r}")
    if record is None or final_version(record) is None:
        return None if train_on == "final" else set()
    states = class_states(record)
    allowed = ("approved",) if train_on == "approved" else ("corrected", "approved")
    return {name for name, state in states.items() if state in allowed}


def waiting_for_review(record: Mapping) -> float | None:
    """When the accepted version was saved (epoch seconds), if some of its classes await a decision."""
    final = final_version(record)
    if final is None:
        return None
    decided = decisions(record, final["version"])
    return final["ts"] if set(final["values"].values()) - set(decided) else None
