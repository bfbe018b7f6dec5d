"""The team's product, a labelled dataset: :func:`export_dataset` writes a studies folder's accepted
labels in a layout trainers read (:mod:`universal.export.layouts`), one case at a time, with
``provenance.csv``: each case's source image, annotators, the model version that pre-labelled it,
each class's review state, the annotators' agreement, the anatomy findings and the seconds spent.

Which labels: ``final`` (the accepted label, rejected classes left out), ``approved`` (only the
classes a reviewer approved; the other annotated voxels are nnU-Net's ``ignore`` label), or
``consensus`` (the annotators' majority where two or more labelled an image, else the accepted label).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.export.layouts import Layout
from universal.export.studies import StudiesFolder, Study
from universal.io.atomic import atomic_write_text
from universal.io.labels import read_label_map
from universal.serving.annotations import label_info_values
from universal.serving.label_versions import PRELABEL
from universal.serving.review import class_states, final_version, trainable_classes
from universal.serving.team import consensus_label, latest_by_annotator, lowest_dice

LABELS = ("final", "approved", "consensus")
PROVENANCE = "provenance.csv"
PROVENANCE_COLUMNS = ("case", "source_image", "annotators", "prelabel_model_version", "states", "lowest_dice",
                      "findings", "seconds")


@dataclass(frozen=True)
class ExportSummary:
    """What was written: the dataset's ``folder``, its ``classes`` (values 1..K), the ``cases`` and the
    images ``skipped`` (with why), and the ``seconds`` it took."""

    folder: Path
    classes: list[str]
    cases: list[str]
    skipped: dict[str, str]
    seconds: float


def export_dataset(source: str | Path, output: str | Path, fmt: str = "nnunetv2", *, labels: str = "final",
                   classes: Sequence[str] | None = None, images: Iterable[str] | None = None,
                   name: str = "Universal", dataset_id: int = 501, catalog: Catalog | None = None,
                   on_case: Callable[[str], None] | None = None) -> ExportSummary:
    """Write the studies folder ``source``'s labelled images into ``output`` in format ``fmt``
    (``nnunetv2``, ``msd`` or ``nifti``). ``classes``: the classes to export, numbered 1..K in that
    order (default: every class the exported labels hold, in catalogue order); ``images``: the image
    ids (default: every labelled image). Images without a usable label are skipped and listed."""
    if labels not in LABELS:
        raise UniversalError(f"labels must be {', '.join(LABELS)}, got {labels!r}")
    started = time.perf_counter()
    studies, catalog = StudiesFolder(source), catalog or Catalog.default()
    chosen = list(images) if images is not None else [s for s in studies.ids() if studies.study(s).final]
    wanted = [catalog[name].name for name in classes] if classes else _present_classes(studies, chosen, catalog)
    if not wanted:
        raise UniversalError("no class to export: the images hold no labels, or name no class of the catalogue")
    layout = Layout(fmt, output, wanted, name=name, dataset_id=dataset_id, ignore=labels == "approved")
    rows, skipped = [], {}
    for image_id in chosen:
        study = studies.study(image_id)
        try:
            label_map, affine = _case_labels(studies, study, labels, wanted, layout.ignore_value, catalog)
        except (UniversalError, OSError) as error:
            skipped[image_id] = str(error)
            continue
        layout.add(image_id, study.image, label_map, affine)
        rows.append(_provenance(studies, study))
        if on_case is not None:
            on_case(image_id)
    folder = layout.finish(f"{len(rows)} CT images labelled with the Universal Model ({labels} labels)")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(PROVENANCE_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(folder / PROVENANCE, table.getvalue())
    return ExportSummary(folder, wanted, layout.cases, skipped, round(time.perf_counter() - started, 3))


def _named_values(study: Study, catalog: Catalog) -> dict[int, str]:
    """The final label's value → class name (its label_info, else catalogue ids)."""
    if study.final_info.get("label_info"):
        return {v: catalog[n].name if n in catalog else n for v, n in label_info_values(
            study.final_info["label_info"]).items()}
    labels, _ = read_label_map(study.final)
    return {int(v): catalog[int(v)].name for v in np.unique(labels) if v and int(v) <= len(catalog)}


def _present_classes(studies: StudiesFolder, chosen: list[str], catalog: Catalog) -> list[str]:
    names = set()
    for image_id in chosen:
        study = studies.study(image_id)
        if study.final is not None and study.final.is_file():
            names.update(name for name in _named_values(study, catalog).values() if name in catalog)
    return sorted(names, key=lambda name: catalog[name].id)


def _case_labels(studies: StudiesFolder, study: Study, labels: str, wanted: list[str], ignore: int,
                 catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """The case's label map in the export's numbering (1..K as ``wanted``), and its affine."""
    if study.final is None or not study.final.is_file():
        raise UniversalError("it has no final label")
    record = studies.team.record(study.id)
    number = {name: value for value, name in enumerate(wanted, start=1)}
    if labels == "consensus" and len(latest_by_annotator(record)) > 1:
        values, affine, named = consensus_label(studies.team, study.id)
    else:
        values, affine = read_label_map(study.final)
        named = _named_values(study, catalog)
    keep = trainable_classes(record, "approved" if labels == "approved" else "final")
    if keep is not None and not keep & set(number):
        raise UniversalError(f"no class of it is {'approved' if labels == 'approved' else 'kept'} by a reviewer")
    table = np.zeros(256, np.uint8)
    for value, name in named.items():
        if name in number and (keep is None or name in keep):
            table[value] = number[name]
        elif labels == "approved" and name in number:
            table[value] = ignore  # annotated, not approved: nnU-Net learns nothing from these voxels
    return table[values], affine


def _provenance(studies: StudiesFolder, study: Study) -> list:
    record = studies.team.record(study.id)
    versions = [v for v in record["versions"] if v["annotator"] != "consensus"]
    prelabel = record["served"].get(PRELABEL, {}).get("model_version")
    final = final_version(record)
    findings = (final or {}).get("findings") or study.image_info.get("findings") or []
    severe = sorted({f"{f['severity']}:{f['code']}" for f in findings if f["severity"] != "info"})
    return [study.id, study.image.name, ";".join(sorted({v["annotator"] for v in versions})),
            "" if prelabel is None else prelabel,
            ";".join(f"{name}={state}" for name, state in sorted(class_states(record).items())),
            "" if len(latest_by_annotator(record)) < 2 else lowest_dice(studies.team, study.id),
            ";".join(severe), round(sum(v.get("seconds") or 0 for v in versions), 3)]
