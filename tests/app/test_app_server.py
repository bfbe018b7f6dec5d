"""The MONAI Label app, end to end: the real server (``monailabel start_server``) on 127.0.0.1 with a
datastore of small phantoms, driven with ``MONAILabelClient`` and plain HTTP as 3D Slicer and OHIF
drive it. One server starts offline without weights (and must say so); the other, shared by the
rest of the module, with the tiny model placed in its model folder as the README says to do offline.
Each test sets up what it needs and holds whatever order the tests run in.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from app_server import start_server, wait_until
from conftest import missing_in_ci
from requests_toolbelt import MultipartEncoder
from tiny import PHANTOM, tiny_model

import universal
from universal.catalog import Catalog
from universal.io.labels import read_label_map, write_label_file
from universal.nets.openvino import int8_available
from universal.synth import make_phantom, save_phantom

CLASSES = ["Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney", "Liver Tumor"]
RELEASED = "clip_driven_universal_unet.pth"
UPLOAD_MB, MAX_VOXELS = 1, 100_000  # the shared server's limits (its phantoms hold 48,000 voxels)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    studies = root / "studies"
    studies.mkdir()
    for seed in range(4):
        save_phantom(make_phantom(seed, lesions=seed == 3, **PHANTOM), studies / f"case{seed}.nii.gz",
                     root / f"truth{seed}.nii.gz")
    universal.save_model(tiny_model(CLASSES), root / "tiny.pt")
    return root


def offline_env(workspace, clip_weights) -> dict[str, str]:
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(workspace / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(clip_weights)}
    for variable in ("UNIVERSAL_UNET_WEIGHTS", "UNIVERSAL_SWINUNETR_WEIGHTS", "UNIVERSAL_TEXT_EMBEDDINGS"):
        env[variable] = ""
    return env


@pytest.fixture(scope="module")
def ready(workspace, random_clip_weights, tmp_path_factory):
    """The server, offline, with the tiny model where the released weights go."""
    root = tmp_path_factory.mktemp("ready")
    studies = root / "studies"
    shutil.copytree(workspace / "studies", studies)
    model_dir = root / "model"
    model_dir.mkdir()
    shutil.copy(workspace / "tiny.pt", model_dir / RELEASED)
    limits = {"max_upload_mb": str(UPLOAD_MB), "max_image_voxels": str(MAX_VOXELS)}
    started = start_server(root, studies, {"model_dir": str(model_dir), **limits},
                           offline_env(workspace, random_clip_weights))
    assert started.get("/info/").json()["universal"]["ready"]
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(ready):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(ready.url, tmpdir=str(ready.app_dir.parent / "client"))


def labels(client) -> dict[str, int]:
    """The server's classes now, ``{name: id}``."""
    return client.info()["models"]["universal"]["labels"]


def slicer_label(workspace, seed: int, names, truth_names=None) -> tuple[np.ndarray, list[dict]]:
    """The phantom's truth for ``names`` as 3D Slicer exports it: values follow segment order. A
    segment may be drawn over another class's truth (``truth_names``), to name it anew."""
    truth = np.asarray(nib.load(workspace / f"truth{seed}.nii.gz").dataobj)
    released = Catalog.default()
    label = np.zeros(truth.shape, np.uint8)
    info = []
    for value, (name, drawn) in enumerate(zip(names, truth_names or names, strict=True), start=1):
        label[truth == released[drawn].id] = value
        info.append({"name": name, "idx": value})
    return label, info


def save_final_label(server, workspace, seed: int, names, label_info=None, *, label=None, suffix=".nrrd",
                     truth_names=None):
    if label is None:
        label, label_info = slicer_label(workspace, seed, names, truth_names)
    path = workspace / f"upload{seed}{suffix}"
    write_label_file(label, nib.load(server.studies / f"case{seed}.nii.gz").affine, path)
    with path.open("rb") as stream:
        return server.put("/datastore/label", params={"image": f"case{seed}", "tag": "final"},
                          files={"label": (path.name, stream)},
                          data={"params": json.dumps({"label_info": label_info})})


def unlabelled(server) -> set[str]:
    objects = server.get("/datastore/", params={"output": "all"}).json()["objects"]
    return {image for image, record in objects.items() if "final" not in record.get("labels", {})}


# -- start without weights ------------------------------------------------------------------------


def test_without_weights_the_server_starts_not_ready_and_says_where_the_file_goes(workspace, random_clip_weights,
                                                                                   tmp_path):
    server = start_server(tmp_path, workspace / "studies", {}, offline_env(workspace, random_clip_weights))
    try:
        not_ready(server)
    finally:
        server.stop()


