"""The server as a hostile or careless outsider tries it (authentication off): every route's path-like
and numeric parameters (tags, ids, devices, thresholds, embeddings, learning rates) answered with a
4xx that names the problem, nothing written outside the studies and model folders, no temporary
upload left behind, no model loaded for a device name, and no model published that is not finite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_server import start_server
from tiny import PHANTOM, tiny_model

import universal
from universal.io.labels import write_label_file
from universal.synth import make_phantom, save_phantom

RELEASED = "clip_driven_universal_unet.pth"
ESCAPES = ("..", "../..", "../../outside", "/tmp/universal-escape", "sub/dir", "sub\\dir", ".hidden", "a\u0000b",
           "x" * 300)


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_clip_weights):
    root = tmp_path_factory.mktemp("hostile")
    studies, model_dir, temporary = root / "studies", root / "model", root / "tmp"
    for folder in (studies, model_dir, temporary):
        folder.mkdir()
    for seed in range(2):
        save_phantom(make_phantom(seed, **PHANTOM), studies / f"case{seed}.nii.gz")
    universal.save_model(tiny_model(), model_dir / RELEASED)
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"), "TMPDIR": str(temporary),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    started = start_server(root, studies, {"model_dir": str(model_dir)}, env)
    yield started
    started.stop()


def label_upload(server, tmp_path) -> Path:
    path = tmp_path / "label.nii.gz"
    write_label_file(np.zeros(PHANTOM["shape"], np.uint8), nib.load(server.studies / "case0.nii.gz").affine, path)
    return path


def tree(folder: Path) -> dict[str, int]:
    """Every file below ``folder`` and its size, but the server's own logs and caches."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and not {"logs", "cache", "__pycache__"} & set(p.relative_to(folder).parts)}


def loads(server) -> int:
    return server.log_text().count("loading the Universal Model")


def expect(answer, status: int, detail: str, what: str) -> None:
    assert answer.status_code == status, (what, answer.status_code, answer.text[:400])
    assert detail in answer.json()["detail"], (what, answer.text[:400])


def test_path_like_parameters_are_plain_names_everywhere(server, tmp_path):
    root = server.studies.parent
    before = {name: tree(root / name) for name in ("studies", "model")}
    outside = {p for p in root.iterdir() if p.name not in ("studies", "model", "tmp", "app", "cache")}
    temporary = set((root / "tmp").iterdir())  # MONAI Label's own (its logging configuration)
    label = label_upload(server, tmp_path).read_bytes()
    image = (server.studies / "case1.nii.gz").read_bytes()
    for tag in ESCAPES:
        shown = tag[:12]
        answers = {
            "PUT /datastore/label": server.put("/datastore/label", params={"image": "case0", "tag": tag},
                                               files={"label": ("label.nii.gz", label)}),
            "GET /datastore/label": server.get("/datastore/label", params={"label": "case0", "tag": tag}),
            "GET /datastore/label/info": server.get("/datastore/label/info", params={"label": "case0", "tag": tag}),
            "PUT /datastore/label/info": server.put("/datastore/label/info", params={"label": "case0", "tag": tag},
                                                    data={"info": "{}"}),
            "DELETE /datastore/label": server.request("DELETE", "/datastore/label", params={"id": "case0", "tag": tag}),
            "POST /infer save_label": server.post("/infer/universal", params={"image": "case0", "output": "json"},
                                                  data={"params": json.dumps({"save_label": True, "label_tag": tag})}),
            "POST /batch/infer": server.post("/batch/infer/universal", json={"label_tag": tag}),
            "PUT /datastore/image": server.put("/datastore/image", params={"image": tag},
                                               files={"file": ("ct.nii.gz", image)}),
        }
        for route, answer in answers.items():
            expect(answer, 422, "not a plain name" if len(tag) < 300 else "bytes long", f"{route} {shown}")
    expect(server.put("/datastore/image", params={"image": "case1"}, files={"file": ("ct.nii.gz", image)}), 409,
           "exists already", "an image id that is taken")
    assert server.post("/infer/universal", params={"image": "x" * 5000, "output": "json"}).status_code == 404
    assert {name: tree(root / name) for name in ("studies", "model")} == before
    assert {p for p in root.iterdir() if p.name not in ("studies", "model", "tmp", "app", "cache")} == outside
    assert not Path("/tmp/universal-escape").exists() and not (root.parent / "outside").exists()
    assert set((root / "tmp").iterdir()) == temporary  # every refused upload removed


