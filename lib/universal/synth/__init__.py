"""Synthetic abdominal CT phantoms (:func:`make_phantom`) and partially labelled datasets built from
them (:func:`write_datasets`). Rooms: :mod:`~universal.synth.geometry` (warp, canvas, shapes),
:mod:`~universal.synth.structures` and :mod:`~universal.synth.anatomy` (what is painted where),
:mod:`~universal.synth.image` (tissues to HU), :mod:`~universal.synth.phantom` (one patient) and
:mod:`~universal.synth.datasets` (dataset folders), and :mod:`~universal.synth.calibration` (phantom windows
an int8 trunk is calibrated on)."""

from universal.synth.calibration import calibration_windows
from universal.synth.datasets import DATASET_SHAPE, DATASET_SPACING, PhantomDataset, phantom_datasets, write_datasets
from universal.synth.geometry import LESION_CLASSES
from universal.synth.phantom import CLINICAL_SHAPE, CLINICAL_SPACING, ORIENTATIONS, Phantom, make_phantom, save_phantom

__all__ = [
    "CLINICAL_SHAPE",
    "CLINICAL_SPACING",
    "DATASET_SHAPE",
    "DATASET_SPACING",
    "LESION_CLASSES",
    "ORIENTATIONS",
    "Phantom",
    "PhantomDataset",
    "calibration_windows",
    "make_phantom",
    "phantom_datasets",
    "save_phantom",
    "write_datasets",
]
