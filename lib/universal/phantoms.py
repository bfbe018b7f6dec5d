"""Synthetic abdominal CT phantoms: a CT volume in HU and its label map in catalogue ids.

No real CT is needed to exercise inference, training, the app or the benchmarks: a phantom is a
volume that looks like a portal-venous abdominal CT (body outline with skin, fat and muscle, spine,
ribs and pelvis, lungs above the diaphragm, solid organs, bowel with gas, contrast-filled vessels)
together with its labels, at any size, spacing and orientation.

Geometry. The anatomy is built in patient (world) coordinates in millimetres, RAS+ as in NIfTI and
nibabel: +x points to the patient's **right**, +y to the patient's front (anterior), +z to the head
(superior). The liver therefore has positive x, the spleen negative x. Voxel centres are sampled
through the affine, so every shape, spacing and orientation shows the same anatomy; ``"LPS"`` only
reverses the first two voxel axes (the affine's first two diagonal entries are negative). The field
of view is centred on x = y = 0 and, along z, starts just above the lung bases; fields shorter than
330 mm are centred on the upper abdomen instead.

Variation. A seed fixes everything: the patient's build and fat, each organ's position, size and
turn, a smooth random displacement field over the whole body, the contrast timing, the texture and
the noise. Anatomy draws do not depend on the grid, so the same seed at another size or spacing is
the same patient.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from .catalog import Catalog
from .errors import UniversalError
from .io_utils import atomic_write_text, check_nifti_path
from .scans import write_nifti

ORIENTATIONS = ("RAS", "LPS")
CLINICAL_SHAPE = (512, 512, 200)
CLINICAL_SPACING = (0.8, 0.8, 2.5)
DATASET_SHAPE = (128, 128, 96)
DATASET_SPACING = (3.2, 3.2, 5.0)
LESION_CLASSES = ("Liver Tumor", "Kidney Tumor", "Kidney Cyst", "Pancreas Tumor")

_Z_TOP = 180.0  # world z (mm) of the top of a long field of view: just above the lung bases
_Z_UPPER_ABDOMEN = 15.0  # centre of a short field of view
_CHUNK_VOXELS = 1 << 21
_SKIN_MM = 2.5
_TEXTURE_MM = 1.5  # correlation length of organ texture
_BLUR_IN_PLANE = 0.6  # point spread of the scanner, in voxels: partial volume and noise grain
_BLUR_THROUGH_PLANE = 0.45
_TRUNCATE = 3.0  # the scanner's blur ends at this many SDs
_TEXTURE_TRUNCATE = 2.0


class _T(enum.IntEnum):
    """Tissues; each has a mean HU and a texture amplitude in :data:`_TISSUE_HU`."""

    AIR = 0
    TABLE = enum.auto()
    SKIN = enum.auto()
    FAT = enum.auto()
    MUSCLE = enum.auto()
    VISCERAL_FAT = enum.auto()
    LUNG = enum.auto()
    MYOCARDIUM = enum.auto()
    BLOOD = enum.auto()
    LIVER = enum.auto()
    SPLEEN = enum.auto()
    KIDNEY_CORTEX = enum.auto()
    KIDNEY_MEDULLA = enum.auto()
    SINUS_FAT = enum.auto()
    URINE = enum.auto()
    PANCREAS = enum.auto()
    ADRENAL = enum.auto()
    GUT_WALL = enum.auto()
    GUT_FLUID = enum.auto()
    STOOL = enum.auto()
    GAS = enum.auto()
    BILE = enum.auto()
    PROSTATE = enum.auto()
    ARTERY = enum.auto()
    VEIN = enum.auto()
    PORTAL = enum.auto()
    CORTICAL = enum.auto()
    CANCELLOUS = enum.auto()
    DISC = enum.auto()
    CARTILAGE = enum.auto()
    CSF = enum.auto()
    LESION_HYPO = enum.auto()
    LESION_HYPER = enum.auto()
    RENAL_TUMOUR = enum.auto()
    CYST = enum.auto()


# Portal-venous phase: (mean HU, texture SD in HU, contrast-enhanced).
_TISSUE_HU = {
    _T.AIR: (-1000, 0, False),
    _T.TABLE: (150, 10, False),
    _T.SKIN: (25, 6, False),
    _T.FAT: (-105, 10, False),
    _T.MUSCLE: (55, 9, False),
    _T.VISCERAL_FAT: (-95, 14, False),
    _T.LUNG: (-860, 35, False),
    _T.MYOCARDIUM: (95, 8, True),
    _T.BLOOD: (150, 5, True),
    _T.LIVER: (105, 7, True),
    _T.SPLEEN: (115, 7, True),
    _T.KIDNEY_CORTEX: (175, 10, True),
    _T.KIDNEY_MEDULLA: (135, 10, True),
    _T.SINUS_FAT: (-70, 15, False),
    _T.URINE: (8, 3, False),
    _T.PANCREAS: (95, 14, True),
    _T.ADRENAL: (70, 8, True),
    _T.GUT_WALL: (85, 8, True),
    _T.GUT_FLUID: (18, 5, False),
    _T.STOOL: (-60, 110, False),
    _T.GAS: (-1000, 8, False),
    _T.BILE: (10, 3, False),
    _T.PROSTATE: (50, 8, True),
    _T.ARTERY: (170, 6, True),
    _T.VEIN: (145, 6, True),
    _T.PORTAL: (175, 6, True),
    _T.CORTICAL: (850, 70, False),
    _T.CANCELLOUS: (240, 45, False),
    _T.DISC: (85, 8, False),
    _T.CARTILAGE: (110, 12, False),
    _T.CSF: (12, 4, False),
    _T.LESION_HYPO: (48, 12, True),
    _T.LESION_HYPER: (165, 15, True),
    _T.RENAL_TUMOUR: (100, 30, True),
    _T.CYST: (10, 3, False),
}


@functools.cache
def _ids() -> dict[str, int]:
    """Catalogue ids of the classes a phantom draws, keyed by lower-case catalogue name."""
    names = (
        "Spleen", "Right Kidney", "Left Kidney", "Gallbladder", "Esophagus", "Liver", "Stomach", "Aorta",
        "Inferior Vena Cava", "Portal Vein and Splenic Vein", "Pancreas", "Right Adrenal Gland",
        "Left Adrenal Gland", "Duodenum", "Hepatic Vessel", "Right Lung", "Left Lung", "Colon",
        "Intestine", "Rectum", "Bladder", "Prostate", "Left Femoral Head", "Right Femoral Head",
        "Celiac Trunk", *LESION_CLASSES,
    )  # fmt: skip
    catalog = Catalog.default()
    return {name.lower(): catalog[name].id for name in names}


# -- public API ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic CT and its labels.

    ``image``: int16 (X, Y, Z), HU. ``label``: uint8 (X, Y, Z), catalogue ids (0 background).
    ``affine``: float64 (4, 4), voxel index (i, j, k) to world RAS+ millimetres.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    seed: int

    def class_ids(self) -> list[int]:
        """The catalogue ids present in ``label``, ascending."""
        counts = np.bincount(self.label.ravel(), minlength=256)
        return [int(i) for i in np.flatnonzero(counts[1:]) + 1]


def make_phantom(
    seed: int = 0,
    shape: Sequence[int] = CLINICAL_SHAPE,
    spacing: Sequence[float] = CLINICAL_SPACING,
    orientation: str = "RAS",
    lesions: bool | Iterable[str] = False,
    noise: float = 12.0,
) -> Phantom:
    """A phantom CT for ``seed``.

    ``shape``: voxels (X, Y, Z); ``spacing``: mm per voxel along X, Y, Z; ``orientation``: ``"RAS"``
    or ``"LPS"``, the direction in which voxel indices grow; ``lesions``: ``True`` for all of
    :data:`LESION_CLASSES`, or an iterable of some of their names, each drawn inside its organ and
    labelled with its own id; ``noise``: SD of the image noise in HU.
    """
    seed, shape, spacing = _check_seed(seed), _check_shape(shape), _check_spacing(spacing)
    orientation, noise = _check_orientation(orientation), _check_noise(noise)
    lesion_ids = _check_lesions(lesions)
    anatomy_rng, lesion_rng, look_rng, texture_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    anatomy = _plan(anatomy_rng)
    drawn = [lesion for lesion in _plan_lesions(lesion_rng, anatomy) if lesion.label in lesion_ids]
    tissue, label = _paint([*anatomy.steps, *drawn], _world_axes(shape, spacing), anatomy.warp)
    image = _synthesize(tissue, _tissue_tables(look_rng), spacing, noise, texture_rng, noise_rng)
    flip = (0, 1) if orientation == "LPS" else ()
    return Phantom(
        image=np.ascontiguousarray(np.flip(image, flip)),
        label=np.ascontiguousarray(np.flip(label, flip)),
        affine=_affine(shape, spacing, orientation),
        seed=seed,
    )


def save_phantom(phantom: Phantom, image_path: str | Path, label_path: str | Path | None = None) -> None:
    """Write the image (int16 HU) and, if ``label_path`` is given, the label map (uint8) as NIfTI.

    Paths end in ``.nii`` or ``.nii.gz``; each file is written beside its destination and then moved
    into place, so a reader never sees half a file.
    """
    for path in (image_path, label_path):
        if path is not None:
            check_nifti_path(path)
    write_nifti(phantom.image, phantom.affine, image_path, is_label=False)
    if label_path is not None:
        write_nifti(phantom.label, phantom.affine, label_path, is_label=True)


@dataclass(frozen=True)
class DatasetSpec:
    """One partially labelled dataset in the layout of the Medical Segmentation Decathlon.

    ``labels``: for label values 1, 2, ... in order, the dataset's name for the value and the
    catalogue classes it covers. ``lesions``: the lesion classes drawn in its cases.
    ``orientation``: of its files, unless :func:`write_datasets` is given one.
    """

    name: str
    labels: tuple[tuple[str, tuple[str, ...]], ...]
    lesions: tuple[str, ...] = ()
    orientation: str = "RAS"
    description: str = ""

    def encode(self, label: np.ndarray) -> np.ndarray:
        """The dataset's label map (uint8, same shape) for a phantom label map in catalogue ids."""
        catalog = Catalog.default()
        table = np.zeros(256, np.uint8)
        for value, (_, classes) in enumerate(self.labels, start=1):
            table[catalog.ids(classes)] = value
        return table[label]

    def label_names(self) -> dict[str, str]:
        """``{"0": "background", "1": name, ...}`` as ``dataset.json`` writes them."""
        return {"0": "background", **{str(v): name for v, (name, _) in enumerate(self.labels, start=1)}}