def test_devices_and_numbers_get_a_4xx_and_no_model_is_loaded_for_them(server):
    assert server.post("/infer/universal", params={"image": "case0", "output": "json"}).status_code == 200
    loaded, temporary = loads(server), set((server.studies.parent / "tmp").iterdir())

    def infer(**params):
        return server.post("/infer/universal", params={"image": "case0", "output": "json"},
                           data={"params": json.dumps(params)})

    devices = {**dict.fromkeys(("cpu:1", "cpu:2", "cpu:3"), "the CPU is one device here"),
               **dict.fromkeys(("meta", "mps", "xpu", "tpu"), "this machine has auto, cpu"),
               "cuda:7": "no CUDA GPU is available" if not torch.cuda.is_available() else "does not exist"}
    for device, detail in devices.items():
        expect(infer(device=device), 422, detail, f"device {device}")
    for name, values in {"threshold": ("nan", "inf", -1, 1.5, "1e309", "high"),
                         "overlap": ("nan", -0.1, 1, "-inf")}.items():
        for value in values:
            assert infer(**{name: value}).status_code == 422, (name, value)
    for precision in ("int4", "fp8", "\uff49\uff4e\uff54\uff18", 8, "nan", ["int8"], "x" * 300):  # "int8" in full width
        expect(infer(precision=precision), 422, "precision must be", f"precision {str(precision)[:12]}")
    expect(server.post("/batch/infer/universal", json={"precision": "int4"}), 422, "precision must be",
           "batch precision")
    expect(infer(result_dtype="float128"), 422, "result_dtype must be one of", "a dtype")
    expect(infer(result_extension="../x"), 422, "result_extension must be one of", "an extension")
    assert loads(server) == loaded  # one model, on the one CPU
    for params, detail in (({"learning_rate": "nan"}, "finite"), ({"learning_rate": -1}, "learning rate"),
                           ({"max_epochs": 0}, "epochs must be positive"), ({"device": "cpu:1"}, "one device"),
                           ({"val_split": 1.5}, "held-out share"), ({"train_batch_size": 0.5}, "whole number")):
        expect(server.post("/train/universal", json=params), 422, detail, f"training {params}")
    expect(server.post("/batch/infer/universal", json={"threshold": "nan"}), 422, "finite", "batch threshold")
    assert set((server.studies.parent / "tmp").iterdir()) <= temporary  # answers' files go after their answers


def test_classes_are_checked_before_anything_is_published(server):
    versions = len(server.get("/universal/versions").json()["versions"])
    embedding = [0.01] * 512
    bad = {
        "a NaN embedding": ('{"name": "Appendix", "embedding": [NaN' + ", 0" * 511 + "]}", "finite numbers only"),
        "an embedding past float32": (json.dumps({"name": "Appendix", "embedding": [1e39] * 512}), "finite numbers"),
        "a prompt that is a number": (json.dumps({"name": "Appendix", "prompt": 5, "embedding": embedding}),
                                      "'prompt' must be a text"),
        "synonyms that are a number": (json.dumps({"name": "Appendix", "synonyms": 7, "embedding": embedding}),
                                       "'synonyms' must be a list of names"),
        "synonyms of numbers": (json.dumps({"name": "Appendix", "synonyms": [1], "embedding": embedding}),
                                "'synonyms' must be a list of names"),
        "parents as text": (json.dumps({"name": "Appendix", "parents": "Liver", "embedding": embedding}),
                            "'parents' must be a list of names"),
        "an unknown kind": (json.dumps({"name": "Appendix", "kind": "bone", "embedding": embedding}),
                            "'kind' must be one of organ, tumour, cyst"),
        "a name of dots": (json.dumps({"name": "..", "embedding": embedding}), "has no letter or digit"),
        "a number as name": (json.dumps({"name": "2024", "embedding": embedding}), "is a number"),
        "look-alike letters": (json.dumps({"name": "Lіver", "embedding": embedding}), "mixes Cyrillic and Latin"),
    }
    for what, (body, detail) in bad.items():
        answer = server.post("/universal/classes", data=body, headers={"Content-Type": "application/json"})
        expect(answer, 422, detail, what)
    assert len(server.get("/universal/versions").json()["versions"]) == versions
    for name in ("肝臓", "胆嚢"):  # names in another script: neither taken for the other
        answer = server.post("/universal/classes", json={"name": name, "embedding": embedding})
        assert answer.status_code == 200, answer.text
    labels = server.get("/info/").json()["models"]["universal"]["labels"]
    assert {"肝臓", "胆嚢"} <= set(labels)
    answer = server.post("/infer/universal", params={"image": "case0", "output": "json"},
                         data={"params": json.dumps({"classes": "胆嚢"})})
    assert answer.status_code == 200 and answer.json()["label_names"] == {"胆嚢": 1}


def test_a_diverging_training_publishes_nothing_and_says_why(server, tmp_path):
    versions = server.get("/universal/versions").json()["versions"]
    label = label_upload(server, tmp_path)
    truth = make_phantom(1, **PHANTOM).label
    write_label_file((truth == universal.Catalog.default()["Liver"].id).astype(np.uint8),
                     nib.load(server.studies / "case1.nii.gz").affine, label)
    with label.open("rb") as stream:
        saved = server.put("/datastore/label", params={"image": "case1", "tag": "final"},
                           files={"label": ("label.nii.gz", stream)},
                           data={"params": json.dumps({"label_info": [{"name": "Liver", "idx": 1}]})})
    assert saved.status_code == 200, saved.text
    status = server.train({"max_epochs": 4, "learning_rate": 1e6, "val_split": 0, "device": "cpu"})
    stats = server.get("/info/").json()["train_stats"]["universal"]
    assert status["status"] == "ERROR" and "diverged" in stats["failed"]["reason"], (status, stats)
    assert server.get("/universal/versions").json()["versions"] == versions
    assert server.post("/infer/universal", params={"image": "case0", "output": "json"}).status_code == 200
    shutil.rmtree(tmp_path, ignore_errors=True)
