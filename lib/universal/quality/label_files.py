"""Label files as the checks read them: a label map (catalogue ids, or another tool's numbering named
by a JSON table) or a folder of one mask file per class (as TotalSegmentator writes them), mapped to
the catalogue by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.labels import image_geometry, read_label_map
from universal.io.scans import GRID_TOLERANCE_MM, IMAGE_SUFFIXES, case_name
from universal.quality.checks import check_label_map, check_masks
from universal.quality.findings import Finding


def check_label_file(label: str | Path, *, image: str | Path | None = None, names: str | Path | None = None,
                     catalog: Catalog | None = None) -> tuple[list[Finding], list[str]]:
    """(the findings on ``label``, the names it uses that the catalogue lacks). ``label``: a label map
    whose values are catalogue ids, or are named by the JSON table ``names`` (``{"1": "liver"}``;
    every class it names counts as meant, so an absent one may be missing); or a folder of mask files
    named by class (an empty mask is a class meant and absent). ``image``: the CT whose grid the label
    must lie on."""
    catalog, label = catalog or Catalog.default(), Path(label)
    if label.is_dir():
        masks, affine, skipped = _masks(label, catalog)
        _same_grid(next(iter(masks.values())).shape, affine, image)
        return check_masks(masks, affine, catalog), skipped
    labels, affine = read_label_map(label)
    _same_grid(labels.shape, affine, image)
    if names is None:
        present = [int(v) for v in np.unique(labels) if v]
        unknown = [v for v in present if v > len(catalog)]
        if unknown:
            raise UniversalError(f"{label}: values {unknown} are not class ids (1..{len(catalog)}); name the values "
                                 "with --names {\"1\": \"liver\", ...}")
        return check_label_map(labels, affine, catalog, present), []
    try:
        table = {int(value): str(name) for value, name in json.loads(Path(names).read_text()).items()}
    except (OSError, ValueError, AttributeError) as error:
        raise UniversalError(f"{names}: a JSON object of value: class name is expected ({error})") from error
    known = {value: catalog[name].id for value, name in table.items() if name in catalog}
    lookup = np.zeros(256, np.uint8)
    for value, class_id in known.items():
        lookup[value] = class_id
    skipped = sorted(name for name in table.values() if name not in catalog)
    return check_label_map(lookup[labels], affine, catalog, sorted(set(known.values()))), skipped


def label_findings(label: str | Path, values: dict[int, str], catalog: Catalog) -> list[Finding]:
    """The findings on an annotator's label file whose ``values`` name its classes (every named class
    counts as meant; names the catalogue lacks are left out)."""
    labels, affine = read_label_map(label)
    lookup = np.zeros(256, np.uint8)
    meant = []
    for value, name in values.items():
        if name in catalog:
            lookup[int(value)] = catalog[name].id
            meant.append(catalog[name].id)
    return check_label_map(lookup[labels], affine, catalog, sorted(set(meant)))


def _masks(folder: Path, catalog: Catalog) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    masks, affine, skipped = {}, None, []
    for path in sorted(p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)):
        name = case_name(path)
        if name not in catalog:
            skipped.append(name)
            continue
        labels, found = read_label_map(path)
        if affine is not None and (labels.shape != next(iter(masks.values())).shape
                                   or not np.allclose(found, affine, atol=GRID_TOLERANCE_MM)):
            raise UniversalError(f"{path}: the masks of {folder} lie on different grids")
        affine = found if affine is None else affine
        masks[catalog[name].name] = labels > 0
    if not masks:
        raise UniversalError(f"{folder}: no mask file names a class of the catalogue (e.g. liver.nii.gz)")
    return masks, affine, skipped


def _same_grid(shape, affine: np.ndarray, image: str | Path | None) -> None:
    if image is None:
        return
    image_shape, image_affine = image_geometry(image)
    if tuple(shape) != tuple(image_shape) or not np.allclose(affine, image_affine, atol=GRID_TOLERANCE_MM):
        raise UniversalError(f"the label (shape {list(shape)}) does not lie on the grid of {image} (shape "
                             f"{list(image_shape)}); export it on the image's own geometry")
