"""The MONAI Label app, end to end: the real server (``monailabel start_server``) on 127.0.0.1 with a
datastore of small phantoms, driven with ``MONAILabelClient`` and plain HTTP as 3D Slicer and OHIF
drive it. The server starts once for the module, offline and without weights; a small synthetic
model (width-4 U-Net at 12 mm, 16³ windows) is then placed in its model folder, as the README says
to do offline. Tests run in file order and share the server: labels saved by one are used by the
training test.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_server import start_server

import universal
from universal.catalog import Catalog
from universal.errors import WeightsUnavailableError
from universal.io.labels import read_label_map, write_label_file
from universal.serving.annotations import annotation_datalist, read_annotation
from universal.serving.gate import regression_gate
from universal.serving.model_store import ModelStore
from universal.synth import make_phantom, save_phantom
from universal.training.loop import catalog_for

PHANTOM = {"shape": (40, 40, 30), "spacing": (10.24, 10.24, 16.0)}
CLASSES = ["Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney", "Liver Tumor"]
RELEASED = "clip_driven_universal_unet.pth"
TRAIN_TIMEOUT_S = 240


def tiny_model() -> universal.UniversalModel:
    """A width-4 U-Net at 12 mm with 16³ windows for :data:`CLASSES` (random weights and embeddings)."""
    torch.manual_seed(0)
    catalog = catalog_for(CLASSES)
    spec = universal.InputSpec(spacing=(12.0,) * 3, window_size=(16, 16, 16))
    return universal.UniversalModel("unet", width=4, catalog=catalog, class_embeddings=torch.randn(len(catalog), 512),
                                    input_spec=spec)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    studies = root / "studies"
    studies.mkdir()
    for seed in range(4):
        save_phantom(make_phantom(seed, lesions=seed == 3, **PHANTOM), studies / f"case{seed}.nii.gz",
                     root / f"truth{seed}.nii.gz")
    universal.save_model(tiny_model(), root / "tiny.pt")
    return root


@pytest.fixture(scope="module")
def server(workspace, random_clip_weights):
    """The server, started offline with an empty model folder and no --conf weights."""
    cache = workspace / "cache"
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(cache),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    for variable in ("UNIVERSAL_UNET_WEIGHTS", "UNIVERSAL_SWINUNETR_WEIGHTS", "UNIVERSAL_TEXT_EMBEDDINGS"):
        env[variable] = ""
    started = start_server(workspace, workspace / "studies", {}, env)
    yield started
    started.stop()
    assert started.process.poll() is not None


@pytest.fixture(scope="module")
def ready(server, workspace):
    """The server after the small model was placed where the released weights go offline."""
    target = server.app_dir / "model" / RELEASED
    if not target.exists():
        shutil.copy(workspace / "tiny.pt", target)
    assert server.get("/info/").json()["universal"]["ready"]
    return server


@pytest.fixture(scope="module")
def client(ready):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(ready.url, tmpdir=str(ready.app_dir.parent / "client"))


def slicer_label(workspace, seed: int, names) -> tuple[np.ndarray, list[dict]]:
    """The phantom's truth for ``names`` as 3D Slicer exports it: values follow segment order."""
    truth = np.asarray(nib.load(workspace / f"truth{seed}.nii.gz").dataobj)
    released = Catalog.default()
    label = np.zeros(truth.shape, np.uint8)
    info = []
    for value, name in enumerate(names, start=1):
        label[truth == released[name].id] = value
        info.append({"name": name, "idx": value})
    return label, info


def save_final_label(server, workspace, seed: int, names, label_info=None, *, label=None, suffix=".nrrd"):
    if label is None:
        label, label_info = slicer_label(workspace, seed, names)
    path = workspace / f"upload{seed}{suffix}"
    write_label_file(label, nib.load(server.studies / f"case{seed}.nii.gz").affine, path)
    with path.open("rb") as stream:
        return server.put("/datastore/label", params={"image": f"case{seed}", "tag": "final"},
                          files={"label": (path.name, stream)},
                          data={"params": json.dumps({"label_info": label_info})})


# -- start without weights ------------------------------------------------------------------------


def test_without_weights_the_server_starts_not_ready_and_says_where_the_file_goes(server):
    info = server.get("/info/").json()
    assert info["universal"]["ready"] is False
    assert info["models"]["universal"]["ready"] is False
    assert RELEASED in info["universal"]["status"]
    log_lines = [line for line in server.log_text().splitlines() if f"put {RELEASED} into" in line]
    assert len(log_lines) == 1 and str(server.app_dir / "model") in log_lines[0]
    answer = server.post("/infer/universal", params={"image": "case0"})
    assert answer.status_code == 503 and RELEASED in answer.json()["detail"]  # never random weights
    assert not (server.app_dir / "model" / "universal.pt").exists()


