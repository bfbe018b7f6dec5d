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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.atomic import check_nifti_path
from universal.io.scans import write_nifti
from universal.synth.anatomy import plan, plan_lesions
from universal.synth.geometry import LESION_CLASSES, Canvas, Warp
from universal.synth.image import synthesize, tissue_tables

ORIENTATIONS = ("RAS", "LPS")
CLINICAL_SHAPE = (512, 512, 200)
CLINICAL_SPACING = (0.8, 0.8, 2.5)
_Z_TOP = 180.0  # world z (mm) of the top of a long field of view: just above the lung bases
_Z_UPPER_ABDOMEN = 15.0  # centre of a short field of view



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
    seed, shape, spacing = check_seed(seed), _check_shape(shape), _check_spacing(spacing)
    orientation, noise = _check_orientation(orientation), _check_noise(noise)
    lesion_ids = _check_lesions(lesions)
    anatomy_rng, lesion_rng, look_rng, texture_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    anatomy = plan(anatomy_rng)
    drawn = [lesion for lesion in plan_lesions(lesion_rng, anatomy) if lesion.label in lesion_ids]
    tissue, label = _paint([*anatomy.steps, *drawn], _world_axes(shape, spacing), anatomy.warp)
    image = synthesize(tissue, tissue_tables(look_rng), spacing, noise, texture_rng, noise_rng)
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


# -- checks -------------------------------------------------------------------------------------


def check_seed(seed: int) -> int:
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


# -- grid and files -----------------------------------------------------------------------------


def _world_axes(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """World coordinates (mm, RAS+, ascending) of the voxel centres along x, y and z."""
    extent_z = shape[2] * spacing[2]
    centre = (0.0, 0.0, min(_Z_UPPER_ABDOMEN, _Z_TOP - extent_z / 2))
    return tuple(
        ((np.arange(n) - (n - 1) / 2) * s + c).astype(np.float32)
        for n, s, c in zip(shape, spacing, centre, strict=True)
    )


def _paint(steps: list, axes: tuple[np.ndarray, ...], warp: Warp) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and label maps (uint8, ascending RAS+ grid on ``axes``) after painting ``steps`` in order."""
    canvas = Canvas(axes, warp)
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
