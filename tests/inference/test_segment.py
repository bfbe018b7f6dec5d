"""`universal segment` with a small synthetic checkpoint: outputs on the input grid, reports, class
subsets, resuming, and bad inputs that fail alone."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

import universal
from universal.cli import main
from universal.io.scans import write_nifti

# LPS voxel axes, anisotropic voxels: 40 × 40 × 48 mm, one 32³ window of the small model at 1.5 mm
AFFINE = np.array([[-2.0, 0, 0, 30.0], [0, -2.2, 0, 12.0], [0, 0, 4.0, -60.0], [0, 0, 0, 1]])
SHAPE = (20, 18, 12)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    spec = universal.InputSpec(window_size=(32, 32, 32))
    model = universal.UniversalModel("unet", width=4, class_embeddings=torch.randn(32, 512), input_spec=spec)
    return universal.save_model(model, tmp_path_factory.mktemp("ckpt") / "small.pt")


def write_ct(path, seed=0):
    """An ellipsoid of soft tissue with a bright blob, in air."""
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    rng = np.random.default_rng(seed)
    volume = np.where(i**2 + j**2 + k**2 < 0.8, 40, -1000) + rng.normal(0, 10, SHAPE)
    volume[(i - 0.3) ** 2 + j**2 + k**2 < 0.1] = 160
    write_nifti(volume.astype(np.int16), AFFINE, path, is_label=False)
    return path


@pytest.fixture(scope="module")
def full_run(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    ct = write_ct(root / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(root / "out"), "--model", str(checkpoint), "--masks", "--preview",
                 "--quiet"]) == 0
    return root / "out" / "ct"


def test_label_map_lies_on_the_input_grid(full_run):
    label_map = nib.load(full_run / "segmentation.nii.gz")
    assert label_map.shape == SHAPE and label_map.get_data_dtype() == np.uint8
    np.testing.assert_allclose(label_map.affine, AFFINE)
    values = np.asarray(label_map.dataobj)
    assert set(np.unique(values)) <= set(range(33))
    for class_id in np.unique(values)[1:]:  # a voxel labelled k lies in class k's own mask
        name = universal.Catalog.default()[int(class_id)].name
        mask = np.asarray(nib.load(full_run / "masks" / f"{name}.nii.gz").dataobj)
        assert mask[values == class_id].all()


def test_preview_shows_the_segmented_classes_in_their_colours(full_run):
    from PIL import Image

    picture = np.asarray(Image.open(full_run / "preview.png").convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in picture}
    values = np.unique(np.asarray(nib.load(full_run / "segmentation.nii.gz").dataobj))[1:]
    assert len(values), "the small model segments nothing"
    for class_id in values:  # each class's legend square, in its catalogue colour
        assert tuple(universal.Catalog.default()[int(class_id)].color) in colours


def test_report_counts_what_the_masks_hold(full_run):
    report = json.loads((full_run / "report.json").read_text())
    assert report["input"]["shape"] == list(SHAPE) and report["input"]["orientation"] == "LPS"
    assert report["settings"]["windows"] == 1 and report["settings"]["overlap"] == 0.5
    assert set(report["timings_s"]) == {"read", "preprocess", "network", "postprocess", "scan grid", "measure", "check",
                                       "write", "total"}
    assert all({"code", "classes", "severity", "message"} <= set(f) for f in report["findings"])
    with (full_run.parent / "summary.csv").open() as stream:
        row = next(csv.DictReader(stream))
    severities = ("findings_info", "findings_warning", "findings_error")
    assert sum(int(row[s]) for s in severities) == len(report["findings"]) and row["error"] == ""
    assert len(report["classes"]) == 32 and len(report["lesions"]) == 7
    voxel_ml = 2.0 * 2.2 * 4.0 / 1000
    for name, entry in report["classes"].items():
        mask = np.asarray(nib.load(full_run / "masks" / f"{name}.nii.gz").dataobj).astype(bool)
        assert entry["voxels"] == mask.sum()
        assert entry["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, abs=1e-3)
        assert (entry["components"] > 0) == mask.any()
    for name, finding in report["lesions"].items():
        assert finding["detected"] == (report["classes"][name]["voxels"] > 0)


def test_class_subset_equals_the_same_classes_of_a_full_run(checkpoint, full_run, tmp_path):
    """Written over a copy of the full run: the masks of the other classes do not stay behind."""
    ct = full_run.parent.parent / "ct.nii.gz"
    shutil.copytree(full_run, tmp_path / "ct")
    argv = ["segment", str(ct), "-o", str(tmp_path), "--model", str(checkpoint), "--masks", "--quiet",
            "--classes", "Liver Tumor", "1", "left lung"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "ct" / "report.json").read_text())
    assert list(report["classes"]) == ["Spleen", "Left Lung", "Liver Tumor"]
    assert sorted(p.name for p in (tmp_path / "ct" / "masks").iterdir()) == [
        "Left Lung.nii.gz", "Liver Tumor.nii.gz", "Spleen.nii.gz"]
    for name in ("Spleen", "Left Lung", "Liver Tumor"):
        subset = np.asarray(nib.load(tmp_path / "ct" / "masks" / f"{name}.nii.gz").dataobj)
        full = np.asarray(nib.load(full_run / "masks" / f"{name}.nii.gz").dataobj)
        assert np.array_equal(subset, full), name


def test_bad_inputs_fail_alone_and_resume_skips_finished_cases(checkpoint, tmp_path, capsys):
    good = write_ct(tmp_path / "good.nii.gz")
    nib.save(nib.Nifti1Image(np.full((16, 16), -1000, np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 8, 2), -1000, np.int16), np.eye(4)), tmp_path / "dynamic.nii.gz")
    nib.save(nib.Nifti1Image(np.linspace(0, 1, 512, dtype=np.float32).reshape(8, 8, 8), np.eye(4)),
             tmp_path / "scaled.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    inputs = [tmp_path / f"{name}.nii.gz" for name in ("flat", "dynamic", "good", "broken", "scaled")]
    out = tmp_path / "out"
    assert main(["segment", *map(str, inputs), "-o", str(out), "--model", str(checkpoint), "--quiet"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("universal segment")]
    assert len(errors) == 5 and errors[-1] == "universal segment: 4 of 5 cases failed"
    for line, reason in zip(errors, ("a 2D image", "a 4D series", "cannot be read", "not CT Hounsfield units"),
                            strict=False):
        assert line.startswith("universal segment: ") and reason in line
    assert (out / "good" / "report.json").is_file() and not (out / "flat").exists()

    written = (out / "good" / "segmentation.nii.gz").stat().st_mtime_ns
    assert main(["segment", str(good), "-o", str(out), "--model", str(checkpoint), "--resume"]) == 0
    assert "good: skipped (finished before)" in capsys.readouterr().out
    assert (out / "good" / "segmentation.nii.gz").stat().st_mtime_ns == written


def test_unknown_class_fails_before_any_case(checkpoint, tmp_path, capsys):
    ct = write_ct(tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "out"), "--model", str(checkpoint),
                 "--classes", "appendix"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "appendix" in err and not (tmp_path / "out").exists()


def test_dicom_inputs_get_a_dicom_seg_referencing_their_series(checkpoint, tmp_path, capsys):
    import pydicom
    from dicom_series import write_ct_series

    from universal.io.dicom import read_segmentation, read_series, series_geometry

    write_ct(tmp_path / "ct.nii.gz")
    ct = nib.load(tmp_path / "ct.nii.gz")
    write_ct_series(np.asarray(ct.dataobj), ct.affine, tmp_path / "series")
    args = ["segment", str(tmp_path / "series"), "-o", str(tmp_path / "out"), "--model", str(checkpoint), "--quiet"]
    assert main([*args, "--dicom-seg"]) == 0
    case = tmp_path / "out" / "series"
    seg = pydicom.dcmread(case / "segmentation.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == read_series(tmp_path / "series")[0].SeriesInstanceUID
    label_map = np.asarray(nib.load(case / "segmentation.nii.gz").dataobj)
    back, names = read_segmentation(case / "segmentation.dcm", series_geometry(read_series(tmp_path / "series")))
    catalog = universal.Catalog.default()
    for number, name in names.items():
        assert np.array_equal(back == number, label_map == catalog[name].id), name
    assert main(args) == 0 and not (case / "segmentation.dcm").exists()  # a later run without it removes it
    assert main([*args[:1], str(tmp_path / "ct.nii.gz"), *args[2:], "--dicom-seg"]) == 2
    assert "DICOM series (folders) only" in capsys.readouterr().err