def not_ready(server) -> None:
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
    names = info["models"]["universal"]["labels"]
    assert list(names)[: len(CLASSES)] == CLASSES and list(names.values()) == list(range(1, len(names) + 1))
    assert info["labels"] == list(names)  # classes added by other tests come after the model's own
    assert info["models"]["universal"]["type"] == "segmentation"
    assert {"classes", "threshold", "overlap", "postprocess", "device"} <= set(info["models"]["universal"]["config"])
    assert set(info["strategies"]) == {"uncertainty", "lesion", "findings", "review", "disagreement", "random", "first"}
    assert "universal" in info["trainers"] and "uncertainty" in info["scoring"]


def test_annotators_may_ask_for_the_int8_trunk(client, ready):
    """Slicer's options table offers ``precision`` (auto first); int8 answers with its measured agreement."""
    if not int8_available():
        missing_in_ci("OpenVINO and NNCF (pip install 'universal-model[openvino]')")
    assert client.info()["models"]["universal"]["config"]["precision"] == ["auto", "int8"]
    _, params = client.infer("universal", "case0", {"precision": "int8"})
    settings = params["report"]["settings"]
    assert settings["precision"] == "int8" and settings["runtime"] == "openvino"
    assert 0 <= settings["int8_agreement"]["lowest_dice"] <= 1


def test_infer_returns_a_label_map_on_the_images_grid(client, ready):
    image = nib.load(ready.studies / "case0.nii.gz")
    expected = labels(client)
    result_file, params = client.infer("universal", "case0", {})
    result = nib.load(result_file)
    assert result.shape == image.shape and np.allclose(result.affine, image.affine, atol=1e-4)
    assert params["label_names"] == expected
    assert set(np.unique(np.asarray(result.dataobj)).astype(int)) <= {0, *params["label_names"].values()}
    assert set(params["report"]["classes"]) == set(expected) and "Liver Tumor" in params["report"]["lesions"]
    assert params["report"]["input"]["shape"] == list(image.shape)

    # as 3D Slicer asks: NRRD, uint8
    result_file, params = client.infer("universal", "case1", {"result_extension": ".nrrd", "result_dtype": "uint8"})
    label, affine = read_label_map(result_file)
    case1 = nib.load(ready.studies / "case1.nii.gz")
    assert result_file.endswith(".nrrd") and label.shape == case1.shape
    assert np.allclose(affine, case1.affine, atol=1e-4)


def test_a_subset_by_name_is_numbered_1_to_k_and_label_prompt_keeps_the_info_ids(client, ready):
    """label_names says what each value is: a subset named in ``classes`` (3D Slicer's options table)
    holds values 1..K in id order, naming only those classes; ids sent as ``label_prompt`` (OHIF) keep
    their /info ids."""
    ids = labels(client)
    asked = {"classes": ["Stomach", "spleen"], "threshold": 0.3, "overlap": 0.25, "postprocess": "false",
             "device": "cpu"}
    result_file, params = client.infer("universal", "case0", asked)
    assert params["label_names"] == {"Spleen": 1, "Stomach": 2}  # Spleen's id is below Stomach's
    subset = np.asarray(nib.load(result_file).dataobj)
    assert set(np.unique(subset).astype(int)) <= {0, 1, 2}
    assert set(params["report"]["classes"]) == {"Spleen", "Stomach"}
    settings = params["report"]["settings"]
    assert (settings["threshold"], settings["overlap"], settings["postprocess"]) == (0.3, 0.25, False)
    _, by_id = client.infer("universal", "case0", {"classes": f"{ids['Stomach']},{ids['Spleen']}"})  # one string
    assert set(by_id["report"]["classes"]) == {"Spleen", "Stomach"}
    prompted, params = client.infer("universal", "case0", {"label_prompt": [ids["Stomach"], ids["Spleen"]],
                                                           "threshold": 0.3, "overlap": 0.25, "postprocess": False,
                                                           "device": "cpu"})
    assert params["label_names"] == {"Spleen": ids["Spleen"], "Stomach": ids["Stomach"]}
    by_ids = np.asarray(nib.load(prompted).dataobj)
    assert np.array_equal(by_ids == ids["Stomach"], subset == 2)
    assert np.array_equal(by_ids == ids["Spleen"], subset == 1)


