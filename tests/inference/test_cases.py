"""What `universal segment` reads as cases: files, DICOM folders, folders of scans, .txt and .csv lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_series import write_ct_series

from universal.errors import UniversalError
from universal.inference.cases import CaseInput, list_cases
from universal.io.scans import write_nifti


def scan(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(np.full((4, 4, 4), -1000, np.int16), np.eye(4), path, is_label=False)
    return path


def dicom_series(folder: Path) -> Path:
    write_ct_series(np.full((4, 4, 3), -1000, np.int16), np.diag([0.8, 0.8, 2.5, 1.0]), folder)
    return folder


def named(cases: list[CaseInput]) -> dict[str, Path]:
    return {case.name: case.path for case in cases}


def test_a_folder_of_scans_holds_its_files_and_the_dicom_series_below_it(tmp_path):
    archive = tmp_path / "archive"
    scan(archive / "a.nii.gz")
    scan(archive / "patient1" / "ct.nii.gz")
    (archive / "notes.txt").write_text("not a scan")
    dicom_series(archive / "patient2" / "series")
    assert named(list_cases([archive])) == {
        "a": archive / "a.nii.gz",
        "patient1_ct": archive / "patient1" / "ct.nii.gz",
        "patient2_series": archive / "patient2" / "series",
    }


def test_a_dicom_folder_is_one_case_and_a_file_is_one_case_even_when_unreadable(tmp_path):
    series = dicom_series(tmp_path / "series")
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    cases = list_cases([series, tmp_path / "broken.nii.gz"], series="1.2.3")
    assert [(c.name, c.path, c.series) for c in cases] == [("series", series, "1.2.3"),
                                                           ("broken", tmp_path / "broken.nii.gz", "1.2.3")]


def test_lists_name_scans_relative_to_their_own_folder(tmp_path):
    scan(tmp_path / "data" / "one.nii.gz")
    scan(tmp_path / "data" / "two.nii.gz")
    dicom_series(tmp_path / "data" / "dicom")
    (tmp_path / "data" / "list.txt").write_text("# today's batch\none.nii.gz\n\n  two.nii.gz  # second\ndicom\n")
    assert named(list_cases([tmp_path / "data" / "list.txt"])) == {
        "one": tmp_path / "data" / "one.nii.gz", "two": tmp_path / "data" / "two.nii.gz",
        "dicom": tmp_path / "data" / "dicom"}
    (tmp_path / "cohort.csv").write_text(f"subject,image\np1,data/one.nii.gz\np2,{tmp_path / 'data' / 'two.nii.gz'}\n")
    assert named(list_cases([tmp_path / "cohort.csv"])) == {"one": tmp_path / "data" / "one.nii.gz",
                                                            "two": tmp_path / "data" / "two.nii.gz"}
    (tmp_path / "named.csv").write_text("path,name\ndata/one.nii.gz,P-001\ndata/two.nii.gz,P-002\n")
    assert list(named(list_cases([tmp_path / "named.csv"]))) == ["P-001", "P-002"]


def test_nothing_to_segment_and_clashing_names_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UniversalError, match="no scans in this folder"):
        list_cases([tmp_path / "empty"])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UniversalError, match="names no scans"):
        list_cases([tmp_path / "empty.txt"])
    scan(tmp_path / "a" / "ct.nii.gz")
    scan(tmp_path / "b" / "ct.nii.gz")
    with pytest.raises(UniversalError, match="share the case name ct"):
        list_cases([tmp_path / "a" / "ct.nii.gz", tmp_path / "b" / "ct.nii.gz"])
