"""Reading CTs from NIfTI, NRRD and DICOM series, and refusing what is not a 3D CT in HU."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from universal import ScanError, read_scan
from universal.io.scans import write_nifti

SHAPE = (12, 10, 6)
SPACING = (1.5, 2.0, 3.0)
ORIGIN_LPS = (-20.0, 30.0, 100.0)
# what the LPS grid above is in RAS+: x and y flip sign
RAS_AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, -2.0, 0, -30.0], [0, 0, 3.0, 100.0], [0, 0, 0, 1]])


def ct_volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.full(SHAPE, -1000, dtype=np.int16)
    volume[2:10, 2:8, 1:5] = rng.integers(-100, 200, size=(8, 6, 4))
    return volume


def write_dicom_series(folder, volume, modality="CT", series_uid=None, description="") -> str:
    """One file per slice, LPS geometry (ORIGIN_LPS, SPACING), stored as HU + 1024 with a rescale."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, storage = generate_uid(), CTImageStorage if modality == "CT" else MRImageStorage
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = storage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = storage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, series_uid, modality
        ds.SeriesDescription, ds.PatientID, ds.InstanceNumber = description, "phantom", k + 1
        ds.ImagePositionPatient = [ORIGIN_LPS[0], ORIGIN_LPS[1], ORIGIN_LPS[2] + k * SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # between rows (y), between columns (x)
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (volume[:, :, k].T.astype(np.int32) + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{series_uid[-6:]}-{k:03d}.dcm", write_like_original=False)
    return series_uid


def test_nifti_keeps_values_and_affine(tmp_path):
    volume = ct_volume()
    write_nifti(volume, RAS_AFFINE, tmp_path / "case_7.nii.gz", is_label=False)
    scan = read_scan(tmp_path / "case_7.nii.gz")
    assert scan.name == "case_7" and scan.image.dtype == np.float32
    np.testing.assert_array_equal(scan.image, volume)
    np.testing.assert_allclose(scan.affine, RAS_AFFINE)
    assert scan.spacing == pytest.approx(SPACING) and scan.describe()["orientation"] == "LPS"


def test_nrrd_in_lps_space_reads_as_ras(tmp_path):
    import nrrd

    volume = ct_volume()
    header = {"space": "left-posterior-superior", "space directions": np.diag(SPACING), "space origin": ORIGIN_LPS}
    nrrd.write(str(tmp_path / "case.nrrd"), volume, header)
    scan = read_scan(tmp_path / "case.nrrd")
    np.testing.assert_array_equal(scan.image, volume)
    np.testing.assert_allclose(scan.affine, RAS_AFFINE, atol=1e-5)
    nrrd.write(str(tmp_path / "slice.nrrd"), volume[:, :, 0])
    with pytest.raises(ScanError, match="a 2D image of shape"):
        read_scan(tmp_path / "slice.nrrd")


def test_dicom_folder_reads_its_ct_series_in_hu(tmp_path):
    volume = ct_volume()
    write_dicom_series(tmp_path / "study", volume, description="abdomen")
    write_dicom_series(tmp_path / "study", volume[:, :, :4], modality="MR", description="T1")
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    scan = read_scan(tmp_path / "study")
    assert scan.name == "study"
    np.testing.assert_array_equal(scan.image, volume)
    np.testing.assert_allclose(scan.affine, RAS_AFFINE, atol=1e-4)


def test_dicom_folder_with_several_ct_series_needs_a_choice(tmp_path):
    first = write_dicom_series(tmp_path / "study", ct_volume(0), description="arterial")
    second = write_dicom_series(tmp_path / "study", ct_volume(1), description="venous")
    with pytest.raises(ScanError, match=r"2 CT series .*--series UID") as raised:
        read_scan(tmp_path / "study")
    assert first in str(raised.value) and second in str(raised.value) and "'venous'" in str(raised.value)
    np.testing.assert_array_equal(read_scan(tmp_path / "study", series=second).image, ct_volume(1))


def test_dicom_folder_without_ct(tmp_path):
    write_dicom_series(tmp_path / "mr", ct_volume(), modality="MR")
    with pytest.raises(ScanError, match=r"no CT series; the folder holds .*\(MR, 6 images"):
        read_scan(tmp_path / "mr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanError, match="no DICOM files"):
        read_scan(tmp_path / "empty")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("flat.nii.gz", np.full((16, 16), -1000, np.int16), "a 2D image of shape"),
        ("series.nii.gz", np.full((8, 8, 8, 3), -1000, np.int16), "a 4D series"),
        ("slice.nii.gz", np.full((16, 16, 1), -1000, np.int16), "a single slice"),
        ("mri.nii.gz", np.linspace(0, 900, 512, dtype=np.float32).reshape(8, 8, 8), "not CT Hounsfield units"),
    ],
)
def test_volumes_that_are_not_3d_ct_are_refused(tmp_path, name, data, message):
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / name)
    with pytest.raises(ScanError, match=message):
        read_scan(tmp_path / name)


def test_unreadable_and_unknown_inputs(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ScanError, match=r"broken\.nii\.gz: cannot be read as a CT volume"):
        read_scan(tmp_path / "broken.nii.gz")
    (tmp_path / "picture.png").write_bytes(b"PNG")
    with pytest.raises(ScanError, match="unknown format"):
        read_scan(tmp_path / "picture.png")
    with pytest.raises(ScanError, match="no such file or folder"):
        read_scan(tmp_path / "absent.nii.gz")