def test_result_compress_dtype_and_extension_are_honoured(ready):
    """As OHIF v3 asks (output=image, result_compress false): a raw uint8 NRRD it can read byte by byte."""
    answer = ready.post("/infer/universal", params={"image": "case1", "output": "image"},
                        data={"params": json.dumps({"result_extension": ".nrrd", "result_dtype": "uint8",
                                                    "result_compress": False, "label_prompt": [1]})})
    assert answer.status_code == 200, answer.text
    header, _, body = answer.content.partition(b"\n\n")
    assert b"encoding: raw" in header and b"type: unsigned char" in header
    shape = nib.load(ready.studies / "case1.nii.gz").shape
    assert len(body) == int(np.prod(shape))
    packed = ready.post("/infer/universal", params={"image": "case1", "output": "image"},
                        data={"params": json.dumps({"result_extension": ".nrrd", "result_dtype": "uint16",
                                                    "result_compress": True, "label_prompt": [1]})})
    assert b"encoding: gzip" in packed.content[:400] and b"type: unsigned short" in packed.content[:400]


# -- bad requests ---------------------------------------------------------------------------------


def test_bad_requests_get_a_4xx_naming_the_problem_and_nothing_is_lost(ready, workspace):
    before = ready.get("/datastore/", params={"output": "all"}).json()
    saved_before = sorted((ready.studies / "labels").rglob("*"))

    def infer(image="case0", params=None, raw=None):
        return ready.post("/infer/universal", params={"image": image, "output": "json"},
                          data={"params": raw if raw is not None else json.dumps(params or {})})

    cases = [
        (infer(params={"classes": ["Livr"]}), 422, "unknown class 'Livr'; closest: Liver"),
        (infer(image="no_such_case"), 404, "no image 'no_such_case'"),
        (infer(image=str(ready.studies / "case1.nii.gz")), 403, "--conf allow_local_paths true"),  # a server path
        (infer(raw="{threshold: 0.5"), 400, "not valid JSON"),
        (infer(params={"threshold": "high"}), 422, "threshold must be a number"),
        (infer(params={"overlap": 1.5}), 422, "overlap must be at least 0 and below 1, got 1.5"),
        (infer(params={"device": "tpu"}), 422, "unknown device"),
        (infer(params={"precision": "int4"}), 422, "precision must be auto, float32, bfloat16, float16, int8"),
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
    assert sorted((ready.studies / "labels").rglob("*")) == saved_before
    assert ready.post("/infer/universal", params={"image": "case0", "output": "json"}).status_code == 200
    with (ready.studies / "case1.nii.gz").open("rb") as stream:  # an upload is read
        uploaded = ready.post("/infer/universal", params={"output": "json"}, files={"file": ("ct.nii.gz", stream)})
    assert uploaded.status_code == 200, uploaded.text


def test_hostile_requests_get_a_4xx_and_nothing_is_written_outside_the_studies(ready, workspace):
    """Paths, ``..`` in ids, wrong content types, oversized and deeply nested JSON, names that are not
    UTF-8: each a 4xx, and nothing appears outside the studies folder."""
    outside = sorted(ready.studies.parent.iterdir())
    image = (ready.studies / "case1.nii.gz").read_bytes()

    def infer(image_id, raw="{}"):
        return ready.post("/infer/universal", params={"image": image_id, "output": "json"}, data={"params": raw})

    answers = {
        "a server path": infer("/etc/passwd"),
        "a relative path out": infer("../../../../etc/passwd"),
        "an id with ..": infer("case0/../case1"),
        "an id that is not UTF-8": ready.post("/infer/universal?image=%ff%fe&output=json"),
        "params nested 100,000 deep": infer("case0", "[" * 100_000),
        "params over the upload limit": infer("case0", json.dumps({"classes": "x" * (2 * UPLOAD_MB * 2**20)})),
        "a label for ../case0": ready.put("/datastore/label", params={"image": "../case0", "tag": "final"},
                                          files={"label": ("l.nii.gz", image)}),
        "an image stored as ../escaped": ready.put("/datastore/image", params={"image": "../escaped"},
                                                  files={"file": ("escaped.nii.gz", image)}),
        "an image stored as /tmp/escaped": ready.put("/datastore/image", params={"image": "/tmp/escaped"},
                                                    files={"file": ("escaped.nii.gz", image)}),
        "an image named in bytes that are not UTF-8": ready.put(
            "/datastore/image", params={"image": "ok"}, files={"file": (b"\xff\xfe.nii.gz".decode("latin-1"), b"x")}),
        "a class as text": ready.post("/universal/classes", data="Appendix", headers={"Content-Type": "text/plain"}),
        "a label as JSON": ready.put("/datastore/label", params={"image": "case0", "tag": "final"},
                                     json={"label": "x"}),
        "a download of ../../etc/passwd": ready.get("/datastore/image", params={"image": "../../etc/passwd"}),
    }
    for name, answer in answers.items():
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text[:300])
    assert sorted(ready.studies.parent.iterdir()) == outside
    assert not Path("/tmp/escaped.nii.gz").exists()
    assert "escaped" not in ready.get("/datastore/", params={"output": "all"}).json()["objects"]


