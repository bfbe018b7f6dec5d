"""Anatomy checks on phantoms with one injected defect each: each is caught with the right code and
class, and nothing else rises above ``info``; clean phantoms, in either orientation, stay quiet."""

from __future__ import annotations

import numpy as np
import pytest

import universal
from universal.quality import check_label_map, check_masks, counts
from universal.synth import make_phantom

CATALOG = universal.Catalog.default()
GRID = {"shape": (128, 128, 96), "spacing": (3.2, 3.2, 5.0)}  # the whole body from the lung bases to the pelvis


def ids(*names: str) -> list[int]:
    return [CATALOG[name].id for name in names]


def world_x(label: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The RAS x (mm) of every voxel's first axis index, as the grid's affine gives it."""
    return affine[0, 0] * np.arange(label.shape[0]) + affine[0, 3]


def serious(findings) -> list[tuple[str, tuple[str, ...]]]:
    return [(f.code, f.classes) for f in findings if f.severity != "info"]


@pytest.fixture(scope="module")
def clean():
    return make_phantom(4, **GRID)


@pytest.fixture(scope="module")
def with_lesions():
    return make_phantom(5, lesions=["Liver Tumor"], **GRID)


def swap(label: np.ndarray, first: str, second: str) -> np.ndarray:
    out = label.copy()
    a, b = label == CATALOG[first].id, label == CATALOG[second].id
    out[a], out[b] = CATALOG[second].id, CATALOG[first].id
    return out


def mirror(label: np.ndarray, affine: np.ndarray, name: str) -> np.ndarray:
    """``name`` moved to the other side of the body (x → -x, painted over what lies there)."""
    out = label.copy()
    mask = label == CATALOG[name].id
    out[mask] = 0
    x = world_x(label, affine)
    flipped = np.searchsorted(x, -x[::-1])[::-1]  # the index whose x is the opposite of each index's
    where = np.nonzero(mask)
    out[(np.clip(flipped, 0, label.shape[0] - 1)[where[0]], *where[1:])] = CATALOG[name].id
    return out


def defects(phantom, lesion_phantom):
    """(name, label map, affine, the expected (code, classes)): findings of that code about the first of
    the classes are the defect's (a bladder above the liver is above the kidneys too)."""
    label, affine = phantom.label, phantom.affine
    liver = label == CATALOG["Liver"].id
    small = liver.copy()
    kept = np.argwhere(liver)
    centre = kept.mean(0)
    distance = np.linalg.norm((kept - centre) * np.array(GRID["spacing"]), axis=1)
    voxel_ml = np.prod(GRID["spacing"]) / 1000
    small[tuple(kept[distance > np.sort(distance)[int(50 / voxel_ml)]].T)] = False  # the 50 mL nearest its centre
    shrunk = np.where(liver & ~small, 0, label).astype(np.uint8)
    spleen = label == CATALOG["Spleen"].id
    span = np.nonzero(spleen.any((0, 1)))[0]
    split = label.copy()
    for cut in np.linspace(span.min(), span.max(), 4)[1:3].round().astype(int):
        split[:, :, cut - 1:cut + 1][spleen[:, :, cut - 1:cut + 1]] = 0  # three pieces
    bladder_liver = label.copy()
    bladder = label == CATALOG["Bladder"].id
    bladder_liver[bladder] = 0
    shift = int(np.nonzero(liver.any((0, 1)))[0].max() - np.nonzero(bladder.any((0, 1)))[0].max()) + 2
    bladder_liver[np.roll(bladder, shift, axis=2) & (label == 0)] = CATALOG["Bladder"].id  # above the liver
    kidney_z = np.nonzero((label == CATALOG["Right Kidney"].id).any((0, 1)))[0]
    cut_at = int(kidney_z.mean())
    deleted = np.where(spleen, 0, label).astype(np.uint8)
    lesion_label = lesion_phantom.label
    tumour = lesion_label == CATALOG["Liver Tumor"].id
    moved = np.where(tumour, CATALOG["Liver"].id, lesion_label).astype(np.uint8)
    moved[np.roll(tumour, -int(0.35 * tumour.shape[0]), axis=0) & (moved == 0)] = CATALOG["Liver Tumor"].id
    return [
        ("kidneys swapped", swap(label, "Right Kidney", "Left Kidney"), affine,
         ("side", ("Right Kidney", "Left Kidney"))),
        ("spleen mirrored", mirror(label, affine, "Spleen"), affine, ("side", ("Spleen",))),
        ("liver tumour outside", moved, lesion_phantom.affine, ("outside_organ", ("Liver Tumor",))),
        ("liver of 50 mL", shrunk, affine, ("volume", ("Liver",))),
        ("spleen in three", split, affine, ("fragments", ("Spleen",))),
        ("bladder above the liver", bladder_liver, affine, ("order", ("Bladder", "Liver"))),
        ("spleen deleted", deleted, affine, ("missing", ("Spleen",))),
        ("cut at the kidneys", label[:, :, cut_at:].copy(), _cut_affine(affine, cut_at),
         ("truncated", ("Right Kidney",))),
    ]


def _cut_affine(affine: np.ndarray, first: int) -> np.ndarray:
    moved = affine.copy()
    moved[:3, 3] = (affine @ np.array([0, 0, first, 1.0]))[:3]
    return moved


def test_clean_phantoms_are_quiet_in_both_orientations(clean, with_lesions):
    for phantom in (clean, with_lesions, make_phantom(4, orientation="LPS", **GRID)):
        findings = check_label_map(phantom.label, phantom.affine, CATALOG)
        assert serious(findings) == [], serious(findings)
        assert {f.code for f in findings} <= {"truncated"}  # the scan's top cuts the lungs, the aorta, ...
    ras = check_label_map(clean.label, clean.affine, CATALOG)
    lps = make_phantom(4, orientation="LPS", **GRID)
    assert [f.to_record() for f in check_label_map(lps.label, lps.affine, CATALOG)] == [f.to_record() for f in ras]


def test_each_injected_defect_is_caught_with_its_code_and_class_and_nothing_else(clean, with_lesions):
    for name, label, affine, (code, classes) in defects(clean, with_lesions):
        findings = check_label_map(label, affine, CATALOG)
        caught = [f for f in findings if f.code == code and set(classes) <= set(f.classes)]
        assert caught, (name, [f.to_record() for f in findings])
        others = [f for f in serious(findings) if f[0] != code or classes[0] not in f[1]]
        assert others == [], (name, others)
        assert caught[0].message and caught[0].expected


def test_an_lps_file_of_a_defect_gives_the_same_finding(clean):
    lps = make_phantom(4, orientation="LPS", **GRID)
    swapped = swap(lps.label, "Right Kidney", "Left Kidney")
    assert serious(check_label_map(swapped, lps.affine, CATALOG)) == [("side", ("Right Kidney", "Left Kidney"))]
    assert counts(check_label_map(swapped, lps.affine, CATALOG))["error"] == 1


def test_separate_masks_that_overlap_and_a_lesion_without_its_organ(clean):
    masks = {name: clean.label == CATALOG[name].id for name in ("Liver", "Spleen", "Stomach", "Right Kidney")}
    masks["Spleen"] = masks["Spleen"] | masks["Stomach"]  # an annotator drew the spleen over the stomach
    findings = check_masks(masks, clean.affine, CATALOG)
    assert ("overlap", ("Spleen", "Stomach")) in serious(findings)
    lesion = np.zeros_like(clean.label)
    lesion[clean.label == CATALOG["Right Kidney"].id] = CATALOG["Kidney Tumor"].id  # a tumour, no kidney at all
    unexpected = check_label_map(lesion, clean.affine, CATALOG, ["Kidney Tumor", "Right Kidney", "Left Kidney"])
    assert ("unexpected", ("Kidney Tumor",)) in serious(unexpected)


def test_universal_check_reads_label_maps_other_numberings_and_folders_of_masks(clean, tmp_path, capsys):
    import json

    from universal.cli import main
    from universal.io.scans import write_nifti

    write_nifti(clean.label, clean.affine, tmp_path / "label.nii.gz", is_label=True)
    assert main(["check", str(tmp_path / "label.nii.gz")]) == 0  # only truncated organs: info
    assert "truncated" in capsys.readouterr().out
    folder = tmp_path / "segmentations"  # another tool's masks, named by class, the kidneys swapped
    for name, drawn in (("liver", "Liver"), ("spleen", "Spleen"), ("kidney_right", "Left Kidney"),
                        ("kidney_left", "Right Kidney"), ("vertebrae_L1", "Aorta")):
        write_nifti((clean.label == CATALOG[drawn].id).astype(np.uint8), clean.affine, folder / f"{name}.nii.gz",
                    is_label=True)
    assert main(["check", str(folder), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["left_out"] == ["vertebrae_L1"]
    assert [(f["code"], f["classes"]) for f in printed["findings"] if f["severity"] == "error"] == [
        ("side", ["Right Kidney", "Left Kidney"])]
    other = np.where(clean.label == CATALOG["Liver"].id, 7, 0).astype(np.uint8)  # a tool's own numbering
    write_nifti(other, clean.affine, tmp_path / "other.nii.gz", is_label=True)
    (tmp_path / "names.json").write_text(json.dumps({"7": "liver", "9": "spleen", "3": "appendix"}))
    assert main(["check", str(tmp_path / "other.nii.gz"), "--names", str(tmp_path / "names.json"),
                 "--image", str(tmp_path / "label.nii.gz")]) == 0  # the spleen is not missing: no rule for it alone
    assert "appendix: not a class of the catalogue" in capsys.readouterr().err
    write_nifti((other > 0).astype(np.uint8) * 40, clean.affine, tmp_path / "forty.nii.gz", is_label=True)
    assert main(["check", str(tmp_path / "forty.nii.gz")]) == 2  # 40 is no class id, and nothing names it
    assert "values [40] are not class ids" in capsys.readouterr().err
