"""The folder layouts trainers read, written case by case (nothing held in memory but one case):

- ``nnunetv2``: nnU-Net v2's raw dataset (MIC-DKFZ/nnUNet documentation/dataset_format.md):
  ``DatasetNNN_Name/imagesTr/<case>_0000.nii.gz`` (one CT channel), ``labelsTr/<case>.nii.gz`` (integer
  maps, background 0, classes consecutive from 1) and ``dataset.json`` with ``channel_names``,
  ``labels`` (name → value, ``background`` 0), ``numTraining`` and ``file_ending``; voxels not
  annotated are nnU-Net's ``ignore`` label, the highest value (documentation/ignore_label.md);
- ``msd``: the Medical Segmentation Decathlon's (``dataset.json`` with ``labels`` value → name,
  ``modality``, ``training`` pairs; ``imagesTr/<case>.nii.gz``, ``labelsTr/<case>.nii.gz``), which
  ``universal prepare`` reads back;
- ``nifti``: ``<case>/image.nii.gz`` and ``<case>/label.nii.gz``, with ``labels.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from universal.errors import UniversalError
from universal.io.atomic import atomic_open, atomic_write_text
from universal.io.msd import msd_dataset_json
from universal.io.scans import read_scan, write_nifti

FORMATS = ("nnunetv2", "msd", "nifti")
IGNORE = "ignore"  # nnU-Net v2's name for voxels that no annotation covers


class Layout:
    """Writes one dataset: :meth:`add` each case (its CT file and label map), then :meth:`finish`."""

    def __init__(self, fmt: str, output: str | Path, classes: list[str], *, name: str = "Universal",
                 dataset_id: int = 501, ignore: bool = False):
        if fmt not in FORMATS:
            raise UniversalError(f"the export format is one of {', '.join(FORMATS)}, not {fmt!r}")
        if not 1 <= dataset_id <= 999:
            raise UniversalError(f"an nnU-Net dataset id has three digits (1-999), got {dataset_id}")
        self.fmt, self.classes, self.name, self.ignore = fmt, classes, name, ignore
        folder = f"Dataset{dataset_id:03d}_{name}" if fmt == "nnunetv2" else name if fmt == "msd" else ""
        self.root = Path(output) / folder
        self.cases: list[str] = []

    @property
    def ignore_value(self) -> int:
        """The label value of voxels no annotation covers (nnU-Net's ``ignore``: the highest)."""
        return len(self.classes) + 1

    def add(self, case: str, image: Path, labels: np.ndarray, affine: np.ndarray) -> None:
        """Write ``case``: the CT (copied when it is a ``.nii.gz`` file, else converted) and its label map
        (uint8, values 1..K in the order of ``classes``; :attr:`ignore_value` where not annotated)."""
        if self.fmt == "nnunetv2":
            image_path = self.root / "imagesTr" / f"{case}_0000.nii.gz"
            label_path = self.root / "labelsTr" / f"{case}.nii.gz"
        elif self.fmt == "msd":
            image_path = self.root / "imagesTr" / f"{case}.nii.gz"
            label_path = self.root / "labelsTr" / f"{case}.nii.gz"
        else:
            image_path, label_path = self.root / case / "image.nii.gz", self.root / case / "label.nii.gz"
        if image.is_file() and image.name.lower().endswith(".nii.gz"):
            with image.open("rb") as source, atomic_open(image_path) as target:
                shutil.copyfileobj(source, target, 1 << 20)
        else:
            scan = read_scan(image)
            write_nifti(np.rint(scan.image).astype(np.int16), scan.affine, image_path, is_label=False)
        write_nifti(labels.astype(np.uint8), affine, label_path, is_label=True)
        self.cases.append(case)

    def finish(self, description: str) -> Path:
        """Write ``dataset.json`` (or ``labels.json``); returns the dataset's folder."""
        if self.fmt == "nnunetv2":
            labels = {"background": 0, **{name: value for value, name in enumerate(self.classes, start=1)}}
            if self.ignore:
                labels[IGNORE] = self.ignore_value
            document = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(self.cases),
                        "file_ending": ".nii.gz", "name": self.name, "description": description}
            atomic_write_text(self.root / "dataset.json", json.dumps(document, indent=2) + "\n")
        elif self.fmt == "msd":
            training = [{"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
                        for case in self.cases]
            labels = {0: "background", **dict(enumerate(self.classes, start=1))}
            atomic_write_text(self.root / "dataset.json",
                              json.dumps(msd_dataset_json(self.name, description, labels, training), indent=2) + "\n")
        else:
            atomic_write_text(self.root / "labels.json", json.dumps(
                {"0": "background", **{str(v): n for v, n in enumerate(self.classes, start=1)}}, indent=2) + "\n")
        return self.root
