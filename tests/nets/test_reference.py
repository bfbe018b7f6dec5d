"""The library reproduces the reference implementation's logits from released-layout files."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.swin_unetr import PatchMerging

import universal
from universal.nets.swinunetr import ReleasedPatchMerging

TOLERANCE = 1e-4
# MONAI >= 1.5's order of the eight patch-merging slices, which the released weights were not trained with
NEWER_MERGE_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))


def sampled_error(model, case) -> float:
    with torch.no_grad():
        logits = model(case["input"])
    assert tuple(logits.shape) == tuple(case["output_shape"])
    sampled = logits.flatten()[case["sample_index"]]
    return (sampled - case["sample_logits"]).abs().max().item()


@pytest.fixture(scope="module")
def released_models(synthetic_released_files):
    """Each full-size model loaded once from its released-layout file."""
    return {backbone: universal.load_model(path) for backbone, path in synthetic_released_files.items()}


@pytest.mark.parametrize("backbone", ["unet", "swinunetr"])
def test_released_layout_reproduces_reference_logits(backbone, reference, released_models):
    case = torch.load(reference / f"case_{backbone}.pt", map_location="cpu", weights_only=True)
    model = released_models[backbone]
    assert model.backbone_name == backbone
    assert not model.training
    assert sampled_error(model, case) <= TOLERANCE


def test_patch_merging_keeps_the_released_slice_order():
    """The released order is MONAI 1.4's legacy PatchMerging; MONAI 1.5's order gives other features."""
    torch.manual_seed(0)
    released = ReleasedPatchMerging(dim=6)
    monai_14 = PatchMerging(dim=6)
    monai_14.load_state_dict(released.state_dict())
    x = torch.randn(1, 4, 6, 4, 6)
    torch.testing.assert_close(released(x), monai_14(x), rtol=0, atol=0)
    newer = ReleasedPatchMerging(dim=6)
    newer.load_state_dict(released.state_dict())
    newer.offsets = NEWER_MERGE_OFFSETS
    assert (newer(x) - released(x)).abs().max() > 0.1


@pytest.mark.parametrize(
    ("backbone", "total", "in_backbone"), [("unet", 19_416_417, 19_073_600), ("swinunetr", 62_595_315, 62_186_610)]
)
def test_parameter_counts_match_the_reference(released_models, backbone, total, in_backbone):
    model = released_models[backbone]
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.backbone.parameters()) == in_backbone


def test_released_embeddings_come_from_the_file(released_models, released_embeddings):
    model = released_models["unet"]
    assert torch.equal(model.class_embeddings, released_embeddings)
    assert model.catalog == universal.Catalog.default()


def test_released_model_by_name_uses_the_local_override(synthetic_released_files, monkeypatch):
    monkeypatch.setenv("UNIVERSAL_UNET_WEIGHTS", str(synthetic_released_files["unet"]))
    model = universal.load_model("unet")
    assert model.backbone_name == "unet" and model.provenance["origin"].endswith("unet.pth")
