"""The labelled dataset a team delivers: an nnU-Net v2 export passes nnU-Net's own integrity check, an
MSD export reads back through ``universal prepare`` to the same cases and classes, review states decide
what is exported, provenance.csv says where each case comes from, and memory does not grow with the
number of images."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import universal
from universal.cli import main
from universal.export import export_dataset
from universal.serving.label_versions import TEAM_FOLDER, LabelVersions
from universal.synth import make_phantom, save_phantom
from universal.training.datasets import prepare_datalist

CATALOG = universal.Catalog.default()
SMALL = {"shape": (32, 32, 24), "spacing": (12.8, 12.8, 20.0)}


def studies_folder(root: Path, count: int, reviewed: bool = True) -> Path:
    """A studies folder as MONAI Label's LocalDatastore keeps it, ``count`` phantoms each with a final
    label (liver, spleen, kidneys as 3D Slicer sends them), and the team's records of two of them."""
    from monailabel.datastore.local import LocalDatastore

    studies = root / "studies"
    studies.mkdir(parents=True)
    datastore = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    names = ["Liver", "Spleen", "Right Kidney", "Left Kidney"]
    for number in range(count):
        phantom = make_phantom(number, **SMALL)
        case = f"case{number:03d}"
        save_phantom(phantom, root / "image.nii.gz")
        datastore.add_image(case, str(root / "image.nii.gz"), {})
        label = np.zeros(phantom.label.shape, np.uint8)
        for value, name in enumerate(names, start=1):
            label[phantom.label == CATALOG[name].id] = value
        nib.save(nib.Nifti1Image(label, phantom.affine), root / "label.nii.gz")
        info = [{"name": name, "idx": value} for value, name in enumerate(names, start=1)]
        datastore.save_label(case, str(root / "label.nii.gz"), "final", {"label_info": info})
        if reviewed and number < 2:
            team = LabelVersions(studies / TEAM_FOLDER)
            team.add_version(case, root / "label.nii.gz", dict(enumerate(names, start=1)), f"ann{number}")
            team.review(case, "rev", {"Liver": ("approved", ""), "Spleen": ("rejected", "too small")})
    return studies


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    return studies_folder(tmp_path_factory.mktemp("export"), 4)


def test_an_nnunet_export_passes_nnunets_own_integrity_check(studies, tmp_path):
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    summary = export_dataset(studies, tmp_path, "nnunetv2", name="Abdomen", dataset_id=7)
    assert summary.folder == tmp_path / "Dataset007_Abdomen"
    assert summary.classes == ["Spleen", "Right Kidney", "Left Kidney", "Liver"]  # catalogue order
    document = json.loads((summary.folder / "dataset.json").read_text())
    assert document["labels"] == {"background": 0, "Spleen": 1, "Right Kidney": 2, "Left Kidney": 3, "Liver": 4}
    assert (document["numTraining"], document["file_ending"], document["channel_names"]) == (4, ".nii.gz",
                                                                                               {"0": "CT"})
    verify.verify_dataset_integrity(str(summary.folder), num_processes=1)  # raises on any problem
    label = np.asarray(nib.load(summary.folder / "labelsTr" / "case002.nii.gz").dataobj)
    truth = make_phantom(2, **SMALL).label
    assert np.array_equal(label == 4, truth == CATALOG["Liver"].id)
    reviewed = np.asarray(nib.load(summary.folder / "labelsTr" / "case000.nii.gz").dataobj)
    assert not (reviewed == 1).any()  # the reviewer rejected case000's spleen: left out
    approved = export_dataset(studies, tmp_path / "approved", "nnunetv2", labels="approved",
                              classes=["Liver", "Spleen"])
    assert json.loads((approved.folder / "dataset.json").read_text())["labels"] == {
        "background": 0, "Liver": 1, "Spleen": 2, "ignore": 3}
    verify.verify_dataset_integrity(str(approved.folder), num_processes=1)
    only = np.asarray(nib.load(approved.folder / "labelsTr" / "case001.nii.gz").dataobj)
    assert set(np.unique(only)) <= {0, 1, 3} and (only == 1).any()  # the approved liver; the spleen ignored
    assert approved.cases == ["case000", "case001"]  # the others have no approved class
    assert "no class of it is approved" in approved.skipped["case002"]


def test_an_msd_export_reads_back_through_prepare_and_names_its_provenance(studies, tmp_path):
    summary = export_dataset(studies, tmp_path, "msd", name="Abdomen")
    datalist = prepare_datalist([summary.folder], validation_fraction=0)
    assert sorted(Path(case["image"]).name for case in datalist.training) == [f"case{n:03d}.nii.gz" for n in range(4)]
    assert set(datalist.classes) == set(summary.classes)
    with (summary.folder / "provenance.csv").open() as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert rows["case000"]["annotators"] == "ann0" and "Spleen=rejected" in rows["case000"]["states"]
    assert rows["case003"]["annotators"] == "" and rows["case003"]["source_image"] == "case003.nii.gz"
    assert main(["export", str(studies), "-o", str(tmp_path / "cli"), "--format", "nifti", "--images", "case001",
                 "--classes", "Liver"]) == 0
    assert json.loads((tmp_path / "cli" / "labels.json").read_text()) == {"0": "background", "1": "Liver"}
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["case001", "labels.json", "provenance.csv"]


PEAK = textwrap.dedent("""
    import resource, sys
    from universal.export import export_dataset
    export_dataset(sys.argv[1], sys.argv[2], "nnunetv2")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def test_memory_stays_bounded_whatever_the_number_of_images(tmp_path):
    peaks = {}
    for count in (20, 200):
        folder = studies_folder(tmp_path / str(count), count, reviewed=False)
        done = subprocess.run([sys.executable, "-c", PEAK, str(folder), str(tmp_path / f"out{count}")],
                              capture_output=True, text=True, check=True)
        peaks[count] = int(done.stdout.split()[-1])
    print(f"export peak RSS: {peaks} MiB")
    assert peaks[200] - peaks[20] < 40, peaks  # ten times the images, the same memory
