"""Label files: label maps (uint8, 0..255) read from and written to NIfTI or NRRD on a scan's grid,
and a scan's grid read without its voxels where the format allows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from universal.errors import UniversalError
from universal.io.atomic import atomic_path
from universal.io.scans import (
    IMAGE_SUFFIXES,
    LPS_TO_RAS,
    NIFTI_SUFFIXES,
    ScanError,
    check_size,
    read_scan,
    read_volume,
    write_nifti,
)


def read_label_map(path: str | Path, *, max_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A label map (uint8 (X, Y, Z), values 0..255) and its RAS+ affine from a NIfTI or NRRD file;
    ``max_voxels``: refuse a file whose header declares more, before reading its voxels."""
    path = Path(path)
    if not path.is_file():
        raise ScanError(f"{path}: no such label file")
    try:
        check_size(path, None, max_voxels)
        labels, affine = read_volume(path)
    except ScanError:
        raise
    except Exception as error:
        raise ScanError(f"{path}: cannot be read as a label map ({str(error).strip()[:200]})") from error
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    if labels.ndim != 3:
        raise ScanError(f"{path}: a label map must be a 3D volume, got shape {labels.shape}")
    if not np.isfinite(labels).all() or labels.min() < 0 or labels.max() > 255 or np.any(labels != np.round(labels)):
        raise ScanError(f"{path}: a label map holds whole numbers 0..255, one per voxel")
    return labels.astype(np.uint8), affine


def image_geometry(path: str | Path, *, max_voxels: int | None = None) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, RAS+ affine) of a scan; NIfTI headers are read without the voxels."""
    path = Path(path)
    if path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        header = nib.load(path)
        return tuple(int(n) for n in header.shape[:3]), np.asarray(header.affine, dtype=np.float64)
    scan = read_scan(path, max_voxels=max_voxels)
    return scan.shape, scan.affine


LABEL_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")  # what a label file's voxels may be stored as


def write_label_file(label_map: np.ndarray, affine: np.ndarray, path: str | Path, *, dtype: str = "uint8",
                     compress: bool = True) -> Path:
    """Write a label map (X, Y, Z) with its RAS+ affine as NIfTI (``.nii``, ``.nii.gz``: compressed by
    the suffix) or NRRD (``.nrrd``: gzip-encoded when ``compress``), voxels stored as ``dtype``
    (:data:`LABEL_DTYPES`), atomically."""
    path = Path(path)
    name = path.name.lower()
    if dtype not in LABEL_DTYPES:
        raise UniversalError(f"label files store voxels as {', '.join(LABEL_DTYPES)}, not {dtype!r}")
    voxels = np.asarray(label_map).astype(dtype)
    if name.endswith(NIFTI_SUFFIXES):
        write_nifti(voxels, affine, path)
        return path
    if not name.endswith(IMAGE_SUFFIXES):
        raise UniversalError(f"label files are written as {', '.join(IMAGE_SUFFIXES)}, not {path.name}")
    import SimpleITK as sitk

    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)  # the same matrix maps RAS to LPS
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    with atomic_path(path, suffix=".nrrd") as temporary:
        sitk.WriteImage(image, str(temporary), compress)
    return path
