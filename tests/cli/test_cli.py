from __future__ import annotations

import json
from importlib.metadata import entry_points

import nibabel as nib
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
        (["phantom", "ct.mha"], "NIfTI files end in .nii or .nii.gz; got ct.mha"),
        (["phantom", "ct.nii", "--shape", "0", "8", "8"], "shape must be positive in every axis"),
        (["phantom", "out", "--datasets", "--lesions"], "--label and --lesions describe one phantom"),
        (["segment", "absent.nii.gz", "-o", "out", "--workers", "2"], "--workers sets the network workers of --ray"),
        (["segment", "empty.txt", "-o", "out", "--model", "CKPT"], "empty.txt: the list names no scans"),
    ],
)
def test_errors_are_one_line(small_checkpoint, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("# no scans yet\n")
    argv = [str(small_checkpoint) if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_phantom_writes_ct_and_label(tmp_path, capsys):
    ct, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    argv = ["phantom", str(ct), "--label", str(label), "--seed", "3", "--shape", "48", "48", "32",
            "--spacing", "8", "8", "10", "--orientation", "lps", "--lesions"]
    assert main(argv) == 0
    assert "Liver" in capsys.readouterr().out
    image, labels = nib.load(ct), nib.load(label)
    assert image.shape == labels.shape == (48, 48, 32)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert np.allclose(np.abs(np.diag(image.affine))[:3], (8, 8, 10))
    assert universal.Catalog.default()["liver tumor"].id in np.unique(np.asarray(labels.dataobj))


def test_phantom_dataset_mode(tmp_path, capsys):
    argv = ["phantom", str(tmp_path), "--datasets", "--dataset", "KiTS", "--dataset", "Task09_Spleen",
            "--cases", "1", "--shape", "32", "32", "24", "--spacing", "12", "12", "14"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["KiTS", "Task09_Spleen"]
    document = json.loads((tmp_path / "KiTS" / "dataset.json").read_text())
    assert document["labels"] == {"0": "background", "1": "Right Kidney and Left Kidney", "2": "Kidney Tumor",
                                  "3": "Kidney Cyst"}
    assert (tmp_path / "KiTS" / document["training"][0]["label"]).exists()


def test_console_script_is_registered():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["universal"] == "universal.cli:main"


def test_defaults_come_from_the_library():
    """One default backbone everywhere; the options' defaults are the settings dataclasses' defaults."""
    import inspect

    from universal.cli import build_parser
    from universal.inference import InferenceSettings
    from universal.nets.registry import DEFAULT_BACKBONE
    from universal.training import TrainSettings, train

    parser = build_parser()
    segment = parser.parse_args(["segment", "ct.nii.gz", "-o", "out"])
    fit = parser.parse_args(["train", "datalist.json", "-o", "run"])
    assert segment.model == fit.backbone == DEFAULT_BACKBONE
    assert inspect.signature(universal.segment).parameters["model"].default == DEFAULT_BACKBONE
    assert inspect.signature(train).parameters["backbone"].default == DEFAULT_BACKBONE
    assert universal.UniversalModel().backbone_name == DEFAULT_BACKBONE
    infer, settings = InferenceSettings(), TrainSettings()
    for field in ("overlap", "batch_size", "device", "precision", "compile", "runtime", "threshold", "postprocess"):
        assert getattr(segment, field) == getattr(infer, field), field
    for field in ("steps", "batch_size", "accumulate", "learning_rate", "warmup_steps", "precision", "device", "seed",
                  "checkpoint_every", "validate_every", "max_grad_norm", "freeze_base", "distill"):
        assert getattr(fit, field) == getattr(settings, field), field
