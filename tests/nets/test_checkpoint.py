"""Own-format round trips and the error messages of bad checkpoints (small random models)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import universal
from universal import CheckpointError, UniversalModel


@pytest.fixture(scope="module")
def model() -> UniversalModel:
    torch.manual_seed(0)
    return UniversalModel("unet", width=8, class_embeddings=torch.randn(32, 512)).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_own_format_round_trip(model, x, tmp_path):
    path = universal.save_model(model, tmp_path / "model.pt", provenance={"note": "test"})
    loaded = universal.load_model(path)
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert loaded.catalog == model.catalog
    assert loaded.input_spec == model.input_spec
    assert loaded.width == 8 and loaded.backbone_name == "unet"
    assert loaded.provenance["note"] == "test"
    assert loaded.source_format == "U-Net universal-model"
    content = torch.load(path, weights_only=True)
    assert content["format"] == "universal-model"
    assert content["classes"][7]["prompt"] == "A computerized tomography of a Arota"
    assert content["input"] == {
        "orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "intensity_range": [-175.0, 250.0],
        "window_size": [96, 96, 96],
    }


def test_added_class_survives_save_and_load(model, x, tmp_path):
    grown = universal.load_model(model.state_dict())
    grown.add_class("Appendix", embedding=torch.randn(512), synonyms=["vermiform appendix"])
    loaded = universal.load_model(universal.save_model(grown, tmp_path / "grown.pt"))
    assert loaded.catalog["vermiform appendix"].id == 33
    assert torch.equal(outputs(loaded, x), outputs(grown, x))
    assert torch.equal(outputs(loaded, x)[:, :32], outputs(model, x))


def test_swin_own_format_round_trip(tmp_path):
    torch.manual_seed(0)
    swin = UniversalModel("swinunetr", width=12, class_embeddings=torch.randn(32, 512)).eval()
    loaded = universal.load_model(universal.save_model(swin, tmp_path / "swin.pt"))
    assert loaded.backbone_name == "swinunetr" and loaded.width == 12
    expected, actual = swin.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_plain_state_dicts_with_and_without_module_prefix(model, x):
    state = model.state_dict()
    for candidate in (state, {f"module.{k}": v for k, v in state.items()}, {"state_dict": state}):
        assert torch.equal(outputs(universal.load_model(candidate), x), outputs(model, x))


def test_save_is_atomic(model, tmp_path, monkeypatch):
    path = universal.save_model(model, tmp_path / "model.pt")
    before = path.read_bytes()

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        universal.save_model(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        universal.load_model(tmp_path / "absent.pth")


def test_released_name_offline_says_where_the_file_goes():
    pattern = (r"released U-Net weights \(clip_driven_universal_unet.pth\) not found at \S+/weights/"
               r"clip_driven_universal_unet.pth and downloads are off \(UNIVERSAL_OFFLINE\); download "
               r"https://huggingface.co/\S+ to \S+ or set UNIVERSAL_UNET_WEIGHTS=PATH")
    with pytest.raises(universal.WeightsUnavailableError, match=pattern):
        universal.load_model("unet")


def test_truncated_file(model, tmp_path):
    path = universal.save_model(model, tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        universal.load_model(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not weights")
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        universal.load_model(path)


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(CheckpointError, match=r"not a Universal Model checkpoint.*neither U-Net.*conv1\.weight"):
        universal.load_model(path)
    torch.save({"epoch": 3, "optimizer": {}}, path)
    with pytest.raises(CheckpointError, match=r"no 'net' or 'state_dict' entry.*epoch, optimizer"):
        universal.load_model(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"net": {}, "args": argparse.Namespace(backbone="unet")}, path)
    with pytest.raises(CheckpointError, match=r"Python objects other than weights \(argparse.Namespace\)"):
        universal.load_model(path)


def test_a_training_checkpoint_with_optimiser_state_and_numpy_numbers_loads(model, x, tmp_path, caplog):
    """The reference's train.py saves {'net', 'optimizer', 'scheduler', 'epoch'}: plain containers,
    which weights_only reads; numpy scalars are read through the allow-list, and the log says so."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    model(x).mean().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    net = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "epoch_100.pth"
    torch.save({"net": net, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": 100},
               path)
    assert torch.equal(outputs(universal.load_model(path), x), outputs(model, x))
    torch.save({"net": net, "epoch": np.int64(100), "lr": np.float64(1e-4)}, path)
    with caplog.at_level("INFO", logger="universal.nets.checkpoint"):
        assert torch.equal(outputs(universal.load_model(path), x), outputs(model, x))
    assert "numpy numbers besides tensors (numpy.core.multiarray.scalar, numpy.dtype)" in caplog.text
    model.zero_grad()


def test_missing_and_unexpected_keys_are_named(model):
    state = dict(model.state_dict())
    del state["controller.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing \(controller\.bias\); 1 unexpected \(extra\.weight\)"):
        universal.load_model(state)


def test_wrong_shapes_are_named(model):
    state = dict(model.state_dict())
    state["text_to_vision.weight"] = torch.zeros(256, 100)
    with pytest.raises(CheckpointError, match=r"wrong shape \(text_to_vision\.weight \(file \(256, 100\)"):
        universal.load_model(state)


def test_requested_backbone_must_match(model):
    with pytest.raises(CheckpointError, match="holds a U-Net model, not Swin UNETR"):
        universal.load_model(model.state_dict(), backbone="swinunetr")


def test_non_finite_weights_are_refused(model):
    state = dict(model.state_dict())
    state["controller.bias"] = torch.full((153,), float("nan"))
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights in controller\.bias"):
        universal.load_model(state)


def test_extra_classes_need_a_catalogue(model):
    state = dict(model.state_dict())
    state["class_embeddings"] = torch.randn(33, 512)
    with pytest.raises(CheckpointError, match=r"holds 33 classes.*pass catalog="):
        universal.load_model(state)
    catalog = universal.Catalog.default().add("Appendix")
    assert universal.load_model(state, catalog=catalog).catalog["appendix"].id == 33
