"""Network behaviour on small, randomly initialised models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from universal import Catalog, UniversalError, UniversalModel
from universal.nets.heads import HEAD_CHANNELS, run_heads

SMALL_WIDTHS = {"unet": 8, "swinunetr": 12}


def small_model(backbone: str, seed: int = 0) -> UniversalModel:
    torch.manual_seed(seed)
    model = UniversalModel(backbone, width=SMALL_WIDTHS[backbone], class_embeddings=torch.randn(32, 512))
    return model.eval()


@pytest.fixture(scope="module")
def unet_case():
    """A small U-Net, two 32³ windows and its full output.

    The heads do not depend on the backbone: class-set properties are checked on the cheaper one (the
    full-size Swin UNETR's output is checked against the reference in test_reference).
    """
    model = small_model("unet")
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x)


def test_output_shape(unet_case):
    _, x, full = unet_case
    assert full.shape == (len(x), 32, *x.shape[2:])


def test_class_subset_equals_slice(unet_case):
    model, x, full = unet_case
    with torch.no_grad():
        subset = model(x, classes=["liver", 2, "Kidney Tumor"])
    torch.testing.assert_close(subset, full[:, [5, 1, 25]], rtol=0, atol=1e-6)


def test_batch_equals_single_windows(unet_case):
    model, x, full = unet_case
    with torch.no_grad():
        singles = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(full, singles, rtol=0, atol=1e-5)


def test_add_class_leaves_existing_outputs_bit_identical(unet_case):
    model, x, before = unet_case
    grown = UniversalModel(model.backbone_name, width=model.width, class_embeddings=model.class_embeddings)
    grown.load_state_dict(model.state_dict())
    grown.eval()
    info = grown.add_class("Appendix", embedding=torch.randn(512))
    assert info.id == 33 and grown.num_classes == 33
    with torch.no_grad():
        after = grown(x)
    assert after.shape[1] == 33
    assert torch.equal(after[:, :32], before)
    assert not torch.equal(after[:, 32], after[:, 31])


def test_generated_heads_match_grouped_convolutions():
    """run_heads equals one grouped 1×1×1 convolution stack per sample (the reference's formulation)."""
    generator = torch.Generator().manual_seed(0)
    batch, classes = 2, 5
    features = torch.randn(batch, HEAD_CHANNELS, 4, 5, 6, generator=generator)
    params = torch.randn(batch, classes, 153, generator=generator)
    expected = []
    for b in range(batch):
        w1, w2, w3, b1, b2, b3 = params[b].split([64, 64, 8, 8, 8, 1], dim=-1)
        x = features[b : b + 1].repeat(1, classes, 1, 1, 1)
        x = F.relu(F.conv3d(x, w1.reshape(classes * 8, 8, 1, 1, 1), b1.flatten(), groups=classes))
        x = F.relu(F.conv3d(x, w2.reshape(classes * 8, 8, 1, 1, 1), b2.flatten(), groups=classes))
        expected.append(F.conv3d(x, w3.reshape(classes, 8, 1, 1, 1), b3.flatten(), groups=classes))
    expected = torch.cat(expected)
    torch.testing.assert_close(run_heads(features, params), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run_heads(features, params, chunk_voxels=7), expected, rtol=1e-5, atol=1e-5)


def test_window_normalisation_ignores_training_mode():
    model = small_model("unet")
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        evaluated = model(x)
        model.train()
        trained = model(x)
    torch.testing.assert_close(evaluated, trained)


def test_rejects_embeddings_that_do_not_fit_the_catalogue():
    with pytest.raises(ValueError, match=r"class_embeddings must be \(32, 512\)"):
        UniversalModel("unet", width=8, class_embeddings=torch.zeros(31, 512))
    with pytest.raises(UniversalError, match="unknown backbone 'vnet'; choose one of unet, swinunetr"):
        UniversalModel("vnet")


def test_custom_catalogue_names_the_outputs():
    catalog = Catalog.default().add("Appendix")
    model = UniversalModel("unet", width=8, catalog=catalog, class_embeddings=torch.randn(33, 512)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 16, 16, 16), classes=["appendix"])
    assert out.shape == (1, 1, 16, 16, 16)


@pytest.mark.parametrize(
    ("backbone", "shape", "message"),
    [
        ("unet", (1, 1, 16, 16, 20), r"U-Net windows must be multiples of 8 and at least 16 .* got \(16, 16, 20\)"),
        ("unet", (1, 1, 8, 8, 8), "at least 16"),
        ("swinunetr", (1, 1, 32, 32, 32), "Swin UNETR windows must be multiples of 32 and at least 64"),
        ("unet", (1, 2, 16, 16, 16), r"input must be \(B, 1, D, H, W\)"),
    ],
)
def test_rejects_windows_the_backbone_cannot_take(backbone, shape, message):
    with pytest.raises(ValueError, match=message):
        small_model(backbone)(torch.zeros(shape))
