"""Learning on partial labels (about seven minutes on two CPU cores):

* two phantom datasets that annotate disjoint classes train one small model that segments their
  union on unseen patients;
* a class annotated only by a third dataset is taught with the base frozen, and the old classes
  compute exactly as before;
* (opt-in, `pytest -m learning`) on the trained model, the default inference path's masks agree
  with those of every window in float32, and the int8 trunk's with float32's.

``bench/learning.py`` runs the same recipe over several seeds and thread counts.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import missing_in_ci
from partial_labels import (
    BASE_STEPS,
    LARGE_ORGANS,
    TRAINED,
    scores,
    unseen_cases,
)

import universal
from universal.devices import cpu_description
from universal.inference import InferenceSettings, Segmenter
from universal.nets.openvino import int8_available
from universal.synth import calibration_windows
from universal.training import NewClass, TrainSettings, train
from universal.training.datasets import load_templates, prepare_datalist
from universal.training.metrics import dice


@pytest.fixture(scope="module")
def unseen():
    return unseen_cases()


@pytest.fixture(scope="module")
def base(learned):
    """A width-8 U-Net trained from scratch through the CLI on the two disjoint datasets (seed 0, two
    threads; its class embeddings are the released ones)."""
    return learned


@pytest.fixture(scope="module")
def datasets(learning_datasets):
    return learning_datasets


def test_disjoint_datasets_teach_one_model_their_union(base, unseen):
    model = universal.load_model(base / "model.pt")
    assert model.catalog.names == list(TRAINED)
    found = scores(model, unseen, (*LARGE_ORGANS, "Right Kidney", "Left Kidney"))
    print(f"CPU: {cpu_description()}; unseen patients, Dice: {json.dumps(found)}")
    assert np.mean([found[name] for name in LARGE_ORGANS]) >= 0.8, found
    assert min(found[name] for name in LARGE_ORGANS) >= 0.6, found
    run = json.loads((base / "run.json").read_text())
    assert run["datasets"] == {"Organs": ["Liver", "Spleen", "Stomach"], "Kidneys": ["Right Kidney", "Left Kidney"]}
    with (base / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["step"]) for r in rows] == list(range(1, BASE_STEPS + 1))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    with (base / "validation.csv").open() as stream:
        validated = {r["class"] for r in csv.DictReader(stream)}
    assert validated == set(TRAINED)
    assert any((base / "tensorboard").iterdir())


def test_a_new_class_learns_with_the_base_frozen(base, datasets, unseen, tmp_path):
    templates = load_templates(datasets["templates"])
    datalist = prepare_datalist([datasets["both"]], templates=templates, validation_fraction=0)
    start = universal.load_model(base / "model.pt")
    kidneys = start.class_embeddings[3:5].mean(0)  # an embedding to start from, instead of CLIP's
    result = train(datalist, tmp_path / "run", model=start, add_classes=[NewClass("Kidneys", embedding=kidneys)],
                   settings=TrainSettings(steps=40, learning_rate=1e-4, embedding_learning_rate=3e-2,
                                          warmup_steps=2, checkpoint_every=0, freeze_base=True), progress=False)
    taught = universal.load_model(tmp_path / "run" / "model.pt")
    assert taught.catalog.names[-1] == "Kidneys" and result.steps == 40
    found = scores(taught, unseen, ["Kidneys"])
    print("new class on unseen patients, Dice:", found)
    assert found["Kidneys"] >= 0.7
    before = universal.load_model(base / "model.pt")
    window = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(before(window), taught(window, classes=list(range(1, 6))))
    for key, value in before.state_dict().items():
        if key != "class_embeddings":
            assert torch.equal(value, taught.state_dict()[key]), key


@pytest.mark.learning
def test_the_default_path_agrees_with_every_window_in_float32(base, unseen):
    """bfloat16 moves boundary voxels: on the model of the 8 mm recipe that preceded this one (seed 0), a right
    kidney of 218 voxels differed by 6 (Dice 0.986), below the bar; models from seeds 1 and 2 reached 0.998 and
    0.991."""
    model = universal.load_model(base / "model.pt")
    exhaustive = Segmenter(model, InferenceSettings(device="cpu", precision="float32", skip_air=False,
                                                    localize=False), progress=False)
    for classes in (None, ["Liver"]):
        default = Segmenter(model, InferenceSettings(device="cpu"), progress=False)
        for scan, _ in unseen:
            fast, reference = default(scan, classes), exhaustive(scan, classes)
            for class_id in fast.class_ids:
                assert dice(fast.mask(class_id), reference.mask(class_id)) >= 0.99, model.catalog[class_id].name


@pytest.mark.learning
def test_the_int8_trunk_keeps_the_masks_of_float32(base, unseen):
    """On this model (seed 0) over the clinical phantom and ten unseen ones, at one and two threads, the
    lowest per-class Dice was 0.991 on an AMD EPYC (``bench/int8.py``); not yet measured on an AMX Xeon."""
    if not int8_available():
        missing_in_ci("OpenVINO and NNCF (pip install 'universal-model[openvino]')")
    model = universal.load_model(base / "model.pt")
    float32 = Segmenter(model, InferenceSettings(device="cpu", precision="float32", runtime="torch"), progress=False)
    int8 = Segmenter(model, InferenceSettings(precision="int8"), progress=False, calibration=calibration_windows)
    for scan, _ in unseen:
        ours, expected = int8(scan), float32(scan)
        for class_id in ours.class_ids:
            assert dice(ours.mask(class_id), expected.mask(class_id)) >= 0.99, model.catalog[class_id].name
