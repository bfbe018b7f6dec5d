"""Synthetic CT phantoms: anatomy in the right places for both orientations, realistic HU, files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.synth import (
    LESION_CLASSES,
    Phantom,
    make_phantom,
    phantom_datasets,
    save_phantom,
    write_datasets,
)

SMALL = {"shape": (96, 96, 48), "spacing": (4.4, 4.4, 5.0)}  # 422 × 422 × 240 mm, upper abdomen
LONG = {"shape": (64, 64, 64), "spacing": (6.6, 6.6, 8.0)}  # 422 × 422 × 512 mm, lung bases to hips
CATALOG = Catalog.default()


def ids(*names: str) -> list[int]:
    return [CATALOG[name].id for name in names]


def mask(phantom: Phantom, *names: str) -> np.ndarray:
    return np.isin(phantom.label, ids(*names))


def world_centroid(phantom: Phantom, *names: str) -> np.ndarray:
    """Mean world position (RAS+ mm) of the voxels labelled with any of ``names``."""
    voxels = np.argwhere(mask(phantom, *names))
    assert len(voxels), f"no voxels of {names}"
    return nib.affines.apply_affine(phantom.affine, voxels.mean(axis=0))


def median_hu(phantom: Phantom, *names: str) -> float:
    """Median HU inside the labels, one voxel in from their edges."""
    inner = ndimage.binary_erosion(mask(phantom, *names))
    assert inner.sum() > 5, f"too few inner voxels of {names}"
    return float(np.median(phantom.image[inner]))


@pytest.fixture(scope="module")
def ras() -> Phantom:
    return make_phantom(seed=7, lesions=True, **SMALL)


@pytest.fixture(scope="module")
def lps() -> Phantom:
    return make_phantom(seed=7, lesions=True, orientation="LPS", **SMALL)


@pytest.fixture(scope="module")
def long() -> Phantom:
    return make_phantom(seed=3, orientation="LPS", **LONG)


def test_volume_types_shapes_and_affines(ras, lps):
    for phantom, codes in ((ras, ("R", "A", "S")), (lps, ("L", "P", "S"))):
        assert phantom.image.dtype == np.int16 and phantom.label.dtype == np.uint8
        assert phantom.image.shape == phantom.label.shape == SMALL["shape"]
        assert nib.aff2axcodes(phantom.affine) == codes
        assert np.allclose(np.abs(np.diag(phantom.affine)[:3]), SMALL["spacing"])
    centre = nib.affines.apply_affine(ras.affine, (np.array(SMALL["shape"]) - 1) / 2)
    assert np.allclose(centre[:2], 0)


def test_at_least_fourteen_organs_in_the_upper_abdomen(ras):
    organs = [i for i in ras.class_ids() if not CATALOG[i].is_lesion]
    expected = ids("liver", "spleen", "right kidney", "left kidney", "pancreas", "stomach", "gallbladder",
                   "aorta", "IVC", "portal vein", "right lung", "left lung", "right adrenal gland",
                   "left adrenal gland", "duodenum", "colon", "intestine", "esophagus")  # fmt: skip
    assert len(organs) >= 14
    assert set(expected) <= set(organs)


def test_long_field_of_view_reaches_lungs_and_hips(long):
    present = set(long.class_ids())
    expected = ids("right lung", "bladder", "prostate", "rectum", "left femoral head", "right femoral head")
    assert set(expected) <= present
    assert world_centroid(long, "right femoral head")[0] > 40
    assert world_centroid(long, "left femoral head")[0] < -40
    assert world_centroid(long, "bladder")[2] < world_centroid(long, "right kidney")[2] - 100


def test_hounsfield_units_per_tissue(ras, long):
    expected = {
        ("liver",): (80, 135),
        ("spleen",): (85, 145),
        ("right kidney", "left kidney"): (100, 220),
        ("aorta",): (130, 230),
        ("inferior vena cava",): (100, 200),
        ("right lung", "left lung"): (-930, -780),
        ("gallbladder",): (-15, 40),
    }
    for names, (low, high) in expected.items():
        assert low <= median_hu(ras, *names) <= high, names
    assert -15 <= median_hu(long, "bladder") <= 40
    assert 150 <= median_hu(long, "left femoral head", "right femoral head") <= 900
    body = _body_mask(ras.image)
    assert np.all(np.abs(ras.image[~ndimage.binary_dilation(body, iterations=3)] + 1000) < 80)  # air
    fat = np.mean((ras.image[body] > -150) & (ras.image[body] < -50))
    bone = np.mean(ras.image[body] > 200)
    gas = np.mean(ras.image[body & (ras.label == CATALOG["colon"].id)] < -500)
    assert fat > 0.1 and 0.005 < bone < 0.1 and gas > 0


def _body_mask(image: np.ndarray) -> np.ndarray:
    """The patient as seen in the image: everything above -500 HU, holes filled slice by slice."""
    body = np.zeros(image.shape, bool)
    for k in range(image.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(image[:, :, k] > -500)
    return body


def test_every_labelled_voxel_is_inside_the_body(ras, long):
    for phantom in (ras, long):
        assert np.all(_body_mask(phantom.image)[phantom.label > 0])


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_organs_lie_on_the_patients_side(orientation, ras, lps):
    phantom = ras if orientation == "RAS" else lps
    liver, spleen = world_centroid(phantom, "liver"), world_centroid(phantom, "spleen")
    assert liver[0] > 20 and spleen[0] < -20  # RAS+: +x is the patient's right
    assert world_centroid(phantom, "right kidney")[0] > 20 and world_centroid(phantom, "left kidney")[0] < -20
    kidneys = world_centroid(phantom, "right kidney", "left kidney")
    assert kidneys[1] < world_centroid(phantom, "pancreas")[1] - 20  # kidneys behind the pancreas
    assert world_centroid(phantom, "right lung", "left lung")[2] > liver[2] + 40  # lungs above
    voxel_x = {name: np.argwhere(mask(phantom, name))[:, 0].mean() for name in ("liver", "spleen")}
    assert (voxel_x["liver"] > voxel_x["spleen"]) == (orientation == "RAS")


def test_ras_and_lps_show_the_same_world(ras, lps):
    assert np.array_equal(lps.label, ras.label[::-1, ::-1, :])
    assert np.array_equal(lps.image, ras.image[::-1, ::-1, :])
    canonical = nib.as_closest_canonical(nib.Nifti1Image(lps.label, lps.affine))
    assert np.allclose(canonical.affine, ras.affine)
    assert np.array_equal(np.asarray(canonical.dataobj), ras.label)


def test_same_seed_same_volume_other_seed_other_anatomy(ras):
    again = make_phantom(seed=7, lesions=True, **SMALL)
    assert np.array_equal(again.image, ras.image) and np.array_equal(again.label, ras.label)
    other = make_phantom(seed=8, lesions=True, **SMALL)
    liver, other_liver = mask(ras, "liver"), mask(other, "liver")
    dice = 2 * np.sum(liver & other_liver) / (liver.sum() + other_liver.sum())
    assert dice < 0.95
    assert np.linalg.norm(world_centroid(ras, "spleen") - world_centroid(other, "spleen")) > 2


def test_anatomy_does_not_depend_on_the_grid(ras):
    fine = ras
    coarse = make_phantom(seed=7, lesions=True, shape=(48, 48, 24), spacing=(8.8, 8.8, 10.0))
    for name in ("liver", "spleen", "right kidney", "aorta"):
        assert np.linalg.norm(world_centroid(fine, name) - world_centroid(coarse, name)) < 6, name
    fine_mm3, coarse_mm3 = (mask(p, "liver").sum() * abs(np.linalg.det(p.affine)) for p in (fine, coarse))
    assert coarse_mm3 == pytest.approx(fine_mm3, rel=0.1)


def test_lesions_lie_inside_their_organs(ras):
    plain = make_phantom(seed=7, **SMALL)
    parents = {
        "Liver Tumor": ("liver", "hepatic vessel"),
        "Kidney Tumor": ("right kidney", "left kidney"),
        "Kidney Cyst": ("right kidney", "left kidney"),
        "Pancreas Tumor": ("pancreas",),
    }
    assert set(parents) == set(LESION_CLASSES)
    for lesion, organs in parents.items():
        inside = mask(ras, lesion)
        assert inside.sum() > 0, lesion
        assert np.all(np.isin(plain.label[inside], ids(*organs))), lesion
    assert not set(ids(*LESION_CLASSES)) & set(plain.class_ids())
    liver = np.median(ras.image[mask(ras, "liver")])
    tumours, count = ndimage.label(mask(ras, "liver tumor"))
    sizes = ndimage.sum_labels(np.ones(ras.label.shape), tumours, range(1, count + 1))
    for tumour in np.flatnonzero(sizes >= 20) + 1:  # each tumour is hypo- or hyperdense
        assert abs(np.median(ras.image[tumours == tumour]) - liver) > 25


def test_chosen_lesions_only_and_drawn_the_same(ras):
    liver_only = make_phantom(seed=7, lesions=["liver tumour"], **SMALL)
    present = set(liver_only.class_ids())
    assert CATALOG["liver tumor"].id in present
    assert not set(ids("kidney tumor", "kidney cyst", "pancreas tumor")) & present
    assert np.array_equal(mask(liver_only, "liver tumor"), mask(ras, "liver tumor"))


def test_noise_level_is_configurable(ras):
    quiet = make_phantom(seed=7, lesions=True, noise=0.0, **SMALL)
    inner = ndimage.binary_erosion(mask(quiet, "liver"), iterations=2)
    assert np.std(quiet.image[inner]) < 6 and 10 < np.std(ras.image[inner]) < 15  # noise SD 0 and 12 HU
    assert np.array_equal(quiet.label, ras.label)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"shape": (64, 64)}, "shape must be three integers"),
        ({"shape": (64, 64, 0)}, "positive"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be positive"),
        ({"spacing": (1.0, 1.0)}, "spacing must be three numbers"),
        ({"orientation": "XYZ"}, "orientation must be one of RAS, LPS"),
        ({"noise": -1}, "noise must be"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"lesions": ["spleen"]}, "phantoms draw lesions of"),
        ({"lesions": "liver tumor"}, "lesions must be True, False or a list"),
    ],
)
def test_bad_arguments_name_the_problem(arguments, message):
    with pytest.raises(UniversalError, match=message):
        make_phantom(**{**SMALL, **arguments})


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_keeps_the_affine(tmp_path, lps, suffix):
    image_path, label_path = tmp_path / f"ct{suffix}", tmp_path / f"label{suffix}"
    save_phantom(lps, image_path, label_path)
    image, label = nib.load(image_path), nib.load(label_path)
    for loaded, data, dtype in ((image, lps.image, np.int16), (label, lps.label, np.uint8)):
        assert np.allclose(loaded.affine, lps.affine)
        assert loaded.get_data_dtype() == dtype
        assert np.array_equal(np.asarray(loaded.dataobj), data)
        assert int(loaded.header["sform_code"]) == 1 and int(loaded.header["qform_code"]) == 1
        assert nib.aff2axcodes(loaded.affine) == ("L", "P", "S")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([image_path.name, label_path.name])
    with pytest.raises(UniversalError, match=r"\.nii or \.nii\.gz"):
        save_phantom(lps, tmp_path / "ct.mha")


def test_datasets_in_decathlon_layout(tmp_path):
    folders = write_datasets(tmp_path, cases_per_dataset=1, seed=4,
                             shape=(40, 40, 40), spacing=(10.5, 10.5, 12.5))
    assert [f.name for f in folders] == [spec.name for spec in phantom_datasets()]
    for folder, spec in zip(folders, phantom_datasets(), strict=True):
        document = json.loads((folder / "dataset.json").read_text())
        assert document["modality"] == {"0": "CT"} and document["tensorImageSize"] == "3D"
        assert document["labels"] == spec.label_names() and document["labels"]["0"] == "background"
        assert document["numTraining"] == len(document["training"]) == 1
        for entry in document["training"]:
            image, label = nib.load(folder / entry["image"]), nib.load(folder / entry["label"])
            assert image.shape == label.shape == (40, 40, 40)
            assert np.allclose(image.affine, label.affine)
            assert nib.aff2axcodes(image.affine) == tuple(spec.orientation)
            values = set(np.unique(np.asarray(label.dataobj)).tolist())
            assert values <= {int(v) for v in document["labels"]} and len(values) > 1, spec.name
    kits = nib.load(tmp_path / "KiTS" / "labelsTr" / "kits_000.nii.gz")
    kidney = np.argwhere(np.asarray(kits.dataobj) == 1)
    x = nib.affines.apply_affine(kits.affine, kidney)[:, 0]
    assert x.max() > 30 and x.min() < -30  # one value for both kidneys
    liver = nib.load(tmp_path / "Task03_Liver" / "labelsTr" / "task03_liver_000.nii.gz")
    assert set(np.unique(np.asarray(liver.dataobj)).tolist()) == {0, 1, 2}


def test_dataset_numbering_follows_each_dataset():
    spec = {s.name: s for s in phantom_datasets()}
    label = np.array(ids("liver", "hepatic vessel", "right kidney", "left kidney", "spleen"))
    assert spec["BTCV"].encode(label).tolist() == [6, 6, 2, 3, 1]  # the vessels inside the liver count as liver
    assert spec["AbdomenCT-1K"].encode(label).tolist() == [1, 1, 2, 2, 3]
    assert spec["Task09_Spleen"].encode(label).tolist() == [0, 0, 0, 0, 1]


def test_datasets_reject_unknown_names(tmp_path):
    with pytest.raises(UniversalError, match="unknown dataset 'LiTS'"):
        write_datasets(tmp_path, datasets=["LiTS"])
