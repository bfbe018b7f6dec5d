"""CT series written from a volume, for the tests that need DICOM input (a PACS, OHIF, DICOM SEG)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from universal.io.atomic import atomic_path
from universal.io.scans import LPS_TO_RAS

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # SOP Class UID, DICOM PS3.4 Annex B.5


def write_ct_series(image: np.ndarray, affine: np.ndarray, folder: str | Path, *, patient_id: str = "PHANTOM",
                    patient_name: str = "Phantom^Universal", study_uid: str | None = None,
                    series_uid: str | None = None, description: str = "CT") -> list[Path]:
    """Write ``image`` (X, Y, Z, HU) on the RAS+ ``affine`` as a CT series, one file a slice
    (``folder/slice_0000.dcm``, ...); returns the files. Slices are axial when the affine's third axis is."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row, column = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), series_uid or generate_uid(), generate_uid()
    now = datetime.datetime.now()
    voxels = np.clip(np.rint(image), -32768, 32767).astype(np.int16)
    files = []
    for k in range(voxels.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = "CT", 1, k + 1, description
        ds.Manufacturer, ds.ImageType = "universal", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *column)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = int(voxels.shape[1]), int(voxels.shape[0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(voxels[:, :, k].T).tobytes()
        path = Path(folder) / f"slice_{k:04d}.dcm"
        with atomic_path(path, suffix=".dcm") as temporary:
            ds.save_as(temporary, write_like_original=False)
        files.append(path)
    return files
