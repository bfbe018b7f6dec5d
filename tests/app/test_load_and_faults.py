"""The server under load and faults, on loopback with the tiny model: concurrent inferences agree and
stay within a memory bound, inferences answer while a training run publishes and each names the
model that computed it, simultaneous label saves keep one whole label, and ``kill -9`` during
training while labels are being saved loses nothing (the published model, every saved label, a
valid datastore index), the interrupted training being reported as failed."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import torch
from app_server import start_server, wait_until
from requests_toolbelt.multipart.decoder import MultipartDecoder
from tiny import CLASSES, PHANTOM, tiny_model

import universal
from universal.catalog import Catalog
from universal.io.labels import read_label_map, write_label_file
from universal.serving.model_store import ModelStore
from universal.synth import make_phantom, save_phantom

RELEASED = "clip_driven_universal_unet.pth"
CONCURRENT, MEMORY_BOUND_GIB = 20, 1.5  # requests at once; growth of the server's memory they may cause


def make_folder(root: Path, random_clip_weights) -> tuple[Path, dict, dict]:
    """Four phantoms, their truths, the tiny model where the released file goes; (studies, conf, env)."""
    studies = root / "studies"
    studies.mkdir(parents=True)
    for seed in range(4):
        save_phantom(make_phantom(seed, **PHANTOM), studies / f"case{seed}.nii.gz", root / f"truth{seed}.nii.gz")
    (root / "model").mkdir()
    universal.save_model(tiny_model(), root / "model" / RELEASED)
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    return studies, {"model_dir": str(root / "model")}, env


@pytest.fixture(scope="module")
def served(tmp_path_factory, random_clip_weights):
    root = tmp_path_factory.mktemp("load")
    studies, conf, env = make_folder(root, random_clip_weights)
    server = start_server(root, studies, conf, env)
    yield server
    server.stop()


def label_file(server, seed: int, names, path: Path) -> tuple[Path, list[dict]]:
    """The phantom's truth for ``names`` as a viewer saves it (values 1.. in that order) at ``path``."""
    root = server.app_dir.parent
    truth = np.asarray(nib.load(root / f"truth{seed}.nii.gz").dataobj)
    label = np.zeros(truth.shape, np.uint8)
    for value, name in enumerate(names, start=1):
        label[truth == Catalog.default()[name].id] = value
    write_label_file(label, nib.load(server.studies / f"case{seed}.nii.gz").affine, path)
    return path, [{"name": name, "idx": value} for value, name in enumerate(names, start=1)]


def save_label(server, seed: int, path: Path, info: list[dict]):
    with path.open("rb") as stream:
        return server.put("/datastore/label", params={"image": f"case{seed}", "tag": "final"},
                          files={"label": (path.name, stream)}, data={"params": json.dumps({"label_info": info})})


def infer(server, image: str) -> tuple[int, np.ndarray | None, dict]:
    """(status, label map, JSON part) of ``/infer/universal`` on a datastore image."""
    answer = server.post("/infer/universal", params={"image": image, "output": "all"},
                         data={"params": json.dumps({"result_extension": ".nii.gz"})})
    if answer.status_code != 200:
        return answer.status_code, None, {"detail": answer.text[:300]}
    parts = {}
    for part in MultipartDecoder.from_response(answer).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        parts["params" if 'name="params"' in disposition else "image"] = part.content
    image = nib.Nifti1Image.from_bytes(gzip.decompress(parts["image"]))  # a .nii.gz
    return 200, np.asarray(image.dataobj, np.uint8), json.loads(parts["params"])


