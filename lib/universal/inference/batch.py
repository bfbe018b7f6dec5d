"""Files in, files out: :func:`segment` segments many scans with one model, in this process or on
Ray (:mod:`universal.inference.on_ray`), and writes a case folder per scan and ``summary.csv``.

A case runs as the three steps of :class:`~universal.inference.jobs.CaseJob`, which both engines
run, so their outputs are the same. A case that fails is reported and the others go on.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from universal.catalog import ClassKey
from universal.errors import UniversalError
from universal.inference.cases import CaseInput, list_cases
from universal.inference.jobs import CASE_ERRORS, CaseJob, CaseOutcome
from universal.inference.result import REPORT_NAME
from universal.inference.segmenter import Segmenter
from universal.inference.settings import InferenceSettings
from universal.inference.stages import CasePlan
from universal.io.atomic import atomic_write_text
from universal.nets.model import UniversalModel
from universal.nets.registry import DEFAULT_BACKBONE
from universal.nets.runtime import Calibration
from universal.progress import progress_bar
from universal.quality import SEVERITIES

ENGINES = ("local", "ray")
SUMMARY_NAME = "summary.csv"


def segment(
    inputs: str | Path | CaseInput | Sequence[str | Path | CaseInput],
    output: str | Path,
    *,
    model: str | Path | UniversalModel = DEFAULT_BACKBONE,
    classes: Iterable[ClassKey] | None = None,
    masks: bool = False,
    resume: bool = False,
    series: str | None = None,
    dicom_seg: bool = False,
    preview: bool = False,
    settings: InferenceSettings | None = None,
    progress: bool = True,
    on_case: Callable[[CaseOutcome], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    calibration: Calibration | None = None,
) -> list[CaseOutcome]:
    """Segment CT scans into ``output/<case>/`` and list every case in ``output/summary.csv``.

    ``inputs``: NIfTI or NRRD files, DICOM series folders, folders of scans, ``.txt``/``.csv`` lists of
    them (:func:`universal.inference.cases.list_cases`). Each case folder receives
    ``segmentation.nii.gz`` (uint8 label map on the scan's grid), with ``masks``
    ``masks/<Class Name>.nii.gz``, with ``dicom_seg`` (DICOM series inputs only) ``segmentation.dcm``, a
    DICOM SEG referencing the series, with ``preview`` ``preview.png`` (axial, coronal and sagittal slices
    with the classes in their colours), and ``report.json`` last. The model (a checkpoint path, a
    released name, or a loaded model) is loaded once (per network worker). A case that fails is
    reported in its outcome and the others go on; with ``resume``, cases whose report exists are
    skipped. ``on_case`` is called with each :class:`CaseOutcome` as it completes.

    ``engine``: ``"local"`` (this process) or ``"ray"``: reading and pre-processing, the network and
    post-processing and writing run as Ray tasks and actors (:mod:`universal.inference.on_ray`), on
    the cluster at ``address`` (default: a Ray instance started here), with ``workers`` network
    workers (default: one per GPU, or one on the CPUs). Outcomes are returned in input order.
    ``calibration``: the windows an int8 trunk is quantized on (as for :class:`Segmenter`).
    """
    from universal.nets.checkpoint import load_model

    if engine not in ENGINES:
        raise UniversalError(f"engine must be {' or '.join(ENGINES)}, got {engine!r}")
    if workers is not None and workers < 1:
        raise UniversalError(f"workers must be at least 1, got {workers}")
    items = [inputs] if isinstance(inputs, str | Path | CaseInput) else list(inputs)
    cases = list_cases(items, series)
    files = [str(case.path) for case in cases if not case.path.is_dir()]
    if dicom_seg and files:
        raise UniversalError(f"a DICOM SEG is written for DICOM series (folders) only; not for {', '.join(files[:3])}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UniversalError(f"output {output} is a file; give a folder")
    if engine == "ray":
        from universal.inference.on_ray import import_ray

        import_ray()  # without Ray, say how to install it before the model is loaded
    settings = settings or InferenceSettings()
    loaded = model if isinstance(model, UniversalModel) else load_model(model)
    plan = CasePlan.for_model(loaded, settings)
    job = CaseJob(plan, plan.catalog.select(classes), output, masks, dicom_seg, preview)  # unknown names fail here

    outcomes: dict[str, CaseOutcome] = {}
    todo = []
    for case in cases:
        if resume and (job.folder(case) / REPORT_NAME).is_file():
            outcomes[case.name] = CaseOutcome(case.name, str(case.path), "skipped", job.folder(case))
        else:
            todo.append(case)
    bar = progress_bar(len(cases), "cases", "case", progress and len(cases) > 1, leave=True, initial=len(outcomes))

    def record(outcome: CaseOutcome) -> None:
        outcomes[outcome.name] = outcome
        bar.update(1)
        if on_case is not None:
            on_case(outcome)

    try:
        with bar:
            for case in cases:
                if case.name in outcomes and on_case is not None:
                    on_case(outcomes[case.name])
            if engine == "ray":
                from universal.inference.on_ray import run_on_ray

                run_on_ray(job, todo, loaded, settings, record, address=address, workers=workers,
                           calibration=calibration)
            else:
                run_here(job, todo, Segmenter(loaded, settings, progress=progress, calibration=calibration), record)
    finally:
        ordered = [outcomes.get(case.name) or CaseOutcome(case.name, str(case.path), "not run", job.folder(case))
                   for case in cases]
        write_summary(output / SUMMARY_NAME, ordered)
    return ordered


def run_here(job: CaseJob, cases: Sequence[CaseInput], segmenter: Segmenter,
             record: Callable[[CaseOutcome], None]) -> None:
    """Segment ``cases`` one after the other in this process."""
    for case in cases:
        started = time.perf_counter()
        try:
            prepared = job.read(case)
            outcome = job.write(case, prepared, segmenter.predict(prepared))
        except CASE_ERRORS as error:
            outcome = job.failure(case, error, time.perf_counter() - started)
        record(outcome)


def write_summary(path: Path, outcomes: Sequence[CaseOutcome]) -> None:
    """``summary.csv``: a row per case (case, source, status, seconds, its anatomy findings by severity,
    error), written in one step."""
    text = io.StringIO()
    table = csv.writer(text, lineterminator="\n")
    table.writerow(["case", "source", "status", "seconds", *(f"findings_{s}" for s in SEVERITIES), "error"])
    for outcome in outcomes:
        found = [outcome.findings.get(severity, "") for severity in SEVERITIES]
        table.writerow([outcome.name, outcome.source, outcome.status, f"{outcome.seconds:.3f}", *found, outcome.error])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text.getvalue())
