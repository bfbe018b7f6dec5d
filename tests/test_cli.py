from __future__ import annotations

import json
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch

import universal
from universal.cli import main


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = universal.UniversalModel("unet", width=8, class_embeddings=torch.randn(32, 512))
    return universal.save_model(model, tmp_path_factory.mktemp("ckpt") / "small.pt")


def test_info_on_released_layout(synthetic_released_files, capsys):
    assert main(["info", str(synthetic_released_files["swinunetr"])]) == 0
    out = capsys.readouterr().out
    assert "Swin UNETR (width 48)" in out
    assert "62,595,315 (backbone 62,186,610)" in out
    assert "Swin UNETR released layout ('net')" in out
    assert "Celiac Trunk" in out and "A computerized tomography of a Celiac Truck" in out


def test_info_json(small_checkpoint, capsys):
    assert main(["info", str(small_checkpoint), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["backbone"] == "unet" and document["width"] == 8
    assert len(document["classes"]) == 32 and document["classes"][8]["synonyms"][1] == "IVC"


def test_classes_lists_the_catalogue(capsys):
    assert main(["classes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 33 and lines[8].split()[:2] == ["8", "Aorta"]


def test_add_class_with_embedding_file(small_checkpoint, tmp_path, capsys):
    embedding = tmp_path / "appendix.npy"
    np.save(embedding, np.arange(512, dtype=np.float32))
    out = tmp_path / "grown.pt"
    code = main(["add-class", str(small_checkpoint), "Appendix", "--embedding", str(embedding), "-o", str(out),
                 "--synonym", "vermiform appendix"])
    assert code == 0
    assert "added class 33 'Appendix'" in capsys.readouterr().out
    model = universal.load_model(out)
    assert model.catalog["vermiform appendix"].id == 33
    assert torch.equal(model.class_embeddings[32], torch.arange(512, dtype=torch.float32))
    assert model.provenance["added_class"] == "Appendix"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "absent.pth"], "checkpoint absent.pth does not exist"),
        (["add-class", "CKPT", "Liver", "-o", "x.pt", "--embedding", "e.npy"], "cannot read embedding e.npy"),
        (["add-class", "CKPT", "Appendix", "-o", "x.pt"], "CLIP ViT-B/32 weights (OpenAI) not found"),
    ],
)
def test_errors_are_one_line(small_checkpoint, argv, message, capsys):
    argv = [str(small_checkpoint) if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_console_script_is_registered():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["universal"] == "universal.cli:main"
