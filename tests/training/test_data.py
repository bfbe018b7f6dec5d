"""Dataset templates, datalists, per-class targets from partial labels, and the partial-label loss."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from universal.catalog import Catalog
from universal.cli import main
from universal.synth import PhantomDataset, write_datasets
from universal.training.datasets import (
    DataError,
    Datalist,
    DatasetTemplate,
    find_template,
    load_templates,
    prepare_datalist,
)
from universal.training.losses import partial_label_loss
from universal.training.targets import PartialLabelTargetd

CATALOG = Catalog.default()


def test_packaged_templates_name_catalogue_classes():
    templates = load_templates()
    expected = {"BTCV", "Pancreas-CT", "CHAOS", "LiTS", "KiTS", "3D-IRCADb", "WORD", "AbdomenCT-1K", "AMOS",
                "MSD-Liver", "MSD-Lung", "MSD-Pancreas", "MSD-HepaticVessel", "MSD-Spleen", "MSD-Colon", "CT-ORG",
                "AbdomenCT-12organ"}
    assert expected <= set(templates)
    for template in templates.values():
        assert all(name in CATALOG for name in template.classes), template.name
    # the reference's annotated ids per dataset
    assert sorted(CATALOG[n].id for n in templates["KiTS"].classes) == [2, 3, 26, 32]
    assert sorted(CATALOG[n].id for n in templates["WORD"].classes) == [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 18,
                                                                         19, 20, 21, 23, 24]
    assert sorted(CATALOG[n].id for n in templates["CT-ORG"].classes) == [2, 3, 6, 16, 17, 21]
    assert find_template(templates, "Task03_Liver").name == "MSD-Liver"
    assert find_template(templates, "task 08 hepaticvessel") is None
    assert find_template(templates, "TASK08-hepaticvessel").name == "MSD-HepaticVessel"


def test_a_users_template_file_adds_and_replaces(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("datasets:\n  Mine:\n    labels:\n      1: Liver\n      2: Appendix\n"
                    "  CHAOS:\n    labels: {1: Liver, 2: Spleen}\n")
    templates = load_templates(path)
    assert templates["Mine"].classes == ["Liver", "Appendix"]
    assert templates["CHAOS"].classes == ["Liver", "Spleen"]
    path.write_text("datasets:\n  Bad:\n    labels:\n      1: [A, B, C]\n")
    with pytest.raises(DataError, match="one class or a \\[right, left\\] pair"):
        load_templates(path)


def blob(shape, centre, radius):
    grid = np.indices(shape).astype(float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def test_targets_split_pairs_by_side_and_count_lesions_as_organs():
    shape = (40, 20, 10)
    image = np.zeros(shape, np.float32)
    image[5:35] = 0.5  # tissue centred at x = 19.5
    label = np.zeros(shape, np.uint8)
    label[blob(shape, (30, 10, 5), 4)] = 1  # larger RAS x: the patient's right kidney
    label[blob(shape, (9, 10, 5), 4)] = 1
    tumour = blob(shape, (31, 10, 5), 1.5)
    label[tumour] = 2
    label[blob(shape, (8, 10, 5), 1)] = 3  # a cyst in the left kidney
    kits = load_templates()["KiTS"]
    out = PartialLabelTargetd(CATALOG, {"KiTS": kits})(
        {"image": image[None], "label": label[None], "dataset": "KiTS"}
    )
    target, annotated = out["target"].numpy().astype(bool), out["annotated"].numpy()
    assert target.shape == (32, *shape) and annotated.shape == (32,)
    assert sorted(np.flatnonzero(annotated) + 1) == [2, 3, 26, 32]
    right, left = target[CATALOG["Right Kidney"].id - 1], target[CATALOG["Left Kidney"].id - 1]
    assert right[tumour].all() and not left[tumour].any()  # the tumour counts as its kidney
    assert right[30, 10, 5] and left[9, 10, 5] and not (right & left).any()
    assert np.array_equal(target[CATALOG["Kidney Tumor"].id - 1], tumour)
    assert np.array_equal(right | left, label > 0)
    assert not target[CATALOG["Liver"].id - 1].any()  # not annotated: no target either


def test_hepatic_vessel_template_keeps_tumours_out_of_the_vessels():
    label = np.zeros((6, 6, 6), np.uint8)
    label[1:3], label[3:5] = 1, 2
    template = load_templates()["MSD-HepaticVessel"]
    out = PartialLabelTargetd(CATALOG, {"v": template})({"image": np.ones((1, 6, 6, 6)), "label": label[None],
                                                         "dataset": "v"})
    assert out["target"][CATALOG["Hepatic Vessel"].id - 1].sum() == 2 * 36


def test_loss_ignores_unannotated_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    target = (torch.rand(2, 3, 4, 4, 4) > 0.5).float()
    annotated = torch.tensor([[True, False, True], [False, True, False]])
    loss = partial_label_loss(logits, target, annotated)
    (grad,) = torch.autograd.grad(loss, logits)
    changed = logits.detach().clone()
    changed[0, 1] += 5.0  # a prediction of a class sample 0 does not annotate
    changed[1, 0] = -changed[1, 0]
    changed.requires_grad_(True)
    loss_changed = partial_label_loss(changed, target, annotated)
    (grad_changed,) = torch.autograd.grad(loss_changed, changed)
    assert torch.equal(loss, loss_changed)
    assert torch.equal(grad, grad_changed)
    assert not grad[0, 1].any() and not grad[1, 0].any() and grad[0, 0].abs().sum() > 0
    # the value is BCE + 1 - soft Dice, averaged over the three annotated pairs
    x, t = logits[0, 0].detach().flatten(), target[0, 0].flatten()
    p = torch.sigmoid(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t)
    single = bce + 1 - 2 * (p * t).sum() / (p.sum() + t.sum() + 1)
    assert torch.isclose(partial_label_loss(logits[:1, :1], target[:1, :1], annotated[:1, :1]), single)
    nothing = partial_label_loss(logits, target, torch.zeros(2, 3, dtype=torch.bool))
    assert nothing.item() == 0.0 and nothing.requires_grad


@pytest.fixture(scope="module")
def phantom_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    no_template = PhantomDataset(DatasetTemplate("SpleenPancreasStomach", {1: ("Spleen",), 2: ("Pancreas",),
                                                                           3: ("Stomach",)}), orientation="LPS")
    return write_datasets(root, ["Task09_Spleen", "KiTS", no_template], cases_per_dataset=3,
                          shape=(24, 24, 16), spacing=(16.0, 16.0, 30.0))


def test_prepare_finds_templates_and_holds_out_cases(phantom_datasets, tmp_path):
    datalist = prepare_datalist(phantom_datasets, validation_fraction=0.34, seed=1)
    assert set(datalist.templates) == {"MSD-Spleen", "KiTS", "SpleenPancreasStomach"}
    # a dataset without a template whose dataset.json names catalogue classes
    assert datalist.templates["SpleenPancreasStomach"].classes == ["Spleen", "Pancreas", "Stomach"]
    assert len(datalist.training) == 6 and len(datalist.validation) == 3
    assert {c["dataset"] for c in datalist.validation} == set(datalist.templates)
    kits = [c for c in datalist.training if c["dataset"] == "KiTS"]
    assert kits[0]["classes"] == ["Right Kidney", "Left Kidney", "Kidney Tumor", "Kidney Cyst"]
    again = Datalist.load(datalist.save(tmp_path / "list.json"))
    assert again.training == datalist.training and again.templates == datalist.templates


def test_prepare_command_and_its_errors(phantom_datasets, tmp_path, capsys):
    out = tmp_path / "list.json"
    spleen = phantom_datasets[0]
    assert main(["prepare", f"{spleen}=CHAOS", str(phantom_datasets[1]), "-o", str(out)]) == 0
    document = json.loads(out.read_text())
    assert set(document["datasets"]) == {"CHAOS", "KiTS"}
    assert "CHAOS: 2 training, 1 validation cases; annotates Liver" in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "missing"), "-o", str(tmp_path / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["prepare", f"{spleen}=NoSuchTemplate", "-o", str(tmp_path / "x.json")]) == 2
    assert "no dataset template called 'NoSuchTemplate'" in capsys.readouterr().err
    plain = tmp_path / "MyScans"  # imagesTr/ and labelsTr/ without dataset.json, under a name no template has
    shutil.copytree(spleen, plain)
    (plain / "dataset.json").unlink()
    assert main(["prepare", str(plain), "-o", str(tmp_path / "x.json")]) == 2
    assert "no template for dataset" in capsys.readouterr().err
    assert main(["prepare", f"{plain}=MSD-Spleen", "-o", str(tmp_path / "plain.json")]) == 0
    assert len(json.loads((tmp_path / "plain.json").read_text())["training"]) == 2
    assert out.is_file() and not (tmp_path / "x.json").exists()  # nothing half-written


def test_unknown_class_in_a_template_is_named():
    template = DatasetTemplate("Mine", {1: ("Appendix",)})
    with pytest.raises(Exception, match="Appendix"):
        PartialLabelTargetd(CATALOG, {"Mine": template})
