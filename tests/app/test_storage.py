"""The server on storage that fails it: a model folder it may only read, a current model that is
damaged, a studies disk that is full. It starts, serves the newest whole model and says so, refuses
what it cannot do with a reason (409, 507), and loses nothing."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
from app_server import start_server
from conftest import mounted
from tiny import PHANTOM, tiny_model

import universal
from universal.io.labels import read_label_map, write_label_file
from universal.serving.model_store import ModelStore
from universal.synth import make_phantom, save_phantom


def test_read_only_models_a_damaged_current_model_and_a_full_studies_disk(tmp_path, random_clip_weights):
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver", "Spleen"]), "first")
    store.publish(tiny_model(["Liver", "Spleen", "Stomach"]), "second")
    store.current_path.unlink()
    store.current_path.write_bytes(store.version_path(2).read_bytes()[:4096])  # truncated in place
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(tmp_path / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    with mounted(tmp_path / "studies", "tmpfs", "size=2m") as studies, mounted(store.folder, "bind", "ro"):
        save_phantom(make_phantom(0, **PHANTOM), studies / "case0.nii.gz")
        server = start_server(tmp_path, studies, {"model_dir": str(store.folder)}, env)
        try:
            described = server.get("/info/").json()["universal"]
            assert described["ready"] and described["version"] == 2, described
            assert "the current model cannot be used" in described["warning"]
            assert "serving kept version 2" in described["warning"]
            answer = server.post("/infer/universal", params={"image": "case0", "output": "json"})
            assert answer.status_code == 200 and answer.json()["model"]["version"] == 2, answer.text
            assert "serving kept version 2" in answer.json()["model"]["warning"]

            added = server.post("/universal/classes", json={"name": "Appendix", "embedding": [0.1] * 512})
            assert added.status_code == 409 and "is read-only" in added.json()["detail"], added.text
            trained = server.post("/train/universal", json={"max_epochs": 1})
            assert trained.status_code == 409 and "cannot train" in trained.json()["detail"], trained.text

            affine = nib.load(studies / "case0.nii.gz").affine
            truth = make_phantom(0, **PHANTOM).label
            first = (truth == universal.Catalog.default()["Liver"].id).astype(np.uint8)
            upload = tmp_path / "label.nii.gz"
            write_label_file(first, affine, upload)
            assert save(server, upload).status_code == 200
            filler = studies / "filler"
            with filler.open("wb") as stream:  # the studies disk full
                stream.write(bytes(shutil.disk_usage(studies).free))
            noisy = np.random.default_rng(0).integers(0, 2, first.shape).astype(np.uint8)  # compresses badly
            write_label_file(noisy, affine, upload)
            answer = save(server, upload)
            assert answer.status_code == 507 and "the disk is full" in answer.json()["detail"], answer.text
            kept, _ = read_label_map(studies / "labels" / "final" / "case0.nii.gz")
            assert np.array_equal(kept, first)  # the saved label is whole
        finally:
            server.stop()
    assert store.current_path.stat().st_size == 4096  # a read-only folder was left as it was


def save(server, upload):
    with upload.open("rb") as stream:
        return server.put("/datastore/label", params={"image": "case0", "tag": "final"},
                          files={"label": ("label.nii.gz", stream)},
                          data={"params": json.dumps({"label_info": [{"name": "Liver", "idx": 1}]})})