_LIVER = ("Liver", "Hepatic Vessel")  # datasets draw the liver with the vessels inside it
_BTCV_NAMES = ("spleen", "rkid", "lkid", "gall", "eso", "liver", "sto", "aorta", "IVC", "veins", "pancreas",
               "rad", "lad")  # fmt: skip
_AMOS_NAMES = ("spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver", "stomach",
               "aorta", "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum",
               "bladder", "prostate/uterus")  # fmt: skip
_KIDNEYS = ("Right Kidney", "Left Kidney")
_ADRENALS = ("Right Adrenal Gland", "Left Adrenal Gland")
_ABDOMEN = ("Spleen", "Right Kidney", "Left Kidney", "Gallbladder", "Esophagus", _LIVER, "Stomach", "Aorta",
            "Inferior Vena Cava")  # fmt: skip


def _numbered(names: Sequence[str], classes: Sequence[str | tuple[str, ...]]) -> tuple:
    """``DatasetSpec.labels`` for label names and the class (or classes) each one covers."""
    return tuple((n, c if isinstance(c, tuple) else (c,)) for n, c in zip(names, classes, strict=True))


DATASETS = (
    DatasetSpec(
        "Task03_Liver", _numbered(("liver", "cancer"), (_LIVER, "Liver Tumor")), lesions=("Liver Tumor",),
        orientation="LPS", description="liver and liver tumours",
    ),
    DatasetSpec("Task09_Spleen", _numbered(("spleen",), ("Spleen",)), description="spleen"),
    DatasetSpec(
        "Task07_Pancreas", _numbered(("pancreas", "cancer"), ("Pancreas", "Pancreas Tumor")),
        lesions=("Pancreas Tumor",), orientation="LPS", description="pancreas and pancreatic tumours",
    ),
    DatasetSpec(
        "KiTS",
        _numbered(("kidney", "tumor", "cyst"), (_KIDNEYS, "Kidney Tumor", "Kidney Cyst")),
        lesions=("Kidney Tumor", "Kidney Cyst"), description="both kidneys as one value, tumours and cysts",
    ),
    DatasetSpec(
        "SpleenPancreasStomach",
        _numbered(("spleen", "pancreas", "stomach"), ("Spleen", "Pancreas", "Stomach")),
        orientation="LPS",
        description="spleen, pancreas and stomach",
    ),
    DatasetSpec(
        "BTCV",
        _numbered(_BTCV_NAMES, (*_ABDOMEN, "Portal Vein and Splenic Vein", "Pancreas", *_ADRENALS)),
        description="13 abdominal organs, numbered as the catalogue",
    ),
    DatasetSpec(
        "AbdomenCT-1K",
        _numbered(("liver", "kidney", "spleen", "pancreas"), (_LIVER, _KIDNEYS, "Spleen", "Pancreas")),
        orientation="LPS",
        description="liver, kidneys as one value, spleen, pancreas",
    ),
    DatasetSpec(
        "AMOS",
        _numbered(_AMOS_NAMES, (*_ABDOMEN, "Pancreas", *_ADRENALS, "Duodenum", "Bladder", "Prostate")),
        description="15 abdominal organs in AMOS numbering",
    ),
)


def write_datasets(
    folder: str | Path,
    datasets: Iterable[str | DatasetSpec] | None = None,
    cases_per_dataset: int = 2,
    seed: int = 0,
    shape: Sequence[int] = DATASET_SHAPE,
    spacing: Sequence[float] = DATASET_SPACING,
    orientation: str | None = None,
    noise: float = 12.0,
) -> list[Path]:
    """Write partially labelled datasets (:data:`DATASETS`, those named, or specs) under ``folder``.

    Each dataset is a folder ``folder/NAME`` with ``imagesTr/``, ``labelsTr/`` and ``dataset.json``;
    its label files use the dataset's own numbering (:meth:`DatasetSpec.encode`). Every case is a
    different patient; the same arguments write the same files. Returns the dataset folders.
    """
    specs = _select_datasets(datasets)
    if isinstance(cases_per_dataset, bool) or not isinstance(cases_per_dataset, int) or cases_per_dataset < 1:
        raise UniversalError(f"cases_per_dataset must be a positive integer, not {cases_per_dataset!r}")
    seed = _check_seed(seed)
    make = functools.partial(make_phantom, shape=shape, spacing=spacing, noise=noise)
    folders = []
    for spec in specs:
        index = DATASETS.index(spec) if spec in DATASETS else len(DATASETS) + specs.index(spec)
        seeds = [int(np.random.SeedSequence([seed, index, n]).generate_state(1)[0]) for n in range(cases_per_dataset)]
        cases = (make(s, orientation=orientation or spec.orientation, lesions=spec.lesions) for s in seeds)
        folders.append(_write_dataset(Path(folder) / spec.name, spec, cases))
    return folders


def _write_dataset(root: Path, spec: DatasetSpec, cases: Iterable[Phantom]) -> Path:
    """Write ``cases`` into ``root/imagesTr`` and ``root/labelsTr`` (labels encoded for ``spec``),
    then ``root/dataset.json``; returns ``root``."""
    training = []
    for number, phantom in enumerate(cases):
        name = f"{spec.name.lower()}_{number:03d}.nii.gz"
        write_nifti(phantom.image, phantom.affine, root / "imagesTr" / name, is_label=False)
        write_nifti(spec.encode(phantom.label), phantom.affine, root / "labelsTr" / name, is_label=True)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    atomic_write_text(root / "dataset.json", json.dumps(_dataset_json(spec, training), indent=2) + "\n")
    return root


# -- checks -------------------------------------------------------------------------------------