# -- info and inference ---------------------------------------------------------------------------


def test_info_lists_labels_names_and_ids(client):
    info = client.info()
    labels = info["models"]["universal"]["labels"]
    assert labels == {name: i for i, name in enumerate(CLASSES, start=1)}
    assert info["labels"] == CLASSES
    assert info["models"]["universal"]["type"] == "segmentation"
    assert {"classes", "threshold", "overlap", "postprocess", "device"} <= set(info["models"]["universal"]["config"])
    assert set(info["strategies"]) == {"uncertainty", "lesion", "random", "first"}
    assert "universal" in info["trainers"] and "uncertainty" in info["scoring"]


def test_infer_returns_a_label_map_on_the_images_grid(client, ready):
    image = nib.load(ready.studies / "case0.nii.gz")
    result_file, params = client.infer("universal", "case0", {})
    result = nib.load(result_file)
    assert result.shape == image.shape and np.allclose(result.affine, image.affine, atol=1e-4)
    assert params["label_names"] == {name: i for i, name in enumerate(CLASSES, start=1)}
    assert set(np.unique(np.asarray(result.dataobj)).astype(int)) <= {0, *params["label_names"].values()}
    assert set(params["report"]["classes"]) == set(CLASSES) and "Liver Tumor" in params["report"]["lesions"]
    assert params["report"]["input"]["shape"] == list(image.shape)

    # as 3D Slicer asks: NRRD, uint8
    result_file, params = client.infer("universal", "case1", {"result_extension": ".nrrd", "result_dtype": "uint8"})
    label, affine = read_label_map(result_file)
    case1 = nib.load(ready.studies / "case1.nii.gz")
    assert result_file.endswith(".nrrd") and label.shape == case1.shape
    assert np.allclose(affine, case1.affine, atol=1e-4)


def test_a_subset_of_classes_comes_back_numbered_1_to_k(client):
    _, params = client.infer("universal", "case0", {"classes": ["Stomach", "spleen"], "threshold": 0.3,
                                                     "overlap": 0.25, "postprocess": "false", "device": "cpu"})
    assert params["label_names"] == {"Spleen": 1, "Stomach": 2}  # catalogue order, contiguous values
    assert set(params["report"]["classes"]) == {"Spleen", "Stomach"}
    settings = params["report"]["settings"]
    assert (settings["threshold"], settings["overlap"], settings["postprocess"]) == (0.3, 0.25, False)
    _, by_id = client.infer("universal", "case0", {"classes": "3,2"})  # OHIF-style ids, one string
    assert by_id["label_names"] == {"Spleen": 1, "Stomach": 2}


# -- bad requests ---------------------------------------------------------------------------------


def test_bad_requests_get_a_4xx_naming_the_problem_and_nothing_is_lost(ready, workspace):
    before = ready.get("/datastore/", params={"output": "all"}).json()

    def infer(image="case0", params=None, raw=None):
        return ready.post("/infer/universal", params={"image": image, "output": "json"},
                          data={"params": raw if raw is not None else json.dumps(params or {})})

    cases = [
        (infer(params={"classes": ["Livr"]}), 422, "unknown class 'Livr'; closest: Liver"),
        (infer(image="no_such_case"), 404, "no image 'no_such_case'"),
        (infer(raw="{threshold: 0.5"), 400, "not valid JSON"),
        (infer(params={"threshold": "high"}), 422, "threshold must be a number"),
        (infer(params={"overlap": 1.5}), 422, "overlap must be a number from 0 to 0.99"),
        (infer(params={"device": "tpu"}), 422, "unknown device"),
        (infer(params={"result_extension": ".png"}), 422, "result_extension must be one of"),
        (ready.post("/infer/nnunet", params={"image": "case0"}), 404, "this app serves 'universal'"),
        (ready.post("/activelearning/entropy", json={}), 404, "no active learning strategy 'entropy'"),
        (ready.post("/universal/classes", json={"prompt": "A computerized tomography of a thing"}), 422, "'name'"),
        (ready.post("/universal/classes", json={"name": "liver"}), 409, "already exists"),
        (ready.post("/universal/classes", json={"name": "Thing", "embedding": [1, 2]}), 422, "512 numbers"),
    ]
    corrupt = workspace / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not a volume")
    with corrupt.open("rb") as stream:
        cases.append((ready.put("/datastore/label", params={"image": "case0", "tag": "final"},
                                files={"label": ("corrupt.nii.gz", stream)}), 422, "not a readable label map"))
    with corrupt.open("rb") as stream:
        cases.append((ready.put("/datastore/image", params={"image": "junk"}, files={"file": ("junk.nii.gz", stream)}),
                      422, "image 'junk' was not added"))
    wrong_grid = np.zeros((10, 10, 10), np.uint8)
    cases.append((save_final_label(ready, workspace, 0, [], [], label=wrong_grid), 422, "does not lie on the grid"))
    label, _ = slicer_label(workspace, 0, ["Liver", "Spleen"])
    cases.append((save_final_label(ready, workspace, 0, [], [{"name": "Liver", "idx": 1}], label=label), 422,
                  "label values [2] have no entry in label_info"))
    cases.append((save_final_label(ready, workspace, 0, [], None, label=(label * 50).astype(np.uint8)), 422,
                  "are not class ids"))
    with corrupt.open("rb") as stream:
        cases.append((ready.put("/datastore/label", params={"image": "case9", "tag": "final"},
                                files={"label": ("x.nii.gz", stream)}), 404, "no image 'case9'"))
    for answer, status, message in cases:
        assert answer.status_code == status, (answer.status_code, answer.text)
        assert message in answer.json()["detail"], answer.text

    after = ready.get("/datastore/", params={"output": "all"}).json()
    assert after["objects"].keys() == before["objects"].keys()
    assert all(after["objects"][k]["labels"] == before["objects"][k]["labels"] for k in before["objects"])
    assert not (ready.studies / "labels" / "final").exists() or not any((ready.studies / "labels" / "final").iterdir())
    assert ready.post("/infer/universal", params={"image": "case0", "output": "json"}).status_code == 200


