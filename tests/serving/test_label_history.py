"""An annotation team's records: every version kept and attributed, effort against the prediction the
annotator was served, agreement equal to distances computed independently, a consensus, review
states that decide what trains, and versions that survive a process killed mid-save."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.labels import write_label_file
from universal.serving import label_versions as versions_module
from universal.serving.annotations import Annotation, annotation_datalist, restrict
from universal.serving.label_versions import PRELABEL, LabelVersions
from universal.serving.review import class_states, trainable_classes
from universal.serving.team import consensus_label, effort_by, image_agreement, image_summary
from universal.training.losses import partial_label_loss
from universal.training.sampler import CropSampler, PreparedCases

AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])  # anisotropic voxels: distances in mm differ from voxels
SHAPE = (40, 40, 24)


def cube(lo, hi) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


def saved(tmp_path, name: str, masks: dict[int, np.ndarray]):
    labels = np.zeros(SHAPE, np.uint8)
    for value, mask in masks.items():
        labels[mask] = value
    return write_label_file(labels, AFFINE, tmp_path / f"{name}.nii.gz")


def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in mm from each surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    spacing = np.linalg.norm(AFFINE[:3, :3], axis=0)
    return ndimage.distance_transform_edt(~surface(b), sampling=spacing)[surface(a)]


def test_versions_are_kept_attributed_and_their_effort_measured(tmp_path):
    store = LabelVersions(tmp_path / "team")
    liver, spleen = cube((5, 5, 5), (20, 20, 15)), cube((25, 25, 5), (35, 35, 12))
    prediction = np.zeros(SHAPE, np.uint8)
    prediction[liver], prediction[spleen] = 6, 1  # catalogue ids
    store.serve("case0", "ann1", prediction, AFFINE, {6: "Liver", 1: "Spleen"}, model_version=2, now=1000.0)
    unchanged = store.add_version("case0", saved(tmp_path, "same", {1: liver, 2: spleen}), {1: "Liver", 2: "Spleen"},
                                  "ann1", now=1090.0)
    assert unchanged["effort"] == {"Liver": {"added": 0, "removed": 0, "dice": 1.0},
                                   "Spleen": {"added": 0, "removed": 0, "dice": 1.0}}
    assert (unchanged["model_version"], unchanged["seconds"]) == (2, 90.0)
    erased = store.add_version("case0", saved(tmp_path, "erased", {1: liver}), {1: "Liver", 2: "Spleen"}, "ann1",
                               now=1200.0)
    assert erased["effort"]["Spleen"] == {"added": 0, "removed": int(spleen.sum()), "dice": 0.0}
    grown = liver | cube((20, 5, 5), (22, 20, 15))
    other = store.add_version("case0", saved(tmp_path, "grown", {3: grown}), {3: "Liver"}, "ann2", now=1300.0)
    assert other["effort"] is None and other["seconds"] is None  # ann2 was never served a prediction
    store.serve("case0", PRELABEL, prediction, AFFINE, {6: "Liver", 1: "Spleen"}, model_version=1)
    third = store.add_version("case0", saved(tmp_path, "grown3", {3: grown}), {3: "Liver"}, "ann3")
    assert third["effort"]["Liver"]["added"] == int((grown & ~liver).sum()) and third["model_version"] == 1
    record = store.record("case0")
    assert [(v["version"], v["annotator"]) for v in record["versions"]] == [(1, "ann1"), (2, "ann1"), (3, "ann2"),
                                                                            (4, "ann3")]
    assert record["final"] == 4 and all(store.file(v).is_file() for v in record["versions"])
    labels, _, values = store.label_map("case0", 2)
    assert np.array_equal(labels == 1, liver) and values == {1: "Liver", 2: "Spleen"}
    summary = effort_by(store.records())
    assert summary["by_annotator"]["ann1"]["versions"] == 2 and summary["by_annotator"]["ann1"]["seconds"] == 290.0
    assert summary["by_annotator"]["ann1"]["removed"] == int(spleen.sum())
    assert set(summary["by_model_version"]) == {"1", "2", "None"}
    assert image_summary(record)["versions"][0]["annotator"] == "ann1"


def test_agreement_equals_dice_and_surface_distances_computed_independently(tmp_path):
    store = LabelVersions(tmp_path / "team")
    first, second = cube((5, 5, 4), (20, 18, 14)), cube((8, 6, 5), (22, 18, 15))
    store.add_version("case0", saved(tmp_path, "a", {1: first}), {1: "Liver"}, "ann1")
    store.add_version("case0", saved(tmp_path, "b", {4: second}), {4: "Liver"}, "ann2")
    found = image_agreement(store, "case0")
    (pair,) = found["classes"]["Liver"]
    assert pair["annotators"] == ["ann1", "ann2"]
    assert pair["dice"] == pytest.approx(2 * (first & second).sum() / (first.sum() + second.sum()), abs=1e-6)
    ab, ba = distances(first, second), distances(second, first)
    assert pair["msd_mm"] == pytest.approx((ab.sum() + ba.sum()) / (ab.size + ba.size), rel=1e-3)
    assert pair["hd95_mm"] == pytest.approx(max(np.percentile(ab, 95), np.percentile(ba, 95)), rel=1e-3)
    assert found["lowest_dice"] == pair["dice"]


def test_a_consensus_is_the_majority_of_the_annotators(tmp_path):
    store = LabelVersions(tmp_path / "team")
    masks = [cube((5, 5, 5), (15, 15, 15)), cube((6, 5, 5), (16, 15, 15)), cube((5, 6, 5), (15, 16, 15))]
    for number, mask in enumerate(masks):
        store.add_version("case0", saved(tmp_path, f"r{number}", {number + 1: mask}), {number + 1: "Liver"},
                          f"ann{number}")
    agreed, affine, values = consensus_label(store, "case0")
    assert values == {1: "Liver"} and np.allclose(affine, AFFINE)
    assert np.array_equal(agreed == 1, (masks[0].astype(int) + masks[1] + masks[2]) >= 2)
    with pytest.raises(UniversalError, match="needs two or more"):
        consensus_label(LabelVersions(tmp_path / "other"), "case0")


def test_review_states_decide_what_trains_and_a_rejected_class_has_no_loss(tmp_path):
    store = LabelVersions(tmp_path / "team")
    liver, spleen = cube((5, 5, 5), (20, 20, 15)), cube((25, 25, 5), (35, 35, 12))
    prediction = np.zeros(SHAPE, np.uint8)
    prediction[liver] = 6
    store.serve("case0", "ann1", prediction, AFFINE, {6: "Liver", 7: "Stomach"}, model_version=1)
    label = saved(tmp_path, "label", {1: liver, 2: spleen})
    store.add_version("case0", label, {1: "Liver", 2: "Spleen"}, "ann1")
    assert class_states(store.record("case0")) == {"Liver": "corrected", "Spleen": "corrected",
                                                   "Stomach": "predicted"}
    store.review("case0", "rev1", {"Liver": ("approved", ""), "Spleen": ("rejected", "misses the hilum")})
    record = store.record("case0")
    assert class_states(record)["Spleen"] == "rejected"
    assert trainable_classes(record, "final") == {"Liver"} == trainable_classes(record, "approved")
    assert trainable_classes(None, "final") is None and trainable_classes(None, "approved") == set()
    with pytest.raises(UniversalError, match="names no class Pancreas"):
        store.review("case0", "rev1", {"Pancreas": ("approved", "")})

    image = tmp_path / "ct.nii.gz"
    ct = np.full(SHAPE, -1000, np.int16)  # air around a body of 40 HU
    ct[2:38, 2:38, 2:22] = 40
    nib.save(nib.Nifti1Image(ct, AFFINE), image)
    annotation = Annotation("case0", str(image), str(label), {1: "Liver", 2: "Spleen"})
    kept = restrict(annotation, trainable_classes(record, "final"))
    assert kept.values == {1: "Liver"}
    catalog = Catalog.default()
    datalist = annotation_datalist([kept])
    cases = PreparedCases(datalist.templates, catalog, _spec())
    batch = CropSampler(datalist, cases, (16, 16, 16), seed=0, accumulate=1).batch(0, 0, 0, 1, 1)
    annotated = batch["annotated"][0]
    assert annotated[catalog["Liver"].id - 1] and not annotated[catalog["Spleen"].id - 1]
    logits = torch.zeros(1, len(catalog), 16, 16, 16)
    moved = logits.clone()
    moved[:, catalog["Spleen"].id - 1] = 5.0  # the rejected class's output changes: the loss does not
    target = batch["target"].float()
    assert partial_label_loss(logits, target, batch["annotated"]) == partial_label_loss(moved, target,
                                                                                        batch["annotated"])


def test_a_process_killed_mid_save_loses_no_earlier_version(tmp_path, monkeypatch):
    store = LabelVersions(tmp_path / "team")
    liver = cube((5, 5, 5), (20, 20, 15))
    store.add_version("case0", saved(tmp_path, "first", {1: liver}), {1: "Liver"}, "ann1")
    before = store.record("case0")

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(versions_module, "atomic_write_text", killed)  # the file stored, the record not replaced
    with pytest.raises(SystemExit):
        store.add_version("case0", saved(tmp_path, "second", {2: liver}), {2: "Liver"}, "ann2")
    monkeypatch.undo()
    assert LabelVersions(tmp_path / "team").record("case0") == before
    assert json.loads((tmp_path / "team" / "images" / "case0.json").read_text()) == before
    assert store.add_version("case0", saved(tmp_path, "third", {1: liver}), {1: "Liver"}, "ann2")["version"] == 2


def _spec():
    from universal.nets.model import InputSpec

    return InputSpec(spacing=(1.5, 1.0, 2.0), window_size=(16, 16, 16))
