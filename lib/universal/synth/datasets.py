"""Partially labelled phantom datasets in the layout of the Medical Segmentation Decathlon.

A phantom dataset is a dataset template (``prompts/datasets.yaml``, or one given) applied to phantom
patients: its label files hold the template's values, its ``dataset.json`` names them, so
``universal prepare`` reads the folder exactly as it reads the public dataset of that name.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.atomic import atomic_write_text
from universal.io.msd import msd_dataset_json
from universal.io.scans import write_nifti
from universal.synth.phantom import Phantom, check_seed, make_phantom
from universal.training.datasets import DatasetTemplate, load_templates

DATASET_SHAPE = (128, 128, 96)
DATASET_SPACING = (3.2, 3.2, 5.0)
# Structures a phantom draws inside an organ; a dataset that does not annotate them counts them as the organ.
INSIDE = {"Liver": ("Hepatic Vessel",)}


@dataclass(frozen=True)
class PhantomDataset:
    """Phantom cases labelled as ``template`` labels its dataset.

    ``lesions``: the lesion classes drawn in its cases; ``orientation``: of its files (unless
    :func:`write_datasets` is given one); ``folder``: the dataset folder's name (default: the
    template's name).
    """

    template: DatasetTemplate
    lesions: tuple[str, ...] = ()
    orientation: str = "RAS"
    folder: str | None = None

    @property
    def name(self) -> str:
        return self.folder or self.template.name

    def encode(self, label: np.ndarray) -> np.ndarray:
        """The dataset's label map (uint8, same shape) for a phantom label map in catalogue ids."""
        catalog = Catalog.default()
        annotated = set(self.template.classes)
        table = np.zeros(256, np.uint8)
        for value, names in self.template.labels.items():
            inside = [part for name in names for part in INSIDE.get(name, ()) if part not in annotated]
            table[catalog.ids([*names, *inside])] = value
        return table[label]

    def label_names(self) -> dict[str, str]:
        """``{"0": "background", "1": class name, ...}`` as ``dataset.json`` writes them (a right/left
        pair drawn as one value: both names)."""
        return {"0": "background", **{str(v): " and ".join(names) for v, names in self.template.labels.items()}}


@functools.cache
def phantom_datasets() -> tuple[PhantomDataset, ...]:
    """The public datasets phantoms imitate, as the packaged templates describe them."""
    templates = load_templates()
    return (
        PhantomDataset(templates["MSD-Liver"], ("Liver Tumor",), "LPS", folder="Task03_Liver"),
        PhantomDataset(templates["MSD-Spleen"], folder="Task09_Spleen"),
        PhantomDataset(templates["MSD-Pancreas"], ("Pancreas Tumor",), "LPS", folder="Task07_Pancreas"),
        PhantomDataset(templates["KiTS"], ("Kidney Tumor", "Kidney Cyst")),
        PhantomDataset(templates["BTCV"]),
        PhantomDataset(templates["AbdomenCT-1K"], orientation="LPS"),
        PhantomDataset(templates["AMOS"]),
    )


def write_datasets(
    folder: str | Path,
    datasets: Iterable[str | PhantomDataset] | None = None,
    cases_per_dataset: int = 2,
    seed: int = 0,
    shape: Sequence[int] = DATASET_SHAPE,
    spacing: Sequence[float] = DATASET_SPACING,
    orientation: str | None = None,
    noise: float = 12.0,
) -> list[Path]:
    """Write partially labelled datasets (:func:`phantom_datasets`, those named, or given) under ``folder``.

    Each dataset is a folder ``folder/NAME`` with ``imagesTr/``, ``labelsTr/`` and ``dataset.json``;
    its label files use the dataset's own numbering (:meth:`PhantomDataset.encode`). Every case is a
    different patient, drawn from ``seed`` and the dataset's name; the same arguments write the same
    files. Returns the dataset folders.
    """
    chosen = _select_datasets(datasets)
    if isinstance(cases_per_dataset, bool) or not isinstance(cases_per_dataset, int) or cases_per_dataset < 1:
        raise UniversalError(f"cases_per_dataset must be a positive integer, not {cases_per_dataset!r}")
    seed = check_seed(seed)
    make = functools.partial(make_phantom, shape=shape, spacing=spacing, noise=noise)
    folders = []
    for dataset in chosen:
        stream = zlib.crc32(dataset.name.encode())
        seeds = [int(np.random.SeedSequence([seed, stream, n]).generate_state(1)[0]) for n in range(cases_per_dataset)]
        cases = (make(s, orientation=orientation or dataset.orientation, lesions=dataset.lesions) for s in seeds)
        folders.append(_write_dataset(Path(folder) / dataset.name, dataset, cases))
    return folders


def _write_dataset(root: Path, dataset: PhantomDataset, cases: Iterable[Phantom]) -> Path:
    """Write ``cases`` into ``root/imagesTr`` and ``root/labelsTr`` (labels encoded for ``dataset``),
    then ``root/dataset.json``; returns ``root``."""
    training = []
    for number, phantom in enumerate(cases):
        name = f"{dataset.name.lower()}_{number:03d}.nii.gz"
        write_nifti(phantom.image, phantom.affine, root / "imagesTr" / name, is_label=False)
        write_nifti(dataset.encode(phantom.label), phantom.affine, root / "labelsTr" / name, is_label=True)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    atomic_write_text(root / "dataset.json", json.dumps(_dataset_json(dataset, training), indent=2) + "\n")
    return root


def _select_datasets(names: Iterable[str | PhantomDataset] | str | None) -> list[PhantomDataset]:
    """The datasets of :func:`phantom_datasets` named in ``names`` (any case) or given, or all of them
    for None."""
    known = phantom_datasets()
    if names is None:
        return list(known)
    by_name = {dataset.name.lower(): dataset for dataset in known}
    chosen = []
    for name in [names] if isinstance(names, str) else names:
        dataset = name if isinstance(name, PhantomDataset) else by_name.get(str(name).lower())
        if dataset is None:
            raise UniversalError(f"unknown dataset {name!r}; choose from {', '.join(d.name for d in known)}")
        chosen.append(dataset)
    return chosen


def _dataset_json(dataset: PhantomDataset, training: list[dict[str, str]]) -> dict:
    """The ``dataset.json`` of the Medical Segmentation Decathlon for ``dataset``."""
    labels = {int(value): name for value, name in dataset.label_names().items()}
    description = f"Synthetic abdominal CT phantoms: {dataset.template.description or dataset.name}"
    return msd_dataset_json(dataset.name, description, labels, training, reference="universal.synth",
                            licence="CC0-1.0")