# -- active learning ------------------------------------------------------------------------------


def test_active_learning_returns_an_unlabelled_image_with_its_score(ready):
    answer = ready.post("/activelearning/uncertainty", json={"client_id": "test"})
    assert answer.status_code == 200, answer.text
    chosen = answer.json()
    assert chosen["id"] in {f"case{i}" for i in range(4)}
    assert 0 < chosen["score"] <= 1 and chosen["score"] == chosen["uncertainty"]
    assert chosen["uncertainty_class"] in CLASSES and chosen["current_model"] is True
    cached = ready.get("/datastore/image/info", params={"image": chosen["id"]}).json()
    assert cached["uncertainty"] == chosen["score"] and set(cached["uncertainty_classes"]) == set(CLASSES)

    scoring = ready.post("/scoring/uncertainty", params={"run_sync": "true"})
    assert scoring.status_code == 200 and scoring.json()["failed"] == 0
    lesion = ready.post("/activelearning/lesion", json={}).json()
    infos = {f"case{i}": ready.get("/datastore/image/info", params={"image": f"case{i}"}).json() for i in range(4)}
    assert lesion["score"] == max(info["lesion"] for info in infos.values()) == infos[lesion["id"]]["lesion"]
    for strategy in ("random", "first"):
        answer = ready.post(f"/activelearning/{strategy}", json={}).json()
        assert answer["id"] in infos and "score" in answer


# -- new classes ----------------------------------------------------------------------------------


def test_a_class_added_by_name_is_listed_and_segmented(ready, client):
    embedding = torch.randn(512, generator=torch.Generator().manual_seed(1)).tolist()
    answer = ready.post("/universal/classes", json={"name": "Appendix", "embedding": embedding})
    assert answer.status_code == 200, answer.text
    assert answer.json()["class"]["id"] == len(CLASSES) + 1
    assert client.info()["models"]["universal"]["labels"]["Appendix"] == len(CLASSES) + 1
    _, params = client.infer("universal", "case0", {"classes": ["Appendix"]})
    assert params["label_names"] == {"Appendix": 1} and "Appendix" in params["report"]["classes"]
    persisted = Catalog.from_yaml(ready.app_dir / "model" / "catalog.yaml")
    assert persisted.names == [*CLASSES, "Appendix"]


def test_a_new_name_in_label_info_becomes_a_class(ready, client, workspace):
    answer = save_final_label(ready, workspace, 2, ["Liver", "Gallbladder", "Spleen"])
    assert answer.status_code == 200, answer.text
    labels = client.info()["models"]["universal"]["labels"]
    assert labels["Gallbladder"] == len(CLASSES) + 2 and list(labels.values()) == list(range(1, len(labels) + 1))
    saved = ready.get("/datastore/label/info", params={"label": "case2", "tag": "final"}).json()
    assert saved["classes"] == ["Liver", "Spleen", "Gallbladder"]
    assert saved["label_info"][1] == {"name": "Gallbladder", "idx": 2}


# -- training -------------------------------------------------------------------------------------


