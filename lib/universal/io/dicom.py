"""DICOM files: CT series' grids, and DICOM Segmentation objects (SEG) read onto a CT series' grid or
written from a label map.

Geometry follows the DICOM attributes, not file order. A slice's pixel (row r, column c) lies at
``ImagePositionPatient + c·Δc·row direction + r·Δr·column direction`` (LPS mm; the row and column
directions are ``ImageOrientationPatient``), which is voxel (i = c, j = r, k) of the series read by
:func:`universal.io.scans.read_scan`, k the slice's place along the slice normal. A SEG frame is
placed by its own ``ImagePositionPatient``, so a SEG that holds only the slices with segments (as
viewers store them) lands where it belongs; SEG files are read and written with highdicom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.atomic import atomic_path
from universal.io.scans import LPS_TO_RAS
from universal.version import __version__

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage, DICOM PS3.4 Annex B.5
SLICE_TOLERANCE = 0.05  # a SEG frame lies on a CT slice within this fraction of the slice spacing


class SegmentationError(UniversalError):
    """A DICOM SEG that cannot be used as given: not a SEG, on another grid, or without segments."""


@dataclass(frozen=True)
class SeriesGeometry:
    """A series' grid: ``shape`` (X = columns, Y = rows, Z = slices), the RAS+ ``affine`` of voxel
    (i, j, k), ``orientation`` (its ``ImageOrientationPatient``) and ``positions``: per slice k, its
    ``ImagePositionPatient`` (LPS mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    orientation: np.ndarray
    positions: np.ndarray

    def slice_of(self, position: Sequence[float]) -> int | None:
        """The index k of the slice at ``position`` (LPS mm), or ``None`` when none lies there."""
        distances = np.linalg.norm(self.positions - np.asarray(position, dtype=np.float64), axis=1)
        spacing = float(np.linalg.norm(self.positions[1] - self.positions[0])) if len(self.positions) > 1 else 1.0
        k = int(np.argmin(distances))
        return k if distances[k] <= SLICE_TOLERANCE * spacing else None


def series_geometry(datasets: Sequence) -> SeriesGeometry:
    """The grid of a single-frame series (pydicom datasets of one series, in any order)."""
    first = datasets[0]
    row, column = (np.asarray(first.ImageOrientationPatient[i:i + 3], dtype=np.float64) for i in (0, 3))
    normal = np.cross(row, column)
    positions = sorted((np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in datasets),
                       key=lambda p: float(p @ normal))
    positions = np.stack(positions)
    spacing_r, spacing_c = (float(v) for v in first.PixelSpacing)  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row * spacing_c
    lps[:3, 1] = column * spacing_r
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1) if len(positions) > 1 else normal
    lps[:3, 3] = positions[0]
    shape = (int(first.Columns), int(first.Rows), len(positions))
    return SeriesGeometry(shape, LPS_TO_RAS @ lps, np.concatenate([row, column]), positions)


def read_series(folder: str | Path, series_uid: str | None = None) -> list:
    """The headers (no pixel data) of one single-frame image series in ``folder``, sorted along the slice
    normal; ``series_uid`` chooses among several series."""
    import pydicom

    found: dict[str, list] = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if "ImagePositionPatient" in dataset and "SeriesInstanceUID" in dataset:
            dataset.filename = str(path)
            found.setdefault(str(dataset.SeriesInstanceUID), []).append(dataset)
    if series_uid is not None:
        found = {uid: items for uid, items in found.items() if uid == series_uid}
    if len(found) != 1:
        raise UniversalError(f"{folder}: expected one image series{f' {series_uid}' if series_uid else ''}, "
                             f"found {len(found)}")
    datasets = next(iter(found.values()))
    normal = np.cross(*(np.asarray(datasets[0].ImageOrientationPatient[i:i + 3], float) for i in (0, 3)))
    return sorted(datasets, key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal))


