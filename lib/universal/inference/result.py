"""The result of segmenting one scan, :class:`Segmentation`, and how a case folder is written."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from universal.catalog import Catalog, ClassKey
from universal.errors import UniversalError
from universal.inference.preprocess import ScanBlocks, to_scan_blocks, to_scan_grid
from universal.io.atomic import atomic_write_text
from universal.io.scans import write_nifti

REPORT_NAME, LABEL_MAP_NAME, MASKS_FOLDER = "report.json", "segmentation.nii.gz", "masks"
DICOM_SEG_NAME = "segmentation.dcm"
PREVIEW_NAME = "preview.png"


@dataclass(eq=False)
class Segmentation:
    """The result for one scan.

    ``label_map``: uint8 (X, Y, Z) on the scan's grid, catalogue ids, lesions painted over their
    organ. ``model_masks``: per class id, bool masks in model space (affine ``model_affine``).
    ``report``: the JSON document written beside the label map.
    """

    name: str
    affine: np.ndarray
    catalog: Catalog
    label_map: np.ndarray
    model_masks: dict[int, np.ndarray]
    model_affine: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def class_ids(self) -> list[int]:
        return list(self.model_masks)

    def mask(self, key: ClassKey) -> np.ndarray:
        """bool (X, Y, Z) mask of one class on the scan's grid."""
        model_mask = self._model_mask(key).view(np.uint8)
        return to_scan_grid(model_mask, self.model_affine, self.affine, self.label_map.shape).view(bool)

    def mask_blocks(self, key: ClassKey) -> ScanBlocks:
        """:meth:`mask` as the model-space voxels it repeats, within the smallest box of the scan's grid
        that can hold it (:func:`universal.inference.preprocess.to_scan_blocks`)."""
        return to_scan_blocks(self._model_mask(key), self.model_affine, self.affine, self.label_map.shape)

    def _model_mask(self, key: ClassKey) -> np.ndarray:
        """bool (x, y, z) mask of one class in model space; an error names a class that was not computed."""
        class_id = self.catalog[key].id
        if class_id not in self.model_masks:
            raise UniversalError(f"class {self.catalog[class_id].name!r} was not computed; ask for it in classes")
        return self.model_masks[class_id]

    def save(self, folder: str | Path, masks: bool = False, dicom_series: Sequence | None = None) -> Path:
        """Write ``segmentation.nii.gz``, with ``masks`` one ``masks/<Class Name>.nii.gz`` per class,
        with ``dicom_series`` (the headers of the scan's DICOM series, :func:`universal.io.dicom.read_series`)
        ``segmentation.dcm``, a DICOM SEG referencing that series, and ``report.json`` last (its presence
        marks a finished case). Returns the folder.

        Writing over an earlier result first removes its report, and then its masks of classes this
        result does not hold and a SEG it does not write, so the folder never mixes two runs under a
        finished mark.
        """
        folder, started = Path(folder), time.perf_counter()
        (folder / REPORT_NAME).unlink(missing_ok=True)
        write_nifti(self.label_map, self.affine, folder / LABEL_MAP_NAME)
        if dicom_series is not None:
            from universal.io.dicom import write_segmentation

            write_segmentation(self.label_map, self.catalog, dicom_series, folder / DICOM_SEG_NAME)
        else:
            (folder / DICOM_SEG_NAME).unlink(missing_ok=True)
        written = set()
        if masks:
            for class_id in self.class_ids:
                path = folder / MASKS_FOLDER / f"{self.catalog[class_id].name}.nii.gz"
                write_nifti(self.mask(class_id).astype(np.uint8), self.affine, path)
                written.add(path)
        for stale in set((folder / MASKS_FOLDER).glob("*.nii.gz")) - written:
            stale.unlink()
        if "timings_s" in self.report:
            self.report["timings_s"]["write"] = round(time.perf_counter() - started, 3)
        atomic_write_text(folder / REPORT_NAME, json.dumps(self.report, indent=2) + "\n")
        return folder