def gzip_bomb(path, shape=(2048, 2048, 2048)) -> None:
    """A .nii.gz of a few hundred kB whose header declares ``shape`` int16 voxels (16 GiB for the
    default) over a body of zeros that would expand to hundreds of MB."""
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    with gzip.open(path, "wb", compresslevel=9) as stream:
        stream.write(header.binaryblock + b"\0" * 4)
        zeros = bytes(1 << 24)
        for _ in range(32):  # 512 MB of zeros
            stream.write(zeros)


def test_oversized_and_bomb_uploads_are_refused_within_seconds(ready, workspace):
    bomb = workspace / "bomb.nii.gz"
    gzip_bomb(bomb)
    assert bomb.stat().st_size < UPLOAD_MB * 2**20
    started = time.monotonic()
    with bomb.open("rb") as stream:
        answer = ready.post("/infer/universal", params={"output": "json"}, files={"file": ("ct.nii.gz", stream)})
    assert answer.status_code == 413 and "more than the 100,000 allowed" in answer.json()["detail"], answer.text
    with bomb.open("rb") as stream:
        answer = ready.put("/datastore/image", params={"image": "bomb"}, files={"file": ("bomb.nii.gz", stream)})
    assert answer.status_code == 413, answer.text
    with bomb.open("rb") as stream:
        answer = ready.put("/datastore/label", params={"image": "case0", "tag": "final"},
                           files={"label": ("label.nii.gz", stream)})
    assert answer.status_code == 422 and "more than the 100,000 allowed" in answer.json()["detail"], answer.text
    assert time.monotonic() - started < 30
    big = bytes(2 * UPLOAD_MB * 2**20)
    answer = ready.post("/infer/universal", params={"output": "json"}, files={"file": ("ct.nii.gz", big)})
    assert answer.status_code == 413 and "--conf max_upload_mb" in answer.json()["detail"]
    form = MultipartEncoder({"file": ("big.nii.gz", big)})
    body = form.to_string()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))  # no Content-Length: counted as it arrives
    answer = requests.put(ready.url + "/datastore/image", params={"image": "big"}, data=chunks, timeout=60,
                          headers={"Content-Type": form.content_type})
    assert answer.status_code == 413, answer.text
    assert "bomb" not in ready.get("/datastore/", params={"output": "all"}).json()["objects"]


# -- active learning ------------------------------------------------------------------------------


def test_active_learning_returns_an_unlabelled_image_with_its_score(ready):
    answer = ready.post("/activelearning/uncertainty", json={"client_id": "test"})
    assert answer.status_code == 200, answer.text
    chosen = answer.json()
    candidates = unlabelled(ready)
    assert chosen["id"] in candidates
    assert 0 < chosen["score"] <= 1 and chosen["score"] == chosen["uncertainty"]
    classes = ready.get("/info/").json()["models"]["universal"]["labels"]
    assert chosen["uncertainty_class"] in classes and chosen["current_model"] is True
    cached = ready.get("/datastore/image/info", params={"image": chosen["id"]}).json()
    assert cached["uncertainty"] == chosen["score"] and set(cached["uncertainty_classes"]) == set(classes)

    scoring = ready.post("/scoring/uncertainty", params={"run_sync": "true"})
    assert scoring.status_code == 200 and scoring.json()["failed"] == 0
    lesion = ready.post("/activelearning/lesion", json={}).json()
    candidates = unlabelled(ready)
    infos = {image: ready.get("/datastore/image/info", params={"image": image}).json() for image in candidates}
    assert lesion["score"] == max(info["lesion"] for info in infos.values()) == infos[lesion["id"]]["lesion"]
    random = ready.post("/activelearning/random", json={}).json()
    assert random["id"] in infos and 0 < random["score"] <= 1
    assert ready.post("/activelearning/first", json={}).json()["id"] == min(infos)


# -- new classes ----------------------------------------------------------------------------------


