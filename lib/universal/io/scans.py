"""Read CT scans (NIfTI, NRRD, a DICOM series folder) and write volumes on a scan's grid.

Every scan is read into the same form, :class:`Scan`: intensities in HU as float32 (X, Y, Z) in the
file's own voxel order, and the affine from voxel index to world RAS+ millimetres. Outputs are
written as NIfTI on that grid, so they overlay the scan in any viewer.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from universal.errors import UniversalError
from universal.io.atomic import atomic_open, check_nifti_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, ".nrrd")  # single-file volumes: scans, label maps and results
GRID_TOLERANCE_MM = 1e-3  # two affines describe the same grid when they agree this closely
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK and DICOM geometry is LPS+; the library's is RAS+
CT_AIR_HU = -500.0  # a CT shows air (about -1000 HU) somewhere; a volume whose minimum is above this is not HU


def image_suffix(path: str | Path) -> str:
    """The suffix of :data:`IMAGE_SUFFIXES` that ``path``'s name ends with (any case), else ``.nii.gz``."""
    name = Path(str(path)).name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), ".nii.gz")


class ScanError(UniversalError):
    """A scan that cannot be read, or is not a 3D CT in Hounsfield units."""


class ScanTooLargeError(ScanError):
    """A volume whose header declares more values than allowed (see :func:`check_size`)."""


@dataclass(frozen=True, eq=False)
class Scan:
    """A CT volume.

    ``image``: float32 (X, Y, Z), HU. ``affine``: float64 (4, 4), voxel index to world RAS+ mm.
    ``name``: the case name (file name without its suffix, or the DICOM folder's name).
    ``source``: where it was read from.
    """

    image: np.ndarray
    affine: np.ndarray
    name: str
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along X, Y, Z in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def describe(self) -> dict:
        """Metadata for reports: source, shape, spacing (mm) and orientation codes."""
        return {
            "source": self.source,
            "shape": list(self.shape),
            "spacing_mm": [round(s, 4) for s in self.spacing],
            "orientation": "".join(nib.aff2axcodes(self.affine)),
        }


def case_name(path: str | Path) -> str:
    """The case name of an input: its file name without the image suffix, or a folder's name."""
    path = Path(path)
    for suffix in (*NIFTI_SUFFIXES, *NRRD_SUFFIXES):
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def read_scan(path: str | Path, series: str | None = None, *, max_voxels: int | None = None) -> Scan:
    """Read a CT from a NIfTI or NRRD file, or from a folder holding a DICOM series.

    ``series``: the SeriesInstanceUID to read when a folder holds several CT series. ``max_voxels``:
    refuse a volume whose header declares more voxels, before its voxels are read (a small gzip file
    may declare a huge one). Raises :class:`ScanError` when the input cannot be read, is too large or
    is not a 3D CT in HU.
    """
    path = Path(path)
    series_uid = None
    if path.is_dir():
        series_uid = select_ct_series(path, series)
    elif not path.is_file():
        raise ScanError(f"{path}: no such file or folder")
    elif not path.name.lower().endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES):
        raise ScanError(f"{path}: unknown format; give a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) file, "
                        "or a folder holding a DICOM series")
    try:
        check_size(path, series_uid, max_voxels)
        image, affine = read_volume(path, series_uid)
    except ScanError:
        raise
    except Exception as error:  # readers raise many types; all mean the same to the user
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ScanError(f"{path}: cannot be read as a CT volume ({detail[:200]})") from error
    return Scan(image=check_ct_volume(image, path), affine=affine, name=case_name(path), source=str(path))


def check_size(path: Path, series_uid: str | None, max_voxels: int | None) -> None:
    """Raise :class:`ScanError` when the volume's header declares more than ``max_voxels`` values
    (its voxels times its values per voxel); nothing but the header is read."""
    if max_voxels is None:
        return
    import SimpleITK as sitk

    if path.name.lower().endswith(NIFTI_SUFFIXES):
        declared = int(np.prod(nib.load(path).shape, dtype=np.int64))  # nibabel reads the header only
    else:
        files = [str(path)] if series_uid is None else sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path),
                                                                                                   series_uid)
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()  # a DICOM series: each of its files holds one slice
        declared = int(np.prod(reader.GetSize(), dtype=np.int64)) * reader.GetNumberOfComponents() * len(files)
    if declared > max_voxels:
        raise ScanTooLargeError(f"{path}: the volume declares {declared:,} values, more than the {max_voxels:,} "
                                "allowed")


