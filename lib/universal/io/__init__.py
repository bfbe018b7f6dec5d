"""Files in and out: scans (NIfTI, NRRD, DICOM series), label files, downloads of weights, and
atomic writes (a reader sees the old file or the new one, never half of one)."""