def label_map_with(weights: Path, image: Path) -> np.ndarray:
    """``universal segment`` with ``weights`` on ``image``, on one thread as the server computes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return universal.Segmenter(universal.load_model(weights), progress=False)(universal.read_scan(image)).label_map
    finally:
        torch.set_num_threads(threads)


def memory(process: psutil.Process) -> int:
    """Resident bytes of the server and the processes it started."""
    total = 0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += each.memory_info().rss
    return total


def test_concurrent_inferences_over_two_images_agree_within_a_memory_bound(served):
    first = {image: infer(served, image) for image in ("case0", "case1")}
    assert all(status == 200 for status, _, _ in first.values()), first
    process = psutil.Process(served.process.pid)
    baseline, peak, running = memory(process), [0], threading.Event()
    running.set()

    def watch():
        while running.is_set():
            peak[0] = max(peak[0], memory(process))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda k: (f"case{k % 2}", infer(served, f"case{k % 2}")), range(CONCURRENT)))
    seconds = time.perf_counter() - started
    running.clear()
    watcher.join()
    for image, (status, label_map, params) in answers:
        assert status == 200, params
        assert np.array_equal(label_map, first[image][1]), image
        assert params["model"]["version"] == first[image][2]["model"]["version"]
    growth = (peak[0] - baseline) / 2**30
    print(f"{CONCURRENT} concurrent inferences over 2 images: {seconds:.1f} s; server memory "
          f"{baseline / 2**20:.0f} MiB before, {peak[0] / 2**20:.0f} MiB at most")
    assert growth < MEMORY_BOUND_GIB, f"the server grew by {growth:.2f} GiB"


def test_inferences_answer_during_training_and_name_the_model_that_computed_them(served, tmp_path):
    for seed in (0, 1, 2):
        path, info = label_file(served, seed, CLASSES, tmp_path / f"label{seed}.nii.gz")
        assert save_label(served, seed, path, info).status_code == 200
    started = served.post("/train/universal", json={"max_epochs": 2, "device": "cpu", "gate_tolerance": 1.0})
    assert started.status_code == 200, started.text
    answers, during = [], 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        training = served.get("/train/").json().get("status") in ("SUBMITTED", "RUNNING")
        answers.append(infer(served, "case3"))
        during += training
        if not training:
            break
    answers.append(infer(served, "case3"))
    stats = served.get("/info/").json()["train_stats"]["universal"]
    assert stats.get("published"), stats
    assert during >= 1  # answered while the training ran
    store = ModelStore(served.app_dir.parent / "model")
    expected = {None: label_map_with(served.app_dir.parent / "model" / RELEASED, served.studies / "case3.nii.gz"),
                stats["version"]: label_map_with(store.version_path(stats["version"]), served.studies / "case3.nii.gz")}
    assert not np.array_equal(*expected.values())  # the two models answer differently
    versions = []
    for status, label_map, params in answers:
        assert status == 200, params
        version = params["model"]["version"]
        versions.append(version)
        assert np.array_equal(label_map, expected[version]), version
    assert versions[-1] == stats["version"]
    assert versions == sorted(versions, key=lambda v: v or 0)  # swapped once, between requests


def assert_one_whole_save(server, image: str, truth: dict[str, np.ndarray], folder: Path) -> str:
    """The image's final label is one of the ``truth`` labels {name: label map}, whole, and its record
    names that one; returns the name."""
    info = server.get("/datastore/label/info", params={"label": image, "tag": "final"}).json()
    names = [entry["name"] for entry in info["label_info"]]
    assert len(names) == 1 and names[0] in truth, names
    stored = folder / "stored.nii.gz"
    stored.write_bytes(server.get("/datastore/label", params={"label": image, "tag": "final"}).content)
    assert np.array_equal(read_label_map(stored)[0], truth[names[0]])  # the file and its record agree
    return names[0]


def test_two_saves_of_one_image_at_once_keep_one_whole_label(served, tmp_path):
    liver = label_file(served, 3, ["Liver"], tmp_path / "liver.nii.gz")
    spleen = label_file(served, 3, ["Spleen"], tmp_path / "spleen.nii.gz")
    truth = {name: read_label_map(path)[0] for name, (path, _) in (("Liver", liver), ("Spleen", spleen))}
    for _ in range(4):
        gate = threading.Barrier(2)

        def save(label, gate=gate):
            gate.wait()
            return save_label(served, 3, *label)

        with ThreadPoolExecutor(2) as pool:
            assert [answer.status_code for answer in pool.map(save, (liver, spleen))] == [200, 200]
        assert_one_whole_save(served, "case3", truth, tmp_path)
        json.loads((served.studies / "datastore_v2.json").read_text())


# -- kill -9 -----------------------------------------------------------------------------------------


def universal_stats(root: Path) -> dict:
    stats = root / "model" / "train_stats.json"
    return json.loads(stats.read_text()) if stats.is_file() else {}


def saved_state(root: Path) -> dict:
    """What must survive: the model folder's current model, catalogue and index, and every label file."""
    model = root / "model"
    kept = {path: path.read_bytes() for name in ("universal.pt", "catalog.yaml", "versions.json")
            if (path := model / name).is_file()}
    kept.update({path: path.read_bytes() for path in sorted((root / "studies" / "labels").rglob("*.nii.gz"))})
    return kept