def read_volume(path: Path, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (X, Y, Z) and RAS+ affine: nibabel for NIfTI, SimpleITK for NRRD and DICOM series."""
    if series_uid is not None:
        return _read_dicom_series(path, series_uid)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        nifti = nib.load(path)  # dataobj applies the header's slope and intercept; affine: sform, else qform
        return np.asarray(nifti.dataobj, dtype=np.float32), np.asarray(nifti.affine, dtype=np.float64)
    import SimpleITK as sitk

    return _from_simpleitk(sitk.ReadImage(str(path)), path)


def _read_dicom_series(folder: Path, uid: str) -> tuple[np.ndarray, np.ndarray]:
    """One series, its slices ordered along the slice normal and rescaled to HU."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    return _from_simpleitk(reader.Execute(), folder)


def _from_simpleitk(image, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) voxels and the RAS+ affine of a SimpleITK image, whose geometry is in LPS."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)  # (Z, Y, X[, components])
    dimension = image.GetDimension()
    array = array.transpose(*reversed(range(dimension)), *range(dimension, array.ndim))
    if dimension != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        check_ct_volume(array, path)
        raise ScanError(f"{path}: a {dimension}D image with {image.GetNumberOfComponentsPerPixel()} values per "
                        "voxel; a CT must be a 3D volume of HU values")
    affine = np.eye(4)
    affine[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, LPS_TO_RAS @ affine


def check_ct_volume(image: np.ndarray, path: str | Path = "input") -> np.ndarray:
    """``image`` as (X, Y, Z) if it is a 3D volume in HU; a trailing axis of length 1 is dropped."""
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        kind = {2: "a 2D image", 4: "a 4D series (time or channels)"}.get(image.ndim, f"{image.ndim}D data")
        raise ScanError(f"{path}: {kind} of shape {image.shape}; a CT must be a 3D volume (X, Y, Z)")
    if min(image.shape) < 2:
        raise ScanError(f"{path}: a single slice of shape {image.shape}; a CT must be a 3D volume")
    if not np.isfinite(image).all():
        raise ScanError(f"{path}: holds NaN or infinite values; a CT holds finite HU values")
    low, high = float(image.min()), float(image.max())
    if low > CT_AIR_HU:
        raise ScanError(
            f"{path}: intensities {low:g}..{high:g} are not CT Hounsfield units (air is about -1000 HU); "
            "convert the scan to HU (DICOM rescale slope and intercept) before segmenting it"
        )
    return image


def select_ct_series(folder: Path, series: str | None = None) -> str:
    """The SeriesInstanceUID of the CT series in ``folder`` (its files, not sub-folders).

    With several CT series, ``series`` must name one; without any, a :class:`ScanError` lists what is
    there.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    found: dict[str, dict] = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        entry = found.setdefault(uid, {"modality": str(header.get("Modality", "?")), "images": 0,
                                       "description": str(header.get("SeriesDescription", ""))})
        entry["images"] += 1
    if not found:
        raise ScanError(f"{folder}: no DICOM files in this folder")

    def listing(uids) -> str:
        return "; ".join(f"{uid} ({found[uid]['modality']}, {found[uid]['images']} images"
                         f"{', ' + repr(found[uid]['description']) if found[uid]['description'] else ''})"
                         for uid in uids)

    if series is not None:
        if series not in found:
            raise ScanError(f"{folder}: no series {series}; the folder holds {listing(found)}")
        return series
    ct = [uid for uid, entry in found.items() if entry["modality"] == "CT"]
    if not ct:
        raise ScanError(f"{folder}: no CT series; the folder holds {listing(found)}")
    if len(ct) > 1:
        raise ScanError(f"{folder}: {len(ct)} CT series ({listing(ct)}); choose one by its SeriesInstanceUID "
                        "(--series UID)")
    return ct[0]


def write_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, is_label: bool = True) -> None:
    """Write ``data`` (X, Y, Z) as NIfTI-1 with ``affine`` as qform and sform (scanner), atomically."""
    path = check_nifti_path(path)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    if is_label:
        image.header.set_intent("label")
    with atomic_open(path) as stream:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=stream, compresslevel=1, mtime=0) as packed:
                packed.write(image.to_bytes())
        else:
            stream.write(image.to_bytes())
