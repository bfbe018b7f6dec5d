"""One case of a run of many, as three steps with one contract between them (:class:`CaseJob`):
``read`` (the file to a :class:`~universal.inference.stages.PreparedScan`), the network
(:meth:`~universal.inference.segmenter.Segmenter.predict`) and ``write`` (finish and save the case
folder, ``report.json`` last), and what happened to it (:class:`CaseOutcome`). Both engines, one
process (:mod:`universal.inference.batch`) and Ray (:mod:`universal.inference.on_ray`), run these steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from universal.errors import UniversalError
from universal.inference.cases import CaseInput
from universal.inference.preview import write_preview
from universal.inference.result import PREVIEW_NAME
from universal.inference.stages import IO_STAGES, CasePlan, Prediction, PreparedScan
from universal.io.dicom import read_series
from universal.io.scans import read_scan, select_ct_series
from universal.quality import Finding, counts

# Errors that belong to a case (its file, its size, the device's memory): the case fails, the run goes on.
CASE_ERRORS = (UniversalError, RuntimeError, MemoryError, OSError)


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one input: ``status`` is ``"done"``, ``"skipped"`` (finished before, with
    ``resume``), ``"failed"`` (``error`` says why) or ``"not run"`` (the run stopped first);
    ``seconds`` of work on it; ``findings``: its anatomy findings counted by severity."""

    name: str
    source: str
    status: str
    folder: Path
    error: str = ""
    seconds: float = 0.0
    findings: dict[str, int] = field(default_factory=dict)  # anatomy findings by severity


@dataclass(frozen=True)
class CaseJob:
    """What every case of a run shares: the stages around the network (``plan``), the class ids to
    segment, and where and what to write. Holds no weights, so it travels to workers."""

    plan: CasePlan
    classes: list[int]
    output: Path
    masks: bool = False
    dicom_seg: bool = False
    preview: bool = False

    def read(self, case: CaseInput) -> PreparedScan:
        """Read ``case`` and bring it to model space."""
        started = time.perf_counter()
        scan = replace(read_scan(case.path, series=case.series), name=case.name)
        read_seconds = time.perf_counter() - started
        prepared = self.plan.prepare(scan, self.classes)
        prepared.timings["read"] = round(read_seconds, 3)
        return prepared

    def write(self, case: CaseInput, prepared: PreparedScan, prediction: Prediction) -> CaseOutcome:
        """Finish ``case`` and write its folder; the outcome's seconds are the case's stages' sum."""
        result = self.plan.finish(prepared, prediction)
        source = read_series(case.path, select_ct_series(case.path, case.series)) if self.dicom_seg else None
        result.save(self.folder(case), masks=self.masks, dicom_series=source)
        if self.preview:
            write_preview(prepared.image[0].numpy(), result.model_masks, self.plan.catalog,
                          self.folder(case) / PREVIEW_NAME)
        return CaseOutcome(case.name, str(case.path), "done", self.folder(case),
                           seconds=round(sum(result.report["timings_s"][stage] for stage in ("total", *IO_STAGES)), 3),
                           findings=counts(Finding.from_record(f) for f in result.report["findings"]))

    def failure(self, case: CaseInput, error: Exception | str, seconds: float = 0.0) -> CaseOutcome:
        message = error if isinstance(error, str) else describe_error(error)
        return CaseOutcome(case.name, str(case.path), "failed", self.folder(case), message, round(seconds, 3))

    def folder(self, case: CaseInput) -> Path:
        return self.output / case.name


def describe_error(error: Exception) -> str:
    """One line: the library's own message, or the type and first line of any other error."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return first if isinstance(error, UniversalError) else f"{type(error).__name__}: {first}"