def test_killed_while_training_and_saving_labels_nothing_is_lost(tmp_path, random_clip_weights):
    """``kill -9`` of the server and its processes while a training runs and an annotator keeps saving
    one image's label; after a restart the published model, catalogue, index and every other label are
    as before, the label being saved is one whole save with its own record, the training is reported
    as failed, and the server answers with the published version."""
    studies, conf, env = make_folder(tmp_path, random_clip_weights)
    server = start_server(tmp_path, studies, conf, env)
    liver = label_file(server, 3, ["Liver"], tmp_path / "liver.nii.gz")
    spleen = label_file(server, 3, ["Spleen"], tmp_path / "spleen.nii.gz")
    truth = {name: read_label_map(path)[0] for name, (path, _) in (("Liver", liver), ("Spleen", spleen))}
    saving = studies / "labels" / "final" / "case3.nii.gz"
    saves, kept, stop = [0], [0], threading.Event()

    def keep_saving():
        while not stop.is_set():
            try:
                answer = save_label(server, 3, *(liver if saves[0] % 2 else spleen))
            except Exception:  # the server is gone
                return
            saves[0] += 1
            kept[0] += answer.status_code == 200  # answered: its version was kept before the answer

    try:
        for seed in (0, 1, 2):
            path, info = label_file(server, seed, CLASSES, tmp_path / f"label{seed}.nii.gz")
            assert save_label(server, seed, path, info).status_code == 200
        added = server.post("/universal/classes", json={"name": "Appendix", "embedding": [0.01] * 512})
        assert added.status_code == 200, added.text  # version 1, published at once
        published = server.get("/universal/versions").json()
        before = saved_state(tmp_path)
        started = server.post("/train/universal", json={"max_epochs": 400, "device": "cpu", "gate_tolerance": 1.0})
        assert started.status_code == 200, started.text
        wait_until(lambda: "running" in universal_stats(tmp_path), 60, "the training's start", interval=0.2)
        saver = threading.Thread(target=keep_saving)
        saver.start()
        while saves[0] < 3:
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 0.5))
        server.kill()
        stop.set()
        saver.join()
    finally:
        server.stop()
    json.loads((studies / "datastore_v2.json").read_text())
    server = start_server(tmp_path, studies, conf, env)
    try:
        after = saved_state(tmp_path)
        assert {k: v for k, v in after.items() if k != saving} == before
        assert server.get("/universal/versions").json() == published
        stats = server.get("/info/").json()["train_stats"]["universal"]
        assert stats["interrupted"]["status"] == "FAILED" and "train again" in stats["interrupted"]["reason"]
        name = assert_one_whole_save(server, "case3", truth, tmp_path)
        assert not [p for p in saving.parent.iterdir() if p.name.startswith(".")]
        status, _, params = infer(server, "case3")
        assert status == 200 and params["model"]["version"] == published["current"] == 1, params
        versions = server.get("/universal/labels/case3").json()["versions"]  # no earlier version lost
        assert len(versions) >= kept[0] and [v["version"] for v in versions] == list(range(1, len(versions) + 1))
        for version in versions:
            assert server.get(f"/universal/labels/case3/{version['version']}").status_code == 200
        assert all(server.get(f"/universal/labels/case{seed}").json()["final"] == 1 for seed in (0, 1, 2))
        print(f"killed during training and after {saves[0]} label saves: case3 holds the whole {name} label")
    finally:
        server.stop()
