"""Label maps drawn by annotators: which classes a label annotates, datalists of annotated cases,
and held-out cases for checking a model.

A label file holds small integers. What a value means comes from the label's ``label_info`` when the
annotator's viewer sent one (3D Slicer sends ``[{"name": segment name, "idx": value}, ...]``), else
the values are catalogue ids. A class counts as annotated when its value is present in the file: a
viewer lists every segment it shows, including empty ones it created itself, so a listed but empty
class says nothing about the image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from universal.catalog import Catalog, normalize_name
from universal.errors import UniversalError
from universal.io.labels import image_geometry, read_label_map
from universal.io.scans import GRID_TOLERANCE_MM
from universal.training.datasets import Datalist, DatasetTemplate


class AnnotationError(UniversalError):
    """A label that cannot be used as given: unreadable, on another grid, or with unnamed values."""


@dataclass(frozen=True)
class Annotation:
    """One annotated case: ``image`` and ``label`` paths and ``values``: label value → class name
    (the annotated classes, each present in the label). ``case`` names it (the datastore's image id)."""

    case: str
    image: str
    label: str
    values: dict[int, str]


def value_names(label_info, present: Iterable[int], catalog: Catalog) -> dict[int, str]:
    """Label value → class name for the non-zero values ``present`` in a label file.

    ``label_info``: a list of ``{"name", "idx"}`` entries (an entry without ``idx`` stands for value
    position + 1), a ``{name: value}`` mapping, a JSON string of either, or ``None`` (values are
    catalogue ids). Names that the catalogue does not hold are returned as given (new classes);
    known names come back as the catalogue's display name. Raises :class:`AnnotationError` naming
    a value no entry names, or a malformed entry.
    """
    present = sorted(int(v) for v in present if int(v) != 0)
    if label_info in (None, "", [], {}):
        unknown = [v for v in present if v > len(catalog)]
        if unknown:
            raise AnnotationError(
                f"label values {unknown} are not class ids (1..{len(catalog)}) and no label_info names them; "
                "send label_info with the label, e.g. [{\"name\": \"Liver\", \"idx\": 1}]"
            )
        return {v: catalog[v].name for v in present}
    named = label_info_values(label_info)
    unnamed = [v for v in present if v not in named]
    if unnamed:
        raise AnnotationError(
            f"label values {unnamed} have no entry in label_info (it names values {sorted(named)}); "
            "add an entry {\"name\": ..., \"idx\": value} for each segment"
        )
    return {v: (catalog[named[v]].name if named[v] in catalog else named[v]) for v in present}


def label_info_values(label_info) -> dict[int, str]:
    """Label value → segment name of every entry of ``label_info`` (see :func:`value_names`), empty
    segments included; :class:`AnnotationError` for a malformed entry."""
    if isinstance(label_info, str):
        try:
            label_info = json.loads(label_info)
        except ValueError as error:
            raise AnnotationError(f"label_info is not valid JSON: {error}") from error
    entries: list[tuple[object, object]]
    if isinstance(label_info, Mapping):
        entries = list(label_info.items())
    elif isinstance(label_info, Sequence):
        entries = []
        for position, entry in enumerate(label_info, start=1):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise AnnotationError(f"label_info entry {position} must be an object with a 'name', not {entry!r}")
            value = next((entry[k] for k in ("idx", "value", "id") if entry.get(k) is not None), position)
            entries.append((entry["name"], value))
    else:
        raise AnnotationError(f"label_info must be a list of {{name, idx}} entries, not {type(label_info).__name__}")
    named: dict[int, str] = {}
    for name, value in entries:
        if not isinstance(name, str) or not normalize_name(name):
            raise AnnotationError(f"label_info names a segment {name!r}; a segment needs a non-empty name")
        number = _whole_number(value)
        if number is None or not 1 <= number <= 255:
            raise AnnotationError(f"label_info gives segment '{name}' the value {value!r}; use a whole number 1..255")
        if number in named and normalize_name(named[number]) != normalize_name(name):
            raise AnnotationError(f"label_info gives value {number} to both '{named[number]}' and '{name}'")
        named[number] = name.strip()
    return named


def _whole_number(value) -> int | None:
    """``value`` as an int when it is a whole number (or its decimal string), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def read_annotation(case: str, image: str | Path, label: str | Path, label_info, catalog: Catalog, *,
                    max_voxels: int | None = None) -> Annotation:
    """Check a label file against its image and name its values (see :func:`value_names`).

    Raises :class:`AnnotationError` when the label cannot be read (or declares more than
    ``max_voxels`` voxels), lies on another grid than the image, or holds values nothing names.
    """
    try:
        labels, affine = read_label_map(label, max_voxels=max_voxels)
    except UniversalError as error:
        raise AnnotationError(f"the label is not a readable label map: {error}") from error
    shape, image_affine = image_geometry(image, max_voxels=max_voxels)
    if labels.shape != tuple(shape) or not np.allclose(affine, image_affine, atol=GRID_TOLERANCE_MM):
        raise AnnotationError(
            f"the label (shape {list(labels.shape)}) does not lie on the grid of image '{case}' (shape "
            f"{list(shape)}); export the segmentation on the image's own geometry"
        )
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    return Annotation(case, str(image), str(label), value_names(label_info, present, catalog))


def restrict(annotation: Annotation, classes: Iterable[str] | None) -> Annotation:
    """``annotation`` annotating only ``classes`` (names; all for ``None``): the others' voxels are not
    annotated as anything, so they add no loss."""
    if classes is None:
        return annotation
    keep = {normalize_name(name) for name in classes}
    values = {value: name for value, name in annotation.values.items() if normalize_name(name) in keep}
    return Annotation(annotation.case, annotation.image, annotation.label, values)


def new_class_names(annotations: Iterable[Annotation], catalog: Catalog) -> list[str]:
    """Names the annotations use that ``catalog`` lacks, in order of first use."""
    names = [name for a in annotations for name in a.values.values() if name not in catalog]
    return list({normalize_name(n): n for n in reversed(names)}.values())[::-1]


# -- datalists ----------------------------------------------------------------------------------


def held_out_cases(cases: Iterable[str], fraction: float) -> set[str]:
    """The cases kept for checking models, never for training: those whose name hashes below
    ``fraction`` (stable as cases are added), and at least one of two or more cases."""
    cases = sorted(set(cases))
    if not 0 <= fraction < 1:
        raise UniversalError(f"the held-out share must be at least 0 and below 1, got {fraction}")
    if fraction == 0 or len(cases) < 2:
        return set()
    rank = {case: int(hashlib.sha1(case.encode()).hexdigest()[:8], 16) / 16**8 for case in cases}
    chosen = {case for case in cases if rank[case] < fraction}
    if not chosen:
        chosen = {min(cases, key=rank.__getitem__)}
    if len(chosen) == len(cases):
        chosen.discard(max(chosen, key=rank.__getitem__))
    return chosen


def annotation_datalist(annotations: Sequence[Annotation], held_out: Iterable[str] = ()) -> Datalist:
    """A datalist of annotated cases: one dataset template per distinct value → class mapping (lesions
    count as their organ), the ``held_out`` cases as validation cases."""
    held_out = set(held_out)
    templates: dict[str, DatasetTemplate] = {}
    training, validation = [], []
    for annotation in annotations:
        if not annotation.values:
            continue
        labels = {value: (name,) for value, name in sorted(annotation.values.items())}
        key = json.dumps(sorted(annotation.values.items()))
        name = "annotations-" + hashlib.sha1(key.encode()).hexdigest()[:8]
        templates.setdefault(name, DatasetTemplate(name, labels, lesions_in_organ=True,
                                                   description="labels saved by annotators"))
        case = {"image": annotation.image, "label": annotation.label, "dataset": name,
                "classes": templates[name].classes, "case": annotation.case}
        (validation if annotation.case in held_out else training).append(case)
    return Datalist(templates, training, validation)