def _check_seed(seed: int) -> int:
    """``seed`` as an int, if it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UniversalError(f"seed must be a non-negative integer, not {seed!r}")
    return int(seed)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as three positive ints (voxels along X, Y, Z)."""
    values = tuple(shape) if isinstance(shape, Iterable) else (shape,)
    integers = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values)
    if len(values) != 3 or not integers:
        raise UniversalError(f"shape must be three integers X Y Z (voxels), e.g. 128 128 64; got {shape!r}")
    if min(values) < 1:
        raise UniversalError(f"shape must be positive in every axis; got {values}")
    return tuple(int(v) for v in values)


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    """``spacing`` as three positive floats (mm per voxel along X, Y, Z)."""
    values = tuple(spacing) if isinstance(spacing, Iterable) else (spacing,)
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3:
        raise UniversalError(
            f"spacing must be three numbers X Y Z (mm per voxel), e.g. 0.8 0.8 2.5; got {spacing!r}"
        )
    if not all(math.isfinite(v) and v > 0 for v in numbers):
        raise UniversalError(f"spacing must be positive millimetres in every axis; got {numbers}")
    return numbers


def _check_orientation(orientation: str) -> str:
    """``orientation`` as one of :data:`ORIENTATIONS`, upper case."""
    code = str(orientation).upper()
    if code not in ORIENTATIONS:
        raise UniversalError(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {orientation!r}")
    return code


def _check_noise(noise: float) -> float:
    """``noise`` as a float SD in HU, zero or more."""
    try:
        value = float(noise)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UniversalError(f"noise must be a standard deviation in HU, zero or more; got {noise!r}")
    return value


def _check_lesions(lesions: bool | Iterable[str]) -> set[int]:
    """Catalogue ids of the lesion classes to draw."""
    if isinstance(lesions, bool):
        names = LESION_CLASSES if lesions else ()
    elif isinstance(lesions, str) or not isinstance(lesions, Iterable):
        raise UniversalError(f"lesions must be True, False or a list of lesion classes; got {lesions!r}")
    else:
        names = tuple(lesions)
    catalog = Catalog.default()
    allowed = {catalog[name].id for name in LESION_CLASSES}
    ids = set(catalog.ids(names))
    if not ids <= allowed:
        unknown = ", ".join(catalog[i].name for i in sorted(ids - allowed))
        raise UniversalError(f"phantoms draw lesions of {', '.join(LESION_CLASSES)} only, not {unknown}")
    return ids


def _select_datasets(names: Iterable[str | DatasetSpec] | None) -> list[DatasetSpec]:
    """The specs of :data:`DATASETS` named in ``names`` (any case) or given as specs, or all of them
    for None."""
    if names is None:
        return list(DATASETS)
    by_name = {spec.name.lower(): spec for spec in DATASETS}
    chosen = []
    for name in [names] if isinstance(names, str) else names:
        spec = name if isinstance(name, DatasetSpec) else by_name.get(str(name).lower())
        if spec is None:
            known = ", ".join(s.name for s in DATASETS)
            raise UniversalError(f"unknown dataset {name!r}; choose from {known}")
        chosen.append(spec)
    return chosen


# -- grid and files -----------------------------------------------------------------------------


def _world_axes(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """World coordinates (mm, RAS+, ascending) of the voxel centres along x, y and z."""
    extent_z = shape[2] * spacing[2]
    centre = (0.0, 0.0, min(_Z_UPPER_ABDOMEN, _Z_TOP - extent_z / 2))
    return tuple(
        ((np.arange(n) - (n - 1) / 2) * s + c).astype(np.float32)
        for n, s, c in zip(shape, spacing, centre, strict=True)
    )


def _paint(steps: list, axes: tuple[np.ndarray, ...], warp: _Warp) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and label maps (uint8, ascending RAS+ grid on ``axes``) after painting ``steps`` in order."""
    canvas = _Canvas(axes, warp)
    for step in steps:
        step.paint(canvas)
    return canvas.tissue, canvas.label


def _affine(shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: str) -> np.ndarray:
    """The 4×4 voxel-to-world (RAS+ mm) matrix of a grid from :func:`_world_axes`."""
    axes = _world_axes(shape, spacing)
    signs = (-1.0, -1.0, 1.0) if orientation == "LPS" else (1.0, 1.0, 1.0)
    affine = np.diag([*(s * d for s, d in zip(signs, spacing, strict=True)), 1.0])
    affine[:3, 3] = [float(a[-1] if s < 0 else a[0]) for a, s in zip(axes, signs, strict=True)]
    return affine


def _dataset_json(spec: DatasetSpec, training: list[dict[str, str]]) -> dict:
    """The ``dataset.json`` document of the Medical Segmentation Decathlon for ``spec``."""
    return {
        "name": spec.name,
        "description": f"Synthetic abdominal CT phantoms: {spec.description}",
        "reference": "universal.phantoms",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": spec.label_names(),
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }


# -- warp and canvas ----------------------------------------------------------------------------


class _Warp:
    """World → reference coordinates: ``q = (p + D(p)) / scale``.

    ``scale`` (3,) is the patient's build. ``D`` is a smooth random displacement (mm): each
    component varies with the two other coordinates (x shifts with y and z, and so on), as a sum of
    products of cosines of wavelengths 70 to 420 mm, so organs bend, shear and shift against each
    other while the warp costs one operation per voxel and axis.
    """

    def __init__(self, rng: np.random.Generator):
        xy, z = rng.uniform(0.92, 1.08), rng.uniform(0.92, 1.08)
        self.scale = np.array([xy, xy, z])
        bands = (((260.0, 420.0), (3.0, 7.0)), ((160.0, 260.0), (2.0, 4.0)), ((70.0, 130.0), (1.0, 2.5)))
        self.terms = [
            [(rng.uniform(*amplitude), 2 * np.pi / rng.uniform(*wavelength, 2), rng.uniform(0, 2 * np.pi, 2))
             for wavelength, amplitude in bands]
            for _ in range(3)
        ]  # fmt: skip
        self.reach = np.array([sum(term[0] for term in terms) for terms in self.terms])

    def world_bounds(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World bounds (mm) that hold every point whose reference coordinates lie in [lo, hi]."""
        return lo * self.scale - self.reach, hi * self.scale + self.reach

    def apply(self, p: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Reference coordinates (3 float32 arrays of the box's shape) of world points ``p`` (3 axes
        shaped to broadcast, as :attr:`_Box.p`)."""
        q = []
        for axis, terms in enumerate(self.terms):
            u, v = (p[i] for i in range(3) if i != axis)
            shift = sum(a * np.cos(k[0] * u + f[0]) * np.cos(k[1] * v + f[1]) for a, k, f in terms)
            inverse = np.float32(1 / self.scale[axis])
            q.append(p[axis] * inverse + (shift * inverse).astype(np.float32))
        return tuple(q)


class _Canvas:
    """The volume being painted, on the ascending RAS+ grid: tissue and label maps, body masks."""

    def __init__(self, axes: tuple[np.ndarray, ...], warp: _Warp):
        self.axes, self.warp = axes, warp
        shape = tuple(len(a) for a in axes)
        self.tissue = np.zeros(shape, np.uint8)
        self.label = np.zeros(shape, np.uint8)
        self.body = np.zeros(shape, bool)
        self.cavity = np.zeros(shape, bool)

    def boxes(self, lo: Sequence[float], hi: Sequence[float], world: bool = False) -> Iterator[_Box]:
        """Chunks of the grid covering the bounds [lo, hi] (reference mm, or world mm if ``world``)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if not world:
            lo, hi = self.warp.world_bounds(lo, hi)
        ranges = []
        for coords, a, b in zip(self.axes, lo, hi, strict=True):
            start, stop = int(np.searchsorted(coords, a)), int(np.searchsorted(coords, b, side="right"))
            if start >= stop:
                return
            ranges.append((start, stop))
        (i0, i1), (j0, j1), (k0, k1) = ranges
        step = max(1, _CHUNK_VOXELS // ((i1 - i0) * (j1 - j0)))
        for k in range(k0, k1, step):
            yield _Box(self, (slice(i0, i1), slice(j0, j1), slice(k, min(k + step, k1))))


class _Box:
    """A block of the canvas: world axes ``p`` (broadcastable), reference coordinates ``q``."""

    def __init__(self, canvas: _Canvas, slices: tuple[slice, slice, slice]):
        self.canvas, self.slices = canvas, slices
        self.coords = tuple(a[s] for a, s in zip(canvas.axes, slices, strict=True))
        x, y, z = self.coords
        self.p = (x[:, None, None], y[None, :, None], z[None, None, :])
        self.shape = (len(x), len(y), len(z))

    @functools.cached_property
    def q(self) -> tuple[np.ndarray, ...]:
        """Reference coordinates (mm) of the voxel centres: 3 float32 arrays of the box's shape."""
        return self.canvas.warp.apply(self.p)

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Slices of this box that hold the reference bounds [lo, hi], or None if none do."""
        lo, hi = self.canvas.warp.world_bounds(lo, hi)
        window = []
        for coords, a, b in zip(self.coords, lo, hi, strict=True):
            start, stop = int(np.searchsorted(coords, a)), int(np.searchsorted(coords, b, side="right"))
            if start >= stop:
                return None
            window.append(slice(start, stop))
        return window[0], window[1], window[2]

    def view(self, name: str) -> np.ndarray:
        """This block of a canvas array (``tissue``, ``label``, ``body``, ``cavity``), writable."""
        return getattr(self.canvas, name)[self.slices]

    def allowed(self, gate: str | tuple[int, ...]) -> np.ndarray:
        """Where painting may happen: inside the ``"body"``, the ``"cavity"``, or labels ``gate``."""
        if isinstance(gate, str):
            return self.view(gate)
        table = np.zeros(256, bool)
        table[list(gate)] = True
        return table[self.view("label")]

    def paint(self, mask: np.ndarray, tissue: int | np.ndarray, label: int = 0) -> None:
        """Set tissue (a value, or an array broadcastable to the box) and label where ``mask``."""
        np.copyto(self.view("tissue"), tissue, casting="unsafe", where=mask)
        np.copyto(self.view("label"), label, casting="unsafe", where=mask)


# -- shapes -------------------------------------------------------------------------------------


def _rotation(degrees: Sequence[float]) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx for angles (about x, about y, about z) in degrees."""
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Ellipsoid:
    """An ellipsoid in reference mm: ``centre`` (3,), ``semi`` axes (3,), ``rotation`` (3, 3)."""

    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Corners (reference mm) of the axis-aligned box around the ellipsoid."""
        extent = np.sqrt((self.rotation**2) @ self.semi**2)
        return self.centre - extent, self.centre + extent

    def radius(self, q: tuple[np.ndarray, ...]) -> np.ndarray:
        """Normalised radius of points ``q``: below 1 inside, 1 on the surface."""
        d = [q[i] - np.float32(self.centre[i]) for i in range(3)]
        total = None
        for j in range(3):
            r = self.rotation[:, j] / self.semi[j]
            u = d[0] * np.float32(r[0]) + d[1] * np.float32(r[1]) + d[2] * np.float32(r[2])
            total = u * u if total is None else total + u * u
        return np.sqrt(total)

    def point(self, local: np.ndarray) -> np.ndarray:
        """Reference coordinates of a point given in units of the semi axes (local frame)."""
        return self.centre + self.rotation @ (np.asarray(local) * self.semi)


def _jitter(
    rng: np.random.Generator,
    centre: Sequence[float],
    semi: Sequence[float],
    angles: Sequence[float] = (0, 0, 0),
    shift: float = 5.0,
    size: float = 0.1,
    turn: float = 6.0,
) -> _Ellipsoid:
    """An ellipsoid near the given one: centre moved by ``shift`` mm SD, axes scaled ±``size``."""
    return _Ellipsoid(
        np.asarray(centre, float) + rng.normal(0, shift, 3),
        np.asarray(semi, float) * rng.uniform(1 - size, 1 + size, 3),
        _rotation(np.asarray(angles, float) + rng.normal(0, turn, 3)),
    )


def _path(
    rng: np.random.Generator,
    rows: Sequence[Sequence[float]],
    shift: float = 4.0,
    size: float = 0.1,
    step: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth centreline through jittered control rows (x, y, z, radius), sampled every ``step`` mm.

    Control points move by ``shift`` mm SD and radii scale by up to ±``size``; returns the points
    (n, 3) and radii (n,) in reference mm.
    """
    rows = np.asarray(rows, float)
    points = rows[:, :3] + rng.normal(0, shift, (len(rows), 3))
    radii = rows[:, 3] * rng.uniform(1 - size, 1 + size, len(rows))
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    samples = np.linspace(0, length[-1], max(2, int(length[-1] / step) + 1))
    if len(points) > 2:
        curve = CubicSpline(length, points, bc_type="natural")(samples)
    else:
        curve = np.stack([np.interp(samples, length, points[:, i]) for i in range(3)], axis=1)
    return curve, np.interp(samples, length, radii)


def _segment(q: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For points ``q``: distance (mm) to the segment a→b and position t ∈ [0, 1] along it."""
    v = b - a
    d = [q[i] - np.float32(a[i]) for i in range(3)]
    t = (d[0] * np.float32(v[0]) + d[1] * np.float32(v[1]) + d[2] * np.float32(v[2])) / np.float32(v @ v)
    np.maximum(t, 0, out=t)
    np.minimum(t, 1, out=t)
    e = [d[i] - t * np.float32(v[i]) for i in range(3)]
    return np.sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]), t


# -- painting steps -----------------------------------------------------------------------------

Gate = str | tuple[int, ...]


@dataclass(frozen=True)
class _Solid:
    """An ellipsoid painted in layers: ``(normalised radius, tissue)``, outermost first."""

    shape: _Ellipsoid
    layers: tuple[tuple[float, int], ...]
    label: int = 0
    gate: Gate = "cavity"

    def paint(self, canvas: _Canvas) -> None:
        for box in canvas.boxes(*self.shape.bounds()):
            radius = self.shape.radius(box.q)
            allowed = box.allowed(self.gate)
            for limit, tissue in self.layers:
                box.paint((radius <= limit) & allowed, tissue, self.label)


@dataclass(frozen=True)
class _Duct:
    """A tube along a centreline: a wall and a lumen, gas in the lumen above a height per segment.

    ``points`` (n, 3) and ``radii`` (n,) in reference mm; ``gas`` (n - 1,): per segment, the
    reference y (mm) above which the lumen holds gas (``inf``: none). ``wall`` 0 paints ``lumen`` only.
    """

    points: np.ndarray
    radii: np.ndarray
    wall: float
    wall_tissue: int
    lumen: int
    label: int = 0
    gate: Gate = "cavity"
    gas: np.ndarray | None = None

    def paint(self, canvas: _Canvas) -> None:
        reach = self.radii.max()
        for box in canvas.boxes(self.points.min(axis=0) - reach, self.points.max(axis=0) + reach):
            depth, nearest = self._depth(box)
            mask = (depth >= 0) & box.allowed(self.gate)
            if not mask.any():
                continue
            tissue = np.full(box.shape, self.wall_tissue if self.wall > 0 else self.lumen, np.uint8)
            lumen = depth >= self.wall
            tissue[lumen] = self.lumen
            if self.gas is not None:
                tissue[lumen & (box.q[1] > self.gas[nearest].astype(np.float32))] = _T.GAS
            box.paint(mask, tissue, self.label)

    def _depth(self, box: _Box) -> tuple[np.ndarray, np.ndarray]:
        """Depth (mm) under the tube's surface (negative outside) and index of the nearest segment."""
        depth = np.full(box.shape, -np.inf, np.float32)
        nearest = np.zeros(box.shape, np.int16)
        for n in range(len(self.points) - 1):
            a, b, ra, rb = self.points[n], self.points[n + 1], self.radii[n], self.radii[n + 1]
            window = box.window(np.minimum(a, b) - max(ra, rb), np.maximum(a, b) + max(ra, rb))
            if window is None:
                continue
            distance, t = _segment(tuple(c[window] for c in box.q), a, b)
            inside = ra + t * np.float32(rb - ra) - distance
            current = depth[window]
            better = inside > current
            current[better] = inside[better]
            nearest[window][better] = n
        return depth, nearest


def _profile(knots: Sequence[float], values: Sequence[float], z: np.ndarray) -> np.ndarray:
    """``values`` at heights ``z`` (mm), linear between ``knots``, as float32 of ``z``'s shape."""
    return np.interp(z, knots, values).astype(np.float32)


@dataclass(frozen=True)
class _Body:
    """Body outline at the outer surface of the muscle wall, then subcutaneous fat and skin.

    ``knots`` z (reference mm); ``width``, ``front``, ``back``: half width (x), front and back
    distance (y) of the muscle wall at those heights; ``fat``, ``wall``: thicknesses in mm.
    """

    knots: tuple[float, ...]
    width: np.ndarray
    front: np.ndarray
    back: np.ndarray
    fat: float
    wall: float

    def reach(self) -> float:
        """Distance (mm) from the body axis that holds the whole body at any height."""
        return float(max(self.width.max(), self.front.max(), self.back.max()) + self.fat + 2 * _SKIN_MM)

    def depth(self, box: _Box) -> np.ndarray:
        """Depth (mm) under the outer surface of the muscle wall, along the ray from the body axis."""
        qx, qy, _ = box.q
        z = box.p[2] / np.float32(box.canvas.warp.scale[2])
        a = _profile(self.knots, self.width, z)
        b = np.where(qy > 0, _profile(self.knots, self.front, z), _profile(self.knots, self.back, z))
        rho = np.sqrt(qx * qx + qy * qy)
        scaled = np.maximum(np.sqrt((qx / a) ** 2 + (qy / b) ** 2), 1e-6)
        return rho / scaled - rho

    def paint(self, canvas: _Canvas) -> None:
        reach = self.reach()
        for box in canvas.boxes((-reach, -reach, -np.inf), (reach, reach, np.inf)):
            depth = self.depth(box)
            fat = np.where(box.q[1] < 0, np.float32(0.6 * self.fat), np.float32(self.fat))
            body = depth > -(fat + _SKIN_MM)
            tissue = np.full(box.shape, _T.SKIN, np.uint8)
            tissue[depth > -fat] = _T.FAT
            tissue[depth > 0] = _T.MUSCLE
            tissue[depth > self.wall] = _T.VISCERAL_FAT
            box.paint(body, tissue)
            box.view("body")[...] = body
            box.view("cavity")[...] = depth > self.wall


@dataclass(frozen=True)
class _Table:
    """The scanner table under the patient's back, at world height ``top`` (mm)."""

    top: float

    def paint(self, canvas: _Canvas) -> None:
        for box in canvas.boxes((-230, self.top - 12, -np.inf), (230, self.top, np.inf), world=True):
            box.paint(np.ones(box.shape, bool), _T.TABLE)


@dataclass(frozen=True)
class _Thorax:
    """Diaphragm, lungs, heart and mediastinum above the two domes of the diaphragm.

    ``domes`` (2, 3): apex (x, y, z) of the right and left dome, reference mm; ``heart``;
    ``mediastinum``: ellipse (centre x, centre y, half width, half depth) in the axial plane kept
    free of lung behind the heart, around the spine, aorta and esophagus.
    """

    domes: np.ndarray
    heart: _Ellipsoid
    mediastinum: tuple[float, float, float, float]

    def diaphragm(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Height (reference z, mm) of the diaphragm's upper surface above (x, y)."""
        heights = []
        for ax, ay, az in self.domes:
            dy = (qy - np.float32(ay)) / 100
            dx = (qx - np.float32(ax)) / 100
            heights.append(np.float32(az) - 50 * dx * dx - np.where(dy < 0, np.float32(70), np.float32(35)) * dy * dy)
        return np.maximum(*heights)

    def paint(self, canvas: _Canvas) -> None:
        ids = _ids()
        mx, my, hw, hd = self.mediastinum
        for box in canvas.boxes((-300, -300, self.domes[:, 2].min() - 120), (300, 300, np.inf)):
            qx, qy, qz = box.q
            cavity = box.view("cavity")
            height = qz - self.diaphragm(qx, qy)
            above = cavity & (height > 0)
            thorax = above & (height > 5)
            box.paint(above, _T.MUSCLE)
            box.paint(thorax, _T.VISCERAL_FAT)
            heart = np.full(box.shape, np.inf, np.float32)
            window = box.window(*self.heart.bounds())
            if window is not None:
                heart[window] = self.heart.radius(tuple(c[window] for c in box.q))
            lung = thorax & (heart > 1.12) & (((qx - mx) / hw) ** 2 + ((qy - my) / hd) ** 2 > 1)
            box.paint(lung & (qx >= mx), _T.LUNG, ids["right lung"])
            box.paint(lung & (qx < mx), _T.LUNG, ids["left lung"])
            box.paint(thorax & (heart <= 1), _T.MYOCARDIUM)
            box.paint(thorax & (heart <= 0.8), _T.BLOOD)
            cavity[above] = False


@dataclass(frozen=True)
class _Spine:
    """Vertebrae with discs and canal above the sacrum; the sacrum and coccyx below ``sacrum`` (z)."""

    knots: tuple[float, ...]
    centre_y: tuple[float, ...]
    radius: tuple[float, ...]
    pitch: float
    phase: float
    sacrum: float

    def paint(self, canvas: _Canvas) -> None:
        for box in canvas.boxes((-80, -140, -np.inf), (80, 20, np.inf)):
            qx, qy, qz = box.q
            z = box.p[2] / np.float32(box.canvas.warp.scale[2])
            yv, rv = _profile(self.knots, self.centre_y, z), _profile(self.knots, self.radius, z)
            level = np.mod((qz - self.phase) / self.pitch, 1.0)
            disc = level < 8 / self.pitch
            spine = z > self.sacrum
            body = (qx / (1.1 * rv)) ** 2 + ((qy - yv) / (0.85 * rv)) ** 2
            canal_y = yv - 0.85 * rv - 11
            canal = qx**2 + (qy - canal_y) ** 2
            middle = (level > 0.35) & (level < 0.8)
            arch = (canal <= 17**2) | middle & (
                (np.abs(qx) < 4.5) & (qy < canal_y - 12) & (qy > canal_y - 40)
                | (np.abs(qx) < 38) & (np.abs(qy - canal_y - 4) < 5)
            )
            width = np.interp(z, (-290, self.sacrum), (12, 52)).astype(np.float32)
            sacrum = ~spine & ((qx / width) ** 2 + ((qy - yv) / 20) ** 2 <= 1)
            box.paint((spine & (body <= 1) | sacrum), _T.CORTICAL)
            marrow = spine & (body <= (1 - 2.5 / rv) ** 2) | sacrum & (np.abs(qx) < width - 3)
            box.paint(marrow, _T.CANCELLOUS)
            box.paint(spine & disc & (body <= 1), _T.DISC)
            box.paint(spine & ~disc & arch & (canal > 10**2), _T.CANCELLOUS)
            box.paint(spine & (canal <= 10**2) | ~spine & (z > -260) & (canal <= 6**2), _T.CSF)


@dataclass(frozen=True)
class _Ribs:
    """Ribs, costal cartilage and sternum in the chest wall of ``body``."""

    body: _Body
    pitch: float
    phase: float
    xiphoid: float

    def paint(self, canvas: _Canvas) -> None:
        reach = self.body.reach()
        for box in canvas.boxes((-reach, -reach, -40), (reach, reach, np.inf)):
            depth = self.body.depth(box)
            shell = (depth > self.body.wall - 4) & (depth < self.body.wall + 6) & box.view("body")
            if not shell.any():
                continue
            qx, qy, qz = (np.broadcast_to(a, box.shape)[shell] for a in box.q)
            front = qy / np.maximum(np.sqrt(qx * qx + qy * qy), 1e-3)
            lowest = 25 + 10 * front - 40 * (1 - front * front)
            pattern = np.mod((qz + 45 * (front + 1) / 2 - self.phase) / self.pitch, 1.0) < 10 / self.pitch
            rib = (qz > lowest) & pattern & (front < 0.93)
            sternum = (front >= 0.93) & (qz > self.xiphoid) & (np.abs(qx) < 18)
            tissue = np.where(front > 0.64, _T.CARTILAGE, _T.CANCELLOUS).astype(np.uint8)
            tissue[sternum] = _T.CANCELLOUS
            mask = np.zeros(box.shape, bool)
            values = np.zeros(box.shape, np.uint8)
            mask[shell] = rib | sternum
            values[shell] = tissue
            box.paint(mask, values)


@dataclass(frozen=True)
class _IliacWings:
    """The iliac bones as a curved shell around the pelvic inlet between ``top`` and ``bottom`` (z)."""

    top: float
    bottom: float
    half_width: tuple[float, float]
    depth: float

    def paint(self, canvas: _Canvas) -> None:
        wide = max(self.half_width)
        for box in canvas.boxes((-wide - 10, -120, self.bottom), (wide + 10, 60, self.top)):
            qx, qy, qz = box.q
            z = box.p[2] / np.float32(box.canvas.warp.scale[2])
            a = _profile((self.bottom, self.top), self.half_width, z)
            cy = np.float32(-15)
            rho = np.sqrt(qx * qx + (qy - cy) ** 2)
            scaled = np.maximum(np.sqrt((qx / a) ** 2 + ((qy - cy) / self.depth) ** 2), 1e-6)
            inside = rho / scaled - rho
            front = (qy - cy) / np.maximum(rho, 1e-3)
            shell = (inside > 0) & (inside < 9) & (front > -0.8) & (front < 0.35)
            shell &= (qz > self.bottom) & (qz < self.top) & box.view("body")
            box.paint(shell, _T.CORTICAL)
            box.paint(shell & (inside > 2.5) & (inside < 6.5), _T.CANCELLOUS)


# -- the anatomy --------------------------------------------------------------------------------

# fmt: off
# Reference anatomy in mm: x to the patient's right, y to the front, z up, z = 0 near the L1-L2 disc.
# Centrelines are rows of (x, y, z, radius); paired structures are given for the patient's right.
_PSOAS = ((25, -40, 30, 5), (38, -40, -20, 11), (48, -35, -90, 20), (58, -15, -160, 20), (65, 15, -220, 15),
          (85, 38, -265, 13))
_QUADRATUS = ((62, -68, 30, 6), (66, -72, -30, 12), (70, -70, -85, 10))
_COLON = ((72, 22, -125, 28), (85, 5, -95, 25), (92, 0, -60, 24), (80, 30, -35, 23), (45, 62, -50, 22),
          (0, 66, -62, 22), (-45, 58, -45, 22), (-88, 20, -10, 22), (-100, -8, -40, 20), (-98, -10, -100, 20),
          (-82, 5, -140, 19), (-45, 35, -160, 18), (-10, 30, -180, 18), (5, -5, -195, 18))
_RECTUM = ((5, -5, -195, 18), (0, -35, -215, 20), (0, -38, -250, 20), (0, -32, -285, 14), (0, -28, -310, 9))
_DUODENUM = ((15, 58, 12, 11), (35, 45, 5, 13), (52, 25, -5, 12), (55, 15, -30, 12), (52, 10, -55, 12),
             (35, 15, -65, 12), (5, 18, -68, 11), (-25, 18, -55, 11), (-38, 20, -35, 11))
_STOMACH = ((-58, -5, 82, 30), (-60, 8, 58, 33), (-52, 30, 32, 28), (-35, 50, 18, 22), (-5, 63, 14, 16),
            (15, 58, 12, 11))
_PANCREAS = ((15, 12, -30, 9), (30, 25, -15, 15), (5, 42, 5, 11), (-30, 32, 12, 11), (-60, 12, 20, 10),
             (-82, -10, 28, 9))
_HEPATIC_VESSELS = (((20, -5, 80, 6), (110, -15, 55, 2.5)), ((20, -5, 80, 6), (60, 45, 45, 2.5)),
                    ((20, -5, 80, 6), (-25, 45, 65, 2.5)),
                    ((45, 15, 40, 6), (100, 0, 30, 4), (115, -20, 10, 2.5)),
                    ((45, 15, 40, 6), (10, 40, 45, 4), (-30, 55, 55, 2.5)))
_PORTAL_SPLENIC = ((-88, -28, 32, 5), (-78, -18, 26, 5.5), (-50, 5, 18, 5.5), (-20, 22, 12, 6),
                   (10, 26, 6, 7), (28, 22, 25, 7), (45, 15, 40, 7))
_IVC = ((18, -12, -88, 10), (22, -3, -40, 12), (22, -3, 10, 12), (20, -5, 50, 13), (18, -3, 85, 13),
        (5, 15, 110, 13))
_AORTA = ((-28, -22, 260, 12), (-28, -22, 100, 12), (-15, -8, 45, 11.5), (-12, 0, 0, 11), (-10, 2, -75, 10),
          (-10, 0, -85, 9))
_RENAL_VEINS = (((-45, -30, 2, 5), (-25, 5, 0, 4.5), (-12, 16, 0, 4), (18, 0, -2, 5)),
                ((50, -30, -8, 5), (28, -8, -8, 5)))
_SMA = ((-12, 8, 22, 4), (-8, 22, 5, 4), (-4, 32, -40, 3.5), (0, 38, -80, 3))
_CELIAC = ((-13, 8, 36, 4), (-11, 18, 36, 4), (-9, 28, 34, 3.5))
_ILIAC_ARTERY = ((-10, 0, -85, 8), (30, 0, -125, 7), (55, 10, -175, 6), (75, 25, -230, 5.5),
                 (80, 38, -275, 5))
_ILIAC_VEIN = ((18, -12, -88, 9), (25, -12, -125, 8), (60, -2, -180, 7), (74, 22, -235, 6.5),
               (78, 32, -275, 6))
_ESOPHAGUS = ((-5, -15, 260, 8), (-8, -10, 110, 8), (-20, 2, 78, 8), (-35, 12, 65, 9), (-48, 15, 60, 10))
_SPINE = {"knots": (-400, -290, -200, -140, -80, 0, 60, 300),
          "centre_y": (-75, -82, -70, -52, -38, -35, -40, -45),
          "radius": (16, 16, 22, 24, 23, 22, 18, 16)}
_BODY_KNOTS = (-420.0, -250.0, -170.0, -90.0, 0.0, 90.0, 260.0)
_BODY_WIDTH = (150, 150, 140, 130, 132, 138, 140)
_BODY_FRONT = (85, 85, 86, 90, 92, 95, 95)
_BODY_BACK = 100.0
# fmt: on


def _mirror(rows: Sequence[Sequence[float]], side: int, keep: int = 0) -> np.ndarray:
    """Centreline rows for one side: x times ``side``, except for the first ``keep`` rows."""
    rows = np.array(rows, float)
    rows[keep:, 0] *= side
    return rows


@dataclass(frozen=True)
class _Anatomy:
    """Everything drawn from the anatomy seed: the warp, the painting steps in order, and the organs
    that lesions are placed in (reference space)."""

    warp: _Warp
    steps: list
    liver: tuple[_Ellipsoid, ...]
    kidneys: tuple[_Ellipsoid, _Ellipsoid]
    pancreas: np.ndarray


def _plan(rng: np.random.Generator) -> _Anatomy:
    """Draw a patient: build, organs and their order of painting (later steps overwrite earlier)."""
    warp = _Warp(rng)
    body = _body(rng)
    table = _Table(-float(body.back.max() * warp.scale[1] + 0.6 * body.fat + _SKIN_MM + 1))
    thorax = _thorax(rng)
    muscles = _muscles(rng)
    bowel = _bowel(rng)
    organs, liver, kidneys, pancreas = _organs(rng)
    vessels = _vessels(rng)
    bones = _bones(rng, body)
    steps = [table, body, thorax, *muscles, *bowel, *organs, *vessels, *bones]
    return _Anatomy(warp, steps, liver, kidneys, pancreas)


def _body(rng: np.random.Generator) -> _Body:
    """The patient's build: muscle wall outline, wall thickness and subcutaneous fat."""
    width = np.array(_BODY_WIDTH, float) * rng.uniform(0.9, 1.1)
    depth = rng.uniform(0.9, 1.1)
    front, back = np.array(_BODY_FRONT, float) * depth, np.full(len(_BODY_KNOTS), _BODY_BACK * depth)
    return _Body(_BODY_KNOTS, width, front, back, fat=rng.uniform(6, 40), wall=rng.uniform(8, 14))


def _thorax(rng: np.random.Generator) -> _Thorax:
    """Heights of the diaphragm's domes, and the heart."""
    domes = np.array([[55, -5, 108], [-55, -10, 98]]) + rng.normal(0, [6, 4, 7], (2, 3))
    heart = _jitter(rng, (-22, 30, 150), (62, 55, 62), (0, 0, 25))
    return _Thorax(domes, heart, (-8.0, -30.0, 30.0, 58.0))


def _muscles(rng: np.random.Generator) -> list:
    """Paraspinal, gluteal, psoas and quadratus lumborum muscles of both sides."""
    muscle = ((1, _T.MUSCLE),)
    steps: list = []
    for side in (1, -1):
        steps += [
            _Solid(_jitter(rng, (35 * side, -75, -60), (30, 24, 600), shift=3), muscle, 0, "body"),
            _Solid(_jitter(rng, (95 * side, -62, -205), (55, 40, 80), (0, 0, 20 * side)), muscle, 0, "body"),
            _Duct(*_path(rng, _mirror(_PSOAS, side), shift=2), 0, _T.MUSCLE, _T.MUSCLE, gate="body"),
            _Duct(*_path(rng, _mirror(_QUADRATUS, side), shift=2), 0, _T.MUSCLE, _T.MUSCLE, gate="body"),
        ]
    return steps


def _gas_levels(rng: np.random.Generator, points: np.ndarray, radii: np.ndarray, chance: float) -> np.ndarray:
    """Per segment of a bowel loop, the height (reference y) above which its lumen holds gas."""
    centre = (points[:-1, 1] + points[1:, 1]) / 2
    radius = (radii[:-1] + radii[1:]) / 2
    has_gas = rng.random(len(centre)) < chance
    level = centre + radius * rng.uniform(-0.2, 0.6, len(centre))
    return np.where(has_gas, level, np.inf)


def _bowel(rng: np.random.Generator) -> list:
    """Small intestine, colon, rectum, duodenum and stomach, in that order of painting."""
    ids = _ids()
    small = _path(rng, _small_bowel(rng), shift=2, size=0.0, step=8)
    colon, rectum, duodenum, stomach = (_path(rng, rows) for rows in (_COLON, _RECTUM, _DUODENUM, _STOMACH))
    stomach_gas = np.full(len(stomach[0]) - 1, rng.uniform(15, 55))
    wall, fluid = _T.GUT_WALL, _T.GUT_FLUID
    return [
        _Duct(*small, 2.5, wall, fluid, ids["intestine"], gas=_gas_levels(rng, *small, 0.15)),
        _Duct(*colon, 3, wall, _T.STOOL, ids["colon"], gas=_gas_levels(rng, *colon, 0.6)),
        _Duct(*rectum, 3, wall, _T.STOOL, ids["rectum"], gas=_gas_levels(rng, *rectum, 0.4)),
        _Duct(*duodenum, 3, wall, fluid, ids["duodenum"], gas=_gas_levels(rng, *duodenum, 0.3)),
        _Duct(*stomach, 5, wall, fluid, ids["stomach"], gas=stomach_gas),
    ]


def _small_bowel(rng: np.random.Generator) -> np.ndarray:
    """Centreline rows of the small bowel: from the duodenojejunal flexure, back and forth along a
    front and a back lane at each of seven heights, to the caecum."""
    rows = [(-38.0, 20.0, -35.0, 12.0)]
    for n, z in enumerate((-25, -47, -70, -93, -116, -138, -158)):
        x0, x1 = (-75, -25) if n == 0 else (-62, 58)
        for lane, sweep in ((46, (x0, x1)), (16, (x1, x0))):
            phase = rng.uniform(0, 2 * np.pi)
            for m, x in enumerate(np.linspace(*sweep, 6)):
                rows.append((x, lane + 8 * np.sin(1.3 * m + phase), z + rng.normal(0, 3), 12.0))
    rows.append((72.0, 22.0, -125.0, 12.0))
    return np.array(rows)


def _organs(rng: np.random.Generator) -> tuple:
    """Solid organs in order of painting, and the liver lobes, kidneys and pancreas for lesions."""
    ids = _ids()
    pancreas = _path(rng, _PANCREAS, shift=3)
    liver = (
        _jitter(rng, (75, -5, 55), (55, 80, 60)),
        _jitter(rng, (100, -15, 15), (30, 50, 45)),
        _jitter(rng, (0, 50, 62), (60, 35, 28), (0, 0, -10)),
        _jitter(rng, (18, -22, 55), (18, 18, 25), shift=2),
    )
    gallbladder = _jitter(rng, (62, 55, -5), (16, 18, 38), (35, 0, 0))
    spleen = _jitter(rng, (-88, -40, 48), (20, 52, 45), (0, 0, 35))
    steps: list = [_Duct(*pancreas, 0, _T.PANCREAS, _T.PANCREAS, ids["pancreas"])]
    steps += [_Solid(lobe, ((1, _T.LIVER),), ids["liver"]) for lobe in liver]
    steps += [
        _Solid(gallbladder, ((1, _T.GUT_WALL), (1 - 2 / 16, _T.BILE)), ids["gallbladder"]),
        _Solid(spleen, ((1, _T.SPLEEN),), ids["spleen"]),
    ]
    kidneys = []
    for side, name, z in ((1, "right", -12), (-1, "left", 3)):
        kidney, kidney_steps = _kidney(rng, side, z, ids[f"{name} kidney"])
        height = 60 if side > 0 else 51
        adrenal = _jitter(rng, (32 * side, -30, height), (4.5, 13, 18), (0, 0, -20 * side), shift=3)
        steps += [*kidney_steps, _Solid(adrenal, ((1, _T.ADRENAL),), ids[f"{name} adrenal gland"])]
        kidneys.append(kidney)
    bladder = _jitter(rng, (0, 40, -228), (48, 38, 35), size=0.2)
    prostate = _jitter(rng, (0, 25, -282), (20, 16, 17), shift=3)
    steps += [
        _Solid(bladder, ((1, _T.MUSCLE), (1 - 3 / 35, _T.URINE)), ids["bladder"]),
        _Solid(prostate, ((1, _T.PROSTATE),), ids["prostate"]),
    ]
    return steps, liver, tuple(kidneys), pancreas[0]


def _kidney(rng: np.random.Generator, side: int, z: float, label: int) -> tuple[_Ellipsoid, list]:
    """One kidney: cortex and medulla, with sinus fat and renal pelvis towards its hilum."""
    kidney = _jitter(rng, (68 * side, -40, z), (24, 19, 54), (10, -12 * side, -30 * side), size=0.08)
    hilum = kidney.rotation @ np.array([-side, 0, 0])
    sinus = _Ellipsoid(kidney.centre + 11 * hilum, np.array([11, 9, 28]), kidney.rotation)
    pelvis = _Ellipsoid(kidney.centre + 17 * hilum, np.array([6, 6, 12]), kidney.rotation)
    return kidney, [
        _Solid(kidney, ((1, _T.KIDNEY_CORTEX), (0.72, _T.KIDNEY_MEDULLA)), label),
        _Solid(sinus, ((1, _T.SINUS_FAT),), label, (label,)),
        _Solid(pelvis, ((1, _T.URINE),), label, (label,)),
    ]


def _vessels(rng: np.random.Generator) -> list:
    """Vessels, in order of painting: hepatic vessels (inside the liver), veins, arteries, esophagus."""
    ids = _ids()

    def tube(rows: Sequence, tissue: int, label: int = 0, gate: Gate = "cavity", shift: float = 2.0) -> _Duct:
        return _Duct(*_path(rng, rows, shift=shift), 0, tissue, tissue, label, gate)

    steps = [tube(rows, _T.PORTAL, ids["hepatic vessel"], (ids["liver"],), 4) for rows in _HEPATIC_VESSELS]
    steps += [
        tube(_PORTAL_SPLENIC, _T.PORTAL, ids["portal vein and splenic vein"]),
        *(tube(rows, _T.VEIN) for rows in _RENAL_VEINS),
        tube(_IVC, _T.VEIN, ids["inferior vena cava"], "body"),
        tube(_AORTA, _T.ARTERY, ids["aorta"], "body"),
        tube(_SMA, _T.ARTERY),
        tube(_CELIAC, _T.ARTERY, ids["celiac trunk"], shift=1.5),
    ]
    for side in (1, -1):
        steps.append(tube(_mirror(_ILIAC_ARTERY, side, keep=1), _T.ARTERY))
        steps.append(tube(_mirror(_ILIAC_VEIN, side, keep=1), _T.VEIN))
    steps.append(_Duct(*_path(rng, _ESOPHAGUS, shift=2), 5, _T.MUSCLE, _T.GAS, ids["esophagus"], "body"))
    return steps


def _bones(rng: np.random.Generator, body: _Body) -> list:
    """Spine, ribs, pelvis and femurs; the femoral heads are labelled."""
    ids = _ids()
    steps: list = [
        _Spine(**_SPINE, pitch=rng.uniform(31, 35), phase=rng.uniform(-8, 0), sacrum=-140 + rng.normal(0, 5)),
        _Ribs(body, pitch=rng.uniform(26, 30), phase=rng.uniform(0, 28), xiphoid=70 + rng.normal(0, 8)),
        _IliacWings(-92 + rng.normal(0, 5), -222.0, (125 * rng.uniform(0.92, 1.08), 82.0), 70.0),
    ]
    for side, name in ((1, "right"), (-1, "left")):
        centre = np.array([88.0 * side, 5, -252]) + rng.normal(0, 3, 3)
        steps += _hip(rng, side, centre, 24 * rng.uniform(0.9, 1.1), ids[f"{name} femoral head"])
    return steps


def _hip(rng: np.random.Generator, side: int, centre: np.ndarray, radius: float, label: int) -> list:
    """Acetabulum, pubic ramus, ischium, femoral neck and shaft, joint cartilage, and the femoral head."""

    def bone(rows: Sequence) -> _Duct:
        return _Duct(*_path(rng, rows, shift=2), 3.5, _T.CORTICAL, _T.CANCELLOUS, gate="body")

    def near(dx: float, dy: float, dz: float, r: float) -> tuple[float, ...]:
        """A centreline row at an offset from the head's centre, ``dx`` towards the side."""
        return (*(centre + np.array([dx * side, dy, dz])), r)

    acetabulum = _Ellipsoid(np.array(near(-10, 0, 8, 0)[:3]), np.array([30.0, 36, 36]), np.eye(3))
    socket = _Ellipsoid(centre, np.full(3, radius + 2.5), np.eye(3))
    head = _Ellipsoid(centre, np.full(3, radius), np.eye(3))
    return [
        _Solid(acetabulum, ((1, _T.CORTICAL), (0.85, _T.CANCELLOUS)), gate="body"),
        bone([near(-15, 30, -10, 10), (8 * side, 62, -275, 9)]),
        bone([near(-5, -20, -10, 13), near(-25, -30, -60, 12)]),
        bone([near(0, 0, 0, 15), near(35, -6, -28, 15), near(30, 2, -170, 14)]),
        _Solid(socket, ((1, _T.CARTILAGE),), gate="body"),
        _Solid(head, ((1, _T.CORTICAL), (1 - 2.5 / radius, _T.CANCELLOUS)), label, "body"),
    ]


# -- lesions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lesion:
    """A lesion: an ellipsoid painted only over its organ's labels ``within``."""

    shape: _Ellipsoid
    tissue: int
    label: int
    within: tuple[int, ...]

    def paint(self, canvas: _Canvas) -> None:
        _Solid(self.shape, ((1, self.tissue),), self.label, self.within).paint(canvas)


def _lesion_in(rng: np.random.Generator, organ: _Ellipsoid, radius: tuple[float, float]) -> _Ellipsoid:
    """A lesion centred well inside ``organ``, of radius in ``radius`` (mm), slightly irregular."""
    direction = rng.normal(size=3)
    local = direction / np.linalg.norm(direction) * rng.uniform(0, 0.5)
    size = rng.uniform(*radius)
    return _jitter(rng, organ.point(local), (size,) * 3, rng.uniform(0, 180, 3), shift=0, size=0.2, turn=0)


def _plan_lesions(rng: np.random.Generator, anatomy: _Anatomy) -> list[_Lesion]:
    """All lesions a patient may carry; the same draws whichever of them are painted."""
    ids = _ids()
    liver = (ids["liver"], ids["hepatic vessel"])
    lesions = []
    count = rng.integers(1, 4)
    for n in range(3):
        lobe = anatomy.liver[int(rng.random() < 0.3) * 2]
        shape = _lesion_in(rng, lobe, (7, 22))
        tissue = _T.LESION_HYPO if rng.random() < 0.7 else _T.LESION_HYPER
        if n < count:
            lesions.append(_Lesion(shape, tissue, ids["liver tumor"], liver))
    tumour_side, cyst_side = rng.integers(0, 2, 2)
    kidney_ids = (ids["right kidney"], ids["left kidney"])
    lesions.append(_Lesion(_lesion_in(rng, anatomy.kidneys[tumour_side], (10, 20)), _T.RENAL_TUMOUR,
                           ids["kidney tumor"], (kidney_ids[tumour_side],)))  # fmt: skip
    lesions.append(_Lesion(_lesion_in(rng, anatomy.kidneys[cyst_side], (6, 14)), _T.CYST, ids["kidney cyst"],
                           (kidney_ids[cyst_side],)))  # fmt: skip
    path = anatomy.pancreas
    centre = path[int(rng.uniform(0.1, 0.9) * (len(path) - 1))]
    size = rng.uniform(9, 15)
    shape = _jitter(rng, centre, (size, size, size), rng.uniform(0, 180, 3), shift=2, size=0.2, turn=0)
    tissue = _T.LESION_HYPO if rng.random() < 0.8 else _T.LESION_HYPER
    lesions.append(_Lesion(shape, tissue, ids["pancreas tumor"], (ids["pancreas"],)))
    return lesions


# -- image --------------------------------------------------------------------------------------


def _tissue_tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per tissue: mean HU for this patient (contrast timing and small offsets), texture SD."""
    contrast = rng.uniform(0.85, 1.15)
    hu = np.zeros(256, np.float32)
    sd = np.zeros(256, np.float32)
    for tissue, (mean, texture, enhanced) in _TISSUE_HU.items():
        offset = rng.normal(0, 4) if tissue not in (_T.AIR, _T.GAS) else 0.0
        hu[tissue] = (40 + (mean - 40) * contrast if enhanced else mean) + offset
        sd[tissue] = texture
    return hu, sd


def _noise_gain(sigma: Sequence[float], truncate: float) -> float:
    """SD of unit white noise after :func:`scipy.ndimage.gaussian_filter` with ``sigma`` (voxels)."""
    gain = 1.0
    for s in sigma:
        if s > 0:
            radius = int(truncate * s + 0.5)
            impulse = np.zeros(2 * radius + 1)
            impulse[radius] = 1
            gain *= float(np.sqrt(np.sum(ndimage.gaussian_filter1d(impulse, s, truncate=truncate) ** 2)))
    return gain


def _synthesize(
    tissue: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray],
    spacing: tuple[float, float, float],
    noise: float,
    texture_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> np.ndarray:
    """The CT (int16 HU, shape of ``tissue``) from the tissue map.

    Tissue means plus texture (smoothed noise scaled per tissue) plus white noise, then one blur that
    stands for the scanner's point spread: it softens tissue boundaries (partial volume) and gives
    the noise its grain; the noise is scaled so that its SD after the blur is ``noise`` HU. Works in
    two float32 buffers of the volume's size.
    """
    hu, sd = tables
    texture_sigma = [_TEXTURE_MM / s for s in spacing]
    blur = (_BLUR_IN_PLANE, _BLUR_IN_PLANE, _BLUR_THROUGH_PLANE)
    white = texture_rng.standard_normal(tissue.shape, dtype=np.float32)
    image = np.empty_like(white)
    ndimage.gaussian_filter(white, texture_sigma, output=image, truncate=_TEXTURE_TRUNCATE)
    image *= np.float32(1 / _noise_gain(texture_sigma, _TEXTURE_TRUNCATE))
    image *= np.take(sd, tissue, out=white, mode="clip")
    image += np.take(hu, tissue, out=white, mode="clip")
    if noise > 0:
        noise_rng.standard_normal(dtype=np.float32, out=white)
        white *= np.float32(noise / _noise_gain(blur, _TRUNCATE))
        image += white
    ndimage.gaussian_filter(image, blur, output=white, truncate=_TRUNCATE)
    np.clip(white, -1024, 3071, out=white)
    return np.rint(white, out=white).astype(np.int16)
