"""Files in, files out: :func:`segment` reads each scan, segments it with one loaded model and
writes its case folder; a case that fails is reported and the others go on."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from universal.catalog import ClassKey
from universal.errors import UniversalError
from universal.inference.segmenter import REPORT_NAME, InferenceSettings, Segmenter
from universal.io.dicom import read_series
from universal.io.scans import case_name, read_scan, select_ct_series
from universal.nets.model import UniversalModel
from universal.nets.registry import DEFAULT_BACKBONE
from universal.progress import progress_bar


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one input: ``status`` is ``"done"``, ``"skipped"`` (finished before, with
    ``resume``) or ``"failed"`` (``error`` says why)."""

    name: str
    source: str
    status: str
    folder: Path
    error: str = ""
    seconds: float = 0.0


def segment(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    model: str | Path | UniversalModel = DEFAULT_BACKBONE,
    classes: Iterable[ClassKey] | None = None,
    masks: bool = False,
    resume: bool = False,
    series: str | None = None,
    dicom_seg: bool = False,
    settings: InferenceSettings | None = None,
    progress: bool = True,
    on_case=None,
) -> list[CaseOutcome]:
    """Segment CT files (NIfTI, NRRD, DICOM series folders) into ``output/<case>/``.

    Each case folder receives ``segmentation.nii.gz`` (uint8 label map on the scan's grid),
    optionally ``masks/<Class Name>.nii.gz``, with ``dicom_seg`` (DICOM series inputs only)
    ``segmentation.dcm``, a DICOM SEG referencing the series, and ``report.json``. The model (a checkpoint path, a
    released name, or a loaded model) is loaded once. A case that fails is reported in its outcome
    and the others go on; with ``resume``, cases whose report exists are skipped. ``on_case`` is
    called with each :class:`CaseOutcome` as it completes.
    """
    from universal.nets.checkpoint import load_model

    paths = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    if not paths:
        raise UniversalError("no input scans given")
    names = [case_name(path) for path in paths]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UniversalError(f"several inputs share the case name {', '.join(repeated)}; their outputs would "
                             "overwrite each other, so segment them into different output folders")
    files = [str(path) for path in paths if not path.is_dir()]
    if dicom_seg and files:
        raise UniversalError(f"a DICOM SEG is written for DICOM series (folders) only; not for {', '.join(files[:3])}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UniversalError(f"output {output} is a file; give a folder")
    loaded = model if isinstance(model, UniversalModel) else load_model(model)
    segmenter = Segmenter(loaded, settings, progress=progress)
    wanted = segmenter.catalog.select(classes)  # unknown names fail before any case is read
    outcomes = []
    with progress_bar(len(paths), "cases", "case", progress and len(paths) > 1, leave=True) as cases:
        for path, name in zip(paths, names, strict=True):
            started, folder = time.perf_counter(), output / name
            if resume and (folder / REPORT_NAME).is_file():
                outcome = CaseOutcome(name, str(path), "skipped", folder)
            else:
                try:
                    scan = read_scan(path, series=series)
                    read_seconds = time.perf_counter() - started
                    result = segmenter(scan, wanted)
                    result.report["timings_s"]["read"] = round(read_seconds, 3)
                    source = read_series(path, select_ct_series(path, series)) if dicom_seg else None
                    result.save(folder, masks=masks, dicom_series=source)
                    outcome = CaseOutcome(name, str(path), "done", folder, seconds=time.perf_counter() - started)
                except (UniversalError, RuntimeError, MemoryError, OSError) as error:
                    outcome = CaseOutcome(name, str(path), "failed", folder, describe_error(error),
                                          time.perf_counter() - started)
            outcomes.append(outcome)
            if on_case is not None:
                on_case(outcome)
            cases.update(1)
    return outcomes


def describe_error(error: Exception) -> str:
    """One line: the library's own message, or the type and first line of any other error."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return first if isinstance(error, UniversalError) else f"{type(error).__name__}: {first}"
