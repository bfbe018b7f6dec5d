"""An annotation team on the real server, authentication on (the test realm signs tokens for several
users): two annotators label one image and both versions are kept, attributed and listed; effort is
measured against the prediction each was served; a reviewer accepts and rejects classes and makes a
consensus the accepted label; review states decide what trains; the team's queues serve the images
waiting for review and those whose annotators agree least."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from realm import ADMIN, ANNOTATOR, REVIEWER, USER
from team_server import running_team, save, served
from tiny import PHANTOM, tiny_model

import universal
from universal.io.labels import read_label_map
from universal.synth import make_phantom, save_phantom

CLASSES = ["Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney"]


@pytest.fixture(scope="module")
def team(tmp_path_factory, random_clip_weights):
    """The server, and a request function per person: ``team["ann1"]("GET", path, ...)``."""
    root = tmp_path_factory.mktemp("team")
    studies = root / "studies"
    studies.mkdir()
    for seed in (0, 1):
        save_phantom(make_phantom(seed, **PHANTOM), studies / f"case{seed}.nii.gz", root / f"truth{seed}.nii.gz")
    (root / "model").mkdir()
    universal.save_model(tiny_model(CLASSES), root / "model" / "clip_driven_universal_unet.pth")
    people = {"ann1": [USER, ANNOTATOR], "ann2": [USER, ANNOTATOR], "rev": [USER, ANNOTATOR, REVIEWER],
              "reader": [USER], "lead": [USER, ADMIN]}
    with running_team(root, studies, root / "model", random_clip_weights, people, lead="lead") as running:
        yield running  # the lead trains


def truth(team, seed: int, name: str) -> np.ndarray:
    labels = np.asarray(nib.load(team["root"] / f"truth{seed}.nii.gz").dataobj)
    return labels == universal.Catalog.default()[name].id


def labels_of(team, image: str) -> dict:
    answer = team["reader"]("GET", f"/universal/labels/{image}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_two_annotators_keep_their_versions_and_a_reviewer_decides(team, tmp_path):
    liver, spleen = truth(team, 0, "Liver"), truth(team, 0, "Spleen")
    served(team, "ann1", "case0")
    first = save(team, "ann1", "case0", {"Liver": liver, "Spleen": spleen}, tmp_path)
    served(team, "ann2", "case0")
    grown = liver | np.roll(liver, 2, axis=0)
    save(team, "ann2", "case0", {"Liver": grown, "Spleen": spleen}, tmp_path)

    found = labels_of(team, "case0")
    versions = found["versions"]
    assert [(v["version"], v["annotator"]) for v in versions] == [(1, "ann1"), (2, "ann2")]  # the tokens' users
    assert all(v["model_version"] is None and v["seconds"] >= 0 and set(v["effort"]) >= {"Liver", "Spleen"}
               for v in versions)  # released weights: no published version yet
    assert found["final"] == 2 and found["states"]["Liver"] == "corrected"
    download = team["reader"]("GET", "/universal/labels/case0/1", params={"format": "nrrd"})
    assert download.status_code == 200
    kept = tmp_path / "kept.nrrd"
    kept.write_bytes(download.content)
    assert np.array_equal(read_label_map(kept)[0], first["labels"])

    agreement = team["reader"]("GET", "/universal/agreement/case0").json()
    (pair,) = agreement["classes"]["Liver"]
    assert pair["annotators"] == ["ann1", "ann2"]
    assert pair["dice"] == pytest.approx(2 * (liver & grown).sum() / (liver.sum() + grown.sum()), abs=1e-6)
    assert agreement["classes"]["Spleen"][0]["dice"] == 1.0 and agreement["classes"]["Spleen"][0]["hd95_mm"] == 0

    refused = team["ann1"]("POST", "/universal/review/case0", json={"classes": {"Liver": "approved"}})
    assert refused.status_code == 403, refused.text  # an annotator is no reviewer
    consensus = team["rev"]("POST", "/universal/consensus/case0")
    assert consensus.status_code == 200, consensus.text
    assert consensus.json()["final"] == 3 and consensus.json()["versions"][-1]["annotator"] == "consensus"
    final = team["reader"]("GET", "/datastore/label", params={"label": "case0", "tag": "final"})
    path = tmp_path / "final.nii.gz"
    path.write_bytes(final.content)
    agreed, _ = read_label_map(path)
    info = team["reader"]("GET", "/datastore/label/info", params={"label": "case0", "tag": "final"}).json()
    values = {entry["name"]: entry["idx"] for entry in info["label_info"]}
    assert np.array_equal(agreed == values["Liver"], liver & grown)  # two annotators: both must agree

    reviewed = team["rev"]("POST", "/universal/review/case0", json={"classes": {
        "Liver": "approved", "Spleen": {"state": "rejected", "comment": "misses the lower pole"}}})
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["states"] == {"Liver": "approved", "Spleen": "rejected", **{
        name: "predicted" for name in CLASSES if name not in ("Liver", "Spleen")}}
    bad = team["rev"]("POST", "/universal/review/case0", json={"classes": {"Liver": "maybe"}})
    assert bad.status_code == 422 and "approved or rejected" in bad.json()["detail"]

    waiting = team["reader"]("POST", "/activelearning/disagreement", json={}).json()
    assert waiting["id"] == "case0" and waiting["score"] == pytest.approx(pair["dice"], abs=1e-6)


def test_effort_against_the_served_prediction_and_the_review_queue(team, tmp_path):
    prediction = served(team, "ann1", "case1")
    ids = team["reader"]("GET", "/info/").json()["models"]["universal"]["labels"]
    names = {value: name for name, value in ids.items()}
    present = {names[int(v)]: prediction == v for v in np.unique(prediction) if v}
    assert present, "the tiny model predicts nothing"
    save(team, "ann1", "case1", present, tmp_path)  # accepted as served
    erased = max(present, key=lambda name: present[name].sum())
    save(team, "ann1", "case1", {n: m for n, m in present.items() if n != erased}, tmp_path, empty=[erased])
    first, second = labels_of(team, "case1")["versions"]
    assert all(e["added"] == 0 and e["removed"] == 0 for e in first["effort"].values()), first["effort"]
    assert second["effort"][erased] == {"added": 0, "removed": int(present[erased].sum()), "dice": 0.0}
    summed = team["reader"]("GET", "/universal/effort").json()["by_annotator"]["ann1"]
    assert summed["versions"] >= 3 and summed["removed"] >= int(present[erased].sum()) and summed["images"] == 2

    queue = team["reader"]("POST", "/activelearning/review", json={}).json()
    assert queue["id"] == "case1" and queue["score_name"] == "waiting_s"  # case0's label was reviewed


def test_review_states_decide_what_trains(team):
    """case0: Liver approved, Spleen rejected (the first test); case1: nothing reviewed."""
    server = team["server"]
    status = server.train({"max_epochs": 1, "val_split": 0, "device": "cpu", "train_on": "final"})
    assert status.get("status") == "DONE", json.dumps(status)[-2000:]
    trained = run_classes(team)
    assert "Spleen" not in trained["case0"] and "Liver" in trained["case0"]
    assert set(trained["case1"]) <= set(CLASSES)
    status = server.train({"max_epochs": 1, "val_split": 0, "device": "cpu", "train_on": "approved"})
    assert status.get("status") == "DONE", json.dumps(status)[-2000:]
    assert run_classes(team) == {"case0": ["Liver"]}  # only approved classes; case1 has none


def run_classes(team) -> dict[str, list[str]]:
    """Case → the classes the last training trained it on."""
    return team["reader"]("GET", "/info/").json()["train_stats"]["universal"]["classes_by_case"]


def test_anatomy_findings_of_predictions_and_labels_are_kept_and_queued(team, tmp_path):
    answer = team["reader"]("POST", "/infer/universal", params={"image": "case0", "output": "json"})
    assert answer.status_code == 200 and isinstance(answer.json()["report"]["findings"], list)
    right, left = truth(team, 1, "Right Kidney"), truth(team, 1, "Left Kidney")
    save(team, "ann2", "case1", {"Right Kidney": left, "Left Kidney": right, "Liver": truth(team, 1, "Liver")},
         tmp_path)  # the kidneys' names swapped
    version = labels_of(team, "case1")["versions"][-1]
    errors = [(f["code"], f["classes"]) for f in version["findings"] if f["severity"] == "error"]
    assert errors == [("side", ["Right Kidney", "Left Kidney"])]
    info = team["reader"]("GET", "/datastore/image/info", params={"image": "case1"}).json()
    assert info["findings_worst"] == "error" and info["findings_of"] == "label"
    queued = team["reader"]("POST", "/activelearning/findings", json={}).json()
    assert queued["id"] == "case1" and queued["score_name"] == "error_findings"