def test_save_labels_train_one_epoch_and_the_next_inference_uses_the_new_model(ready, client, workspace):
    for seed in (0, 1):
        answer = save_final_label(ready, workspace, seed, ["Spleen", "Liver", "Stomach", "Gallbladder"])
        assert answer.status_code == 200, answer.text
    _, before = client.infer("universal", "case3", {"classes": ["Liver"]})
    started = ready.post("/train/universal", json={"max_epochs": 1, "device": "cpu", "gate_tolerance": 1.0})
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    status = {}
    while time.monotonic() < deadline:
        status = ready.get("/train/").json()
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    assert status.get("status") == "DONE", json.dumps(status, indent=1)[-3000:]
    assert "regression gate: publish" in ready.log_text()

    stats = client.info()["train_stats"]["universal"]
    gate = stats["gate"]
    assert stats["published"] and gate["publish"] and gate["cases"] >= 1  # judged on held-out images
    assert gate["before"] and set(gate["before"]) <= {*CLASSES, "Gallbladder"}  # the old classes annotated
    assert set(gate["before"]) <= set(gate["after"])
    assert not set(stats["held_out_images"]) & set(stats["training_images"])
    run = json.loads((Path(stats["run"]) / "run.json").read_text())
    assert "Gallbladder" in {name for classes in run["datasets"].values() for name in classes}  # learnt

    _, after = client.infer("universal", "case3", {"classes": ["Liver"]})
    assert after["model"]["version"] == stats["version"] > before["model"]["version"]
    versions = ready.get("/universal/versions").json()
    assert [v["version"] for v in versions["versions"]] == list(range(1, stats["version"] + 1))  # all kept


# -- library pieces the app stands on (no server) ---------------------------------------------------


def test_weights_are_looked_for_in_the_model_folder_then_the_given_file(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "model")
    with pytest.raises(WeightsUnavailableError, match=f"put {RELEASED} into"):
        store.resolve_weights(download=True)  # offline in tests: nothing is downloaded
    given = universal.save_model(tiny_model(), tmp_path / "given.pt")
    assert store.resolve_weights(given) == given
    (tmp_path / "model").mkdir()
    placed = Path(shutil.copy(given, tmp_path / "model" / RELEASED))
    assert store.resolve_weights(given) == placed  # a released file placed in the folder comes first
    record = store.publish(universal.load_model(given), "test")
    assert store.resolve_weights(given) == store.current_path and record["version"] == 1
    store.publish(universal.load_model(given), "second")
    store.restore(1)
    assert store.index()["current"] == 1 and len(store.versions()) == 2


def test_label_info_names_values_and_unannotated_segments_are_left_out(tmp_path):
    catalog = catalog_for(CLASSES)
    phantom = make_phantom(0, **PHANTOM)
    save_phantom(phantom, tmp_path / "image.nii.gz")
    label = np.where(phantom.label == Catalog.default()["Liver"].id, 3, 0).astype(np.uint8)
    write_label_file(label, phantom.affine, tmp_path / "label.nrrd")
    info = [{"name": "spleen", "idx": 1}, {"name": "Appendix", "idx": 2}, {"name": "liver", "idx": 3}]
    annotation = read_annotation("case", tmp_path / "image.nii.gz", tmp_path / "label.nrrd", info, catalog)
    assert annotation.values == {3: "Liver"}  # listed but empty segments say nothing about the image


def _constant_model(logit: float) -> universal.UniversalModel:
    """The tiny model with every class's generated head reduced to a constant ``logit``."""
    model = tiny_model()
    with torch.no_grad():
        model.controller.weight.zero_()
        model.controller.bias.zero_()
        model.controller.bias[-1] = logit  # the last generated value is the output layer's bias
    return model


@pytest.fixture
def one_thread():
    """One compute thread, as the server's processes use (on a couple of shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_regression_gate_refuses_a_model_that_lost_an_old_class(tmp_path, one_thread):
    phantom = make_phantom(0, **PHANTOM)
    save_phantom(phantom, tmp_path / "image.nii.gz")
    label, info = np.zeros(phantom.label.shape, np.uint8), [{"name": "Liver", "idx": 1}]
    label[phantom.label == Catalog.default()["Liver"].id] = 1
    write_label_file(label, phantom.affine, tmp_path / "label.nii.gz")
    annotation = read_annotation("case", tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", info,
                                 catalog_for(CLASSES))
    held_out = annotation_datalist([annotation], held_out=["case"])
    everything, nothing = _constant_model(10.0), _constant_model(-10.0)

    refused = regression_gate(everything, nothing, held_out, tolerance=0.01, device="cpu")
    assert refused.before["Liver"] > 0.01 and refused.after["Liver"] == 0.0
    assert not refused.publish and refused.worse == ["Liver"]
    assert "keep the previous model" in refused.summary() and "Liver" in refused.summary()
    assert regression_gate(nothing, everything, held_out, device="cpu").publish  # better: published
    lenient = regression_gate(everything, nothing, held_out, tolerance=1.0, device="cpu")
    assert lenient.publish and lenient.before == refused.before
    unchecked = regression_gate(everything, nothing, annotation_datalist([annotation]), device="cpu")
    assert unchecked.publish and "without a check" in unchecked.reason  # no held-out evidence