def test_a_class_added_by_name_is_listed_and_segmented(ready, client):
    before = labels(client)
    embedding = torch.randn(512, generator=torch.Generator().manual_seed(1)).tolist()
    answer = ready.post("/universal/classes", json={"name": "Appendix", "embedding": embedding})
    assert answer.status_code == 200, answer.text
    assert answer.json()["class"]["id"] == len(before) + 1
    assert labels(client) == {**before, "Appendix": len(before) + 1}
    _, params = client.infer("universal", "case0", {"classes": ["Appendix"]})
    assert params["label_names"] == {"Appendix": 1} and set(params["report"]["classes"]) == {"Appendix"}
    _, params = client.infer("universal", "case0", {"label_prompt": [len(before) + 1]})  # as OHIF asks for it
    assert params["label_names"] == {"Appendix": len(before) + 1}
    model_dir = Path(client.info()["universal"]["model_dir"])
    assert Catalog.from_yaml(model_dir / "catalog.yaml").names == [*before, "Appendix"]


def test_a_new_name_in_label_info_becomes_a_class(ready, client, workspace):
    before = labels(client)
    answer = save_final_label(ready, workspace, 2, ["Liver", "Cholecyst", "Spleen"],
                              truth_names=["Liver", "Gallbladder", "Spleen"])
    assert answer.status_code == 200, answer.text
    assert labels(client) == {**before, "Cholecyst": len(before) + 1}
    saved = ready.get("/datastore/label/info", params={"label": "case2", "tag": "final"}).json()
    assert saved["classes"] == ["Liver", "Spleen", "Cholecyst"]
    assert saved["label_info"][1] == {"name": "Cholecyst", "idx": 2}


# -- training -------------------------------------------------------------------------------------


def test_batch_inference_prelabels_every_image_as_universal_segment_does(ready, tmp_path):
    """The endpoint's default parameters (device cuda, label tag original) on a server without a GPU."""
    status = ready.batch_infer()
    assert status.get("status") == "DONE", json.dumps(status, indent=1)[-3000:]
    weights = ready.get("/info/").json()["universal"]["weights"]  # no other request changes it meanwhile
    objects = ready.get("/datastore/", params={"output": "all"}).json()["objects"]
    images = {image_id: next(ready.studies.glob(f"{image_id}.*")) for image_id in objects}
    expected = universal.segment(list(images.values()), tmp_path, model=weights, progress=False)
    assert {outcome.name: outcome.status for outcome in expected} == dict.fromkeys(images, "done")
    for image_id in images:  # saved by the batch's own process: the server sees them within moments
        def found(image_id=image_id):  # in a list: a 4xx response is falsy
            answer = ready.get("/datastore/label", params={"label": image_id, "tag": "original"})
            return [answer] if answer.status_code != 404 else None

        (saved,) = wait_until(found, 10, f"the label of {image_id}")
        assert saved.status_code == 200, saved.text
        path = tmp_path / f"{image_id}-saved.nii.gz"
        path.write_bytes(saved.content)
        label, _ = read_label_map(path)
        assert np.array_equal(label, nib.load(tmp_path / image_id / "segmentation.nii.gz").get_fdata()), image_id


def test_save_labels_train_one_epoch_and_the_next_inference_uses_the_new_model(ready, client, workspace):
    for seed in (0, 1):
        answer = save_final_label(ready, workspace, seed, ["Spleen", "Liver", "Stomach", "Gallbladder"])
        assert answer.status_code == 200, answer.text
    _, before = client.infer("universal", "case3", {"classes": ["Liver"]})
    status = ready.train({"max_epochs": 1, "device": "cpu", "gate_tolerance": 1.0})
    assert status.get("status") == "DONE", json.dumps(status, indent=1)[-3000:]
    assert "regression gate: publish" in ready.log_text()

    stats = client.info()["train_stats"]["universal"]
    gate = stats["decision"]
    assert stats["published"] and gate["publish"] and gate["cases"] >= 1  # judged on held-out images
    assert gate["before"] and set(gate["before"]) <= set(labels(client))  # the old classes annotated
    assert set(gate["before"]) <= set(gate["after"])
    assert not set(stats["held_out_cases"]) & set(stats["training_cases"])
    run = json.loads((Path(stats["run_dir"]) / "run.json").read_text())
    assert "Gallbladder" in {name for classes in run["datasets"].values() for name in classes}  # learnt

    _, after = client.infer("universal", "case3", {"classes": ["Liver"]})
    assert after["model"]["version"] == stats["version"] > (before["model"]["version"] or 0)
    versions = ready.get("/universal/versions").json()
    assert [v["version"] for v in versions["versions"]] == list(range(1, stats["version"] + 1))  # all kept
