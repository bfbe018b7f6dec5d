"""The CT image of a phantom: tissues, their HU in the portal-venous phase, texture, noise and the
scanner's blur."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

_TEXTURE_MM = 1.5  # correlation length of organ texture
_BLUR_IN_PLANE = 0.6  # point spread of the scanner, in voxels: partial volume and noise grain
_BLUR_THROUGH_PLANE = 0.45
_TRUNCATE = 3.0  # the scanner's blur ends at this many SDs
_TEXTURE_TRUNCATE = 2.0


class Tissue(enum.IntEnum):
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
    Tissue.AIR: (-1000, 0, False),
    Tissue.TABLE: (150, 10, False),
    Tissue.SKIN: (25, 6, False),
    Tissue.FAT: (-105, 10, False),
    Tissue.MUSCLE: (55, 9, False),
    Tissue.VISCERAL_FAT: (-95, 14, False),
    Tissue.LUNG: (-860, 35, False),
    Tissue.MYOCARDIUM: (95, 8, True),
    Tissue.BLOOD: (150, 5, True),
    Tissue.LIVER: (105, 7, True),
    Tissue.SPLEEN: (115, 7, True),
    Tissue.KIDNEY_CORTEX: (175, 10, True),
    Tissue.KIDNEY_MEDULLA: (135, 10, True),
    Tissue.SINUS_FAT: (-70, 15, False),
    Tissue.URINE: (8, 3, False),
    Tissue.PANCREAS: (95, 14, True),
    Tissue.ADRENAL: (70, 8, True),
    Tissue.GUT_WALL: (85, 8, True),
    Tissue.GUT_FLUID: (18, 5, False),
    Tissue.STOOL: (-60, 110, False),
    Tissue.GAS: (-1000, 8, False),
    Tissue.BILE: (10, 3, False),
    Tissue.PROSTATE: (50, 8, True),
    Tissue.ARTERY: (170, 6, True),
    Tissue.VEIN: (145, 6, True),
    Tissue.PORTAL: (175, 6, True),
    Tissue.CORTICAL: (850, 70, False),
    Tissue.CANCELLOUS: (240, 45, False),
    Tissue.DISC: (85, 8, False),
    Tissue.CARTILAGE: (110, 12, False),
    Tissue.CSF: (12, 4, False),
    Tissue.LESION_HYPO: (48, 12, True),
    Tissue.LESION_HYPER: (165, 15, True),
    Tissue.RENAL_TUMOUR: (100, 30, True),
    Tissue.CYST: (10, 3, False),
}


# -- the image from the tissue map ------------------------------------------------------------------


def tissue_tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per tissue: mean HU for this patient (contrast timing and small offsets), texture SD."""
    contrast = rng.uniform(0.85, 1.15)
    hu = np.zeros(256, np.float32)
    sd = np.zeros(256, np.float32)
    for tissue, (mean, texture, enhanced) in _TISSUE_HU.items():
        offset = rng.normal(0, 4) if tissue not in (Tissue.AIR, Tissue.GAS) else 0.0
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


def synthesize(
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
