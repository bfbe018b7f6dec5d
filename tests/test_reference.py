"""The library reproduces the reference implementation's logits from released-layout files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import universal
from universal.backbones.swinunetr import ReleasedPatchMerging
from universal.backbones.unet import WindowNorm

TOLERANCE = 1e-4
# MONAI >= 1.5's order of the eight patch-merging slices, which the released weights were not trained with
NEWER_MERGE_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))


def sampled_error(model, case) -> float:
    with torch.no_grad():
        logits = model(case["input"])
    assert tuple(logits.shape) == tuple(case["output_shape"])
    sampled = logits.flatten()[case["sample_index"]]
    return (sampled - case["sample_logits"]).abs().max().item()


@pytest.fixture(scope="module", params=["unet", "swinunetr"])
def backbone_case(request, reference, synthetic_released_files):
    backbone = request.param
    case = torch.load(reference / f"case_{backbone}.pt", map_location="cpu", weights_only=True)
    return backbone, case, synthetic_released_files[backbone]


def test_released_layout_reproduces_reference_logits(backbone_case):
    backbone, case, path = backbone_case
    model = universal.load_model(path)
    assert model.backbone_name == backbone
    assert not model.training
    assert sampled_error(model, case) <= TOLERANCE


def test_newer_patch_merging_order_breaks_the_swin_match(reference, synthetic_released_files, monkeypatch):
    case = torch.load(reference / "case_swinunetr.pt", map_location="cpu", weights_only=True)
    model = universal.load_model(synthetic_released_files["swinunetr"])
    assert sampled_error(model, case) <= TOLERANCE
    monkeypatch.setattr(ReleasedPatchMerging, "offsets", NEWER_MERGE_OFFSETS)
    assert sampled_error(model, case) > 100 * TOLERANCE


def test_running_statistics_break_the_unet_match(reference, synthetic_released_files, monkeypatch):
    case = torch.load(reference / "case_unet.pt", map_location="cpu", weights_only=True)
    model = universal.load_model(synthetic_released_files["unet"])
    net = torch.load(synthetic_released_files["unet"], weights_only=True)["net"]
    for name, module in model.backbone.named_modules():
        if isinstance(module, WindowNorm):
            prefix = f"module.backbone.{name}"
            module.running_mean = net[f"{prefix}.running_mean"]
            module.running_var = net[f"{prefix}.running_var"].abs()

    def eval_batch_norm(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    monkeypatch.setattr(WindowNorm, "forward", eval_batch_norm)
    error = sampled_error(model, case)
    assert error > 100 * TOLERANCE


@pytest.mark.parametrize(
    ("backbone", "total", "in_backbone"), [("unet", 19_416_417, 19_073_600), ("swinunetr", 62_595_315, 62_186_610)]
)
def test_parameter_counts_match_the_reference(synthetic_released_files, backbone, total, in_backbone):
    model = universal.load_model(synthetic_released_files[backbone])
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.backbone.parameters()) == in_backbone


def test_released_embeddings_come_from_the_file(synthetic_released_files, released_embeddings):
    model = universal.load_model(synthetic_released_files["unet"])
    assert torch.equal(model.class_embeddings, released_embeddings)
    assert model.catalog == universal.Catalog.default()


def test_released_model_by_name_uses_the_local_override(synthetic_released_files, monkeypatch):
    monkeypatch.setenv("UNIVERSAL_SWINUNETR_WEIGHTS", str(synthetic_released_files["swinunetr"]))
    model = universal.load_model("swinunetr")
    assert model.backbone_name == "swinunetr" and model.provenance["origin"].endswith("swinunetr.pth")
