"""Shared fixtures. Reference data is read from ../shared/reference beside the repository."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def missing_in_ci(what: str) -> None:
    """Skip a test that needs ``what`` with the reason; in CI, where it must be there, fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} missing in CI")
    pytest.skip(f"needs {what}")


def require_reference() -> Path:
    """The reference folder; skipped with a reason when absent, except in CI where it must exist."""
    if not REFERENCE.is_dir():
        missing_in_ci(f"the reference data at {REFERENCE} (not part of a user's clone)")
    return REFERENCE


@pytest.fixture(scope="session")
def reference() -> Path:
    return require_reference()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test downloads anything or touches the user's cache."""
    monkeypatch.setenv("UNIVERSAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("UNIVERSAL_OFFLINE", "1")
    variables = ("UNIVERSAL_CLIP_WEIGHTS", "UNIVERSAL_TEXT_EMBEDDINGS", "UNIVERSAL_UNET_WEIGHTS",
                 "UNIVERSAL_SWINUNETR_WEIGHTS")
    for variable in variables:
        monkeypatch.delenv(variable, raising=False)


def load_synthetic_weights_module(reference: Path):
    spec = importlib.util.spec_from_file_location("synthetic_weights", reference / "synthetic_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def released_layout(state: dict[str, torch.Tensor], backbone: str) -> dict:
    """A state dict in reference naming, wrapped the way the released files are."""
    net = {}
    for key, value in state.items():
        if backbone == "swinunetr" and key.startswith("backbone."):
            key = key[len("backbone."):]  # the released Swin file names backbone keys without it
        net[f"module.{key}"] = value
    return {"net": net}


@pytest.fixture(scope="session")
def released_embeddings(reference) -> torch.Tensor:
    return torch.load(reference / "txt_encoding.pth", map_location="cpu", weights_only=True).float()


@pytest.fixture(scope="session")
def synthetic_released_files(reference, released_embeddings, tmp_path_factory) -> dict[str, Path]:
    """Full-size checkpoints in the released layouts, holding each reference case's synthetic weights."""
    synthetic = load_synthetic_weights_module(reference)
    folder = tmp_path_factory.mktemp("released")
    files = {}
    for backbone in ("unet", "swinunetr"):
        case = torch.load(reference / f"case_{backbone}.pt", map_location="cpu", weights_only=True)
        manifest = synthetic.read_manifest(reference / f"checkpoint_keys_{backbone}.tsv")
        state = synthetic.synthetic_state_dict(manifest, seed=case["seed"])
        state["organ_embedding"] = released_embeddings.clone()
        files[backbone] = folder / f"{backbone}.pth"
        torch.save(released_layout(state, backbone), files[backbone])
    return files


@pytest.fixture(scope="session")
def random_clip_weights(tmp_path_factory) -> Path:
    """A randomly initialised CLIP saved as a state dict (no CLIP weights can be downloaded).

    It has ViT-B/32's text interface (77-token context, 49,408-token vocabulary, 512-d output) with
    one-layer, 64-wide towers: open_clip builds the network from the file's shapes, so the library
    loads it exactly as it loads OpenAI's ViT-B-32.pt, at a small fraction of the cost.
    """
    model_module = pytest.importorskip("open_clip.model")
    torch.manual_seed(0)
    model = model_module.CLIP(
        embed_dim=512,
        vision_cfg=model_module.CLIPVisionCfg(layers=1, width=64, patch_size=32, image_size=64),
        text_cfg=model_module.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    path = tmp_path_factory.mktemp("clip") / "random-clip.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def learning_datasets(tmp_path_factory):
    """The learning recipe's partially labelled phantom datasets (tests/partial_labels.py)."""
    from partial_labels import CASES_PER_DATASET, PHANTOM, write_partial_datasets

    return write_partial_datasets(tmp_path_factory.mktemp("learning-datasets"), CASES_PER_DATASET, **PHANTOM)


@pytest.fixture(scope="session")
def learned(learning_datasets, reference, tmp_path_factory) -> Path:
    """The run folder of the learning recipe's model (seed 0, two threads; about seven minutes on two
    cores), trained once for every test that needs a model whose classes fill their own regions."""
    from partial_labels import train_base

    return train_base(learning_datasets, tmp_path_factory.mktemp("learned"), reference / "txt_encoding.pth")


@contextlib.contextmanager
def mounted(folder: Path, *options: str):
    """``folder`` as a mount of its own for the block: ``("tmpfs", "size=64k")`` for a small disk,
    ``("bind", "ro")`` for a read-only view of it. Needs root (as CI runs); skipped elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    kind, *flags = options
    command = (["mount", "-t", "tmpfs", "-o", ",".join(flags), "tmpfs", str(folder)] if kind == "tmpfs"
               else ["mount", "--bind", "-o", ",".join(["bind", *flags]), str(folder), str(folder)])
    if os.geteuid() != 0 or subprocess.run(command, capture_output=True).returncode != 0:
        missing_in_ci(f"permission to mount ({' '.join(command)})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