def read_segmentation(path: str | Path, geometry: SeriesGeometry) -> tuple[np.ndarray, dict[int, str]]:
    """A DICOM SEG as a label map on a series' grid: uint8 (X, Y, Z), value = segment number, and
    ``{segment number: SegmentLabel}`` of the segments that hold voxels. Frames are placed by their
    positions; a SEG of only some slices fills those. Overlapping segments: the higher number wins.

    Raises :class:`SegmentationError` for a file that is not a SEG, frames off the series' grid, or no
    segment."""
    import highdicom as hd
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError) as error:
        raise SegmentationError(f"{Path(path).name} is not a DICOM file ({error})") from error
    if str(dataset.get("SOPClassUID", "")) != SEG_STORAGE:
        raise SegmentationError(f"{Path(path).name} is not a DICOM Segmentation (SOP class "
                                f"{dataset.get('SOPClassUID', 'missing')}); store the label as DICOM SEG")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset)
        frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    except Exception as error:
        raise SegmentationError(f"{Path(path).name} is a damaged DICOM SEG ({error})") from error
    names = {int(d.SegmentNumber): str(d.get("SegmentLabel") or f"segment {d.SegmentNumber}")
             for d in seg.SegmentSequence}
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    if (int(seg.Columns), int(seg.Rows)) != geometry.shape[:2] or not np.allclose(orientation, geometry.orientation,
                                                                                     atol=1e-4):
        raise SegmentationError(
            f"the SEG's frames ({seg.Columns}×{seg.Rows}, orientation {np.round(orientation, 3).tolist()}) do not "
            f"lie on the image's grid ({geometry.shape[0]}×{geometry.shape[1]}); it was drawn on another series"
        )
    label = np.zeros(geometry.shape, np.uint8)
    order = sorted(range(len(frames)), key=lambda i: _segment_number(seg, i))
    for index in order:
        group = seg.PerFrameFunctionalGroupsSequence[index]
        position = group.PlanePositionSequence[0].ImagePositionPatient
        k = geometry.slice_of(position)
        if k is None:
            raise SegmentationError(f"SEG frame {index + 1} at {[round(float(v), 2) for v in position]} mm lies on "
                                    "no slice of the image; it was drawn on another series")
        label[:, :, k][frames[index].T > 0] = _segment_number(seg, index)
    present = {int(v) for v in np.unique(label) if v}
    if not present:
        raise SegmentationError(f"{Path(path).name} holds no segment with any voxel")
    return label, {number: names.get(number, f"segment {number}") for number in sorted(present)}


def _segment_number(seg, frame: int) -> int:
    group = seg.PerFrameFunctionalGroupsSequence[frame]
    return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)


def write_segmentation(label_map: np.ndarray, catalog: Catalog, source: Sequence, path: str | Path, *,
                       description: str = "Universal Model", creator: str | None = None) -> Path:
    """Write ``label_map`` (uint8 (X, Y, Z), catalogue ids, on the grid of the ``source`` series'
    headers as :func:`read_series` returns them) as a DICOM SEG referencing that series: one segment a
    class present, named, coloured and coded as the catalogue says; empty frames left out;
    ``creator``: its ContentCreatorName (the annotator)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    geometry = series_geometry(source)
    if tuple(label_map.shape) != geometry.shape:
        raise UniversalError(f"a label map of shape {list(label_map.shape)} is not on the series' grid "
                             f"{list(geometry.shape)}")
    present = [int(v) for v in np.unique(label_map) if v]
    if not present:
        raise UniversalError("the label map is empty: a DICOM SEG needs at least one segment")
    relabel = np.zeros(256, np.uint8)
    descriptions = []
    for number, class_id in enumerate(present, start=1):
        relabel[class_id] = number
        descriptions.append(segment_description(number, catalog[class_id]))
    frames = np.stack([relabel[label_map[:, :, geometry.slice_of(ds.ImagePositionPatient)]].T for ds in source])
    seg = hd.seg.Segmentation(
        source_images=list(source), pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=900,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="universal",
        manufacturer_model_name="CLIP-Driven Universal Model", software_versions=__version__,
        device_serial_number="0", series_description=description, content_label="UNIVERSAL",
        content_creator_name=creator,
    )
    with atomic_path(path, suffix=".dcm") as temporary:
        seg.save_as(temporary)
    return Path(path)


# Codes for a class that carries none: its kind's category, and "Tissue" as the type (DICOM PS3.16 CID
# 7150/7151; the same concepts as in Slicer/Slicer Modules/Loadable/Terminologies/Resources/
# SegmentationCategoryTypeModifier-DICOM-Master.json).
DEFAULT_CODES = {
    "organ": (("123037004", "SCT", "Anatomical Structure"), ("85756007", "SCT", "Tissue")),
    "tumour": (("49755003", "SCT", "Morphologically Altered Structure"), ("108369006", "SCT", "Neoplasm")),
    "cyst": (("49755003", "SCT", "Morphologically Altered Structure"), ("367643001", "SCT", "Cyst")),
}


def segment_description(number: int, info):
    """highdicom's description of segment ``number`` for catalogue class ``info``: its name, its coded
    category, type and modifier (the catalogue's ``codes``, else its kind's defaults) and its colour
    (CIELab, as DICOM stores a recommended display colour)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code
    from skimage.color import rgb2lab

    default_category, default_type = DEFAULT_CODES[info.kind]
    category = Code(*(info.code("category") or default_category))
    kind = Code(*(info.code("type") or default_type))
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=info.name, segmented_property_category=category,
        segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="CLIP-Driven Universal Model", version=__version__,
            family=codes.DCM.ArtificialIntelligence),
    )
    if info.code("modifier"):
        modifier = hd.sr.CodedConcept(*info.code("modifier"))
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    lab = rgb2lab(np.asarray(info.color, dtype=np.float64).reshape(1, 1, 3) / 255.0)[0, 0]
    colour = hd.color.CIELabColor(float(np.clip(lab[0], 0, 100)), *(float(np.clip(v, -128, 127)) for v in lab[1:]))
    description.RecommendedDisplayCIELabValue = list(colour.value)
    return description
