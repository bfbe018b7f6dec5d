"""What the team delivers, on a server with authentication on and a team at work (two annotators, a
reviewer, batch pre-labelling, two published model versions and a training run). The dashboard in
headless Chromium asks for a token as the API does, loads with no request leaving the machine, and
every number it shows equals ``GET /universal/overview``'s; a full-page screenshot is kept as a test
artefact. The lead (admin) exports the dataset with ``universal export URL``; an annotator may not."""

from __future__ import annotations

import csv
import json
import time
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pytest
from app_server import wait_until
from browser import artefacts, headless_chromium, requested_urls, require_chromium
from realm import ADMIN, ANNOTATOR, REVIEWER, USER
from team_server import running_team, save
from tiny import PHANTOM, tiny_model

import universal
from universal.cli import main
from universal.serving.gate import GateDecision
from universal.serving.model_store import ModelStore
from universal.synth import make_phantom, save_phantom
from universal.training.run_folder import RunFolder
from universal.training.runlog import RunLog

CLASSES = ["Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney"]
PEOPLE = {"ann1": [USER, ANNOTATOR], "ann2": [USER, ANNOTATOR], "rev": [USER, ANNOTATOR, REVIEWER],
          "lead": [USER, ADMIN]}


def model_history(folder) -> None:
    """Two published versions with their regression gate's Dice, and one training run's logs, written
    by the store and the run log the fine-tuning uses."""
    store = ModelStore(folder)
    for dice in ({"Liver": 0.81, "Spleen": 0.62, "Stomach": 0.70}, {"Liver": 0.86, "Spleen": 0.71, "Stomach": 0.74}):
        gate = GateDecision(publish=True, tolerance=0.05, cases=2, before={}, after=dice)
        store.publish(tiny_model(CLASSES), "finetune", {"gate": gate.to_record()})
    log = RunLog(RunFolder(store.new_run_dir()), 0, enabled=True)
    for step in range(1, 41):
        log.step(step, 1e-4, 1.2 * 0.95**step, 0.4)
        if step % 10 == 0:
            log.validation(step, {"Liver": 0.5 + step / 100, "Spleen": 0.3 + step / 100})
    log.close()


@pytest.fixture(scope="module")
def team(tmp_path_factory, random_clip_weights):
    require_chromium()
    root = tmp_path_factory.mktemp("dashboard")
    studies = root / "studies"
    studies.mkdir()
    for seed in range(3):
        save_phantom(make_phantom(seed, **PHANTOM), studies / f"case{seed}.nii.gz", root / f"truth{seed}.nii.gz")
    (root / "model").mkdir()
    universal.save_model(tiny_model(CLASSES), root / "model" / "clip_driven_universal_unet.pth")
    model_history(root / "model")
    with running_team(root, studies, root / "model", random_clip_weights, PEOPLE, lead="lead") as running:
        status = running["server"].batch_infer(json={"images": "all"})
        assert status["status"] == "DONE", status
        liver, spleen = truth(root, 0, "Liver"), truth(root, 0, "Spleen")
        save(running, "ann1", "case0", {"Liver": liver, "Spleen": spleen}, root)
        save(running, "ann2", "case0", {"Liver": liver | np.roll(liver, 2, axis=0), "Spleen": spleen}, root)
        save(running, "ann1", "case1", {"Liver": truth(root, 1, "Liver")}, root)
        reviewed = running["rev"]("POST", "/universal/review/case1", json={"classes": {"Liver": "approved"}})
        assert reviewed.status_code == 200, reviewed.text
        yield running


def truth(root, seed: int, name: str) -> np.ndarray:
    labels = np.asarray(nib.load(root / f"truth{seed}.nii.gz").dataobj)
    return labels == universal.Catalog.default()[name].id


def test_the_dashboard_shows_the_api_numbers_offline(team, tmp_path):
    from selenium.webdriver.common.by import By

    server = team["server"]
    expected = server.get("/universal/overview").json()
    assert expected["progress"]["images"] == {"unlabelled": 0, "predicted": 1, "corrected": 1, "approved": 1}

    with headless_chromium(tmp_path / "chromium", size="1400,1000") as driver:
        started = time.perf_counter()
        driver.get(f"{server.url}/universal/dashboard")
        wait_until(lambda: driver.find_element(By.ID, "login").is_displayed(), 30, "the token form")
        asked = time.perf_counter() - started
        driver.find_element(By.ID, "token").send_keys(team["tokens"]["lead"])
        started = time.perf_counter()
        driver.find_element(By.CSS_SELECTOR, "#login button").click()
        wait_until(lambda: driver.execute_script("return document.body.dataset.loaded === 'true'"), 30, "the page",
                   interval=0.05)
        wait_until(lambda: driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"), 30, "the previews",
            interval=0.05)
        loaded = time.perf_counter() - started

        def texts(selector):
            return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]

        def rows(table):  # the cells' texts, below the heading
            return driver.execute_script(
                "return [...document.querySelectorAll(`#${arguments[0]} tr`)].slice(1)"
                ".map(r => [...r.cells].map(c => c.textContent))", table)

        progress = expected["progress"]
        assert texts("[data-count]") == [f"{s}: {n}" for s, n in progress["images"].items()]
        assert [r[0] for r in rows("classes")] == list(progress["classes"])
        assert [r[1:] for r in rows("classes")] == [
            [str(c.get(s, 0)) for s in ("predicted", "corrected", "approved", "rejected")]
            for c in progress["classes"].values()]
        shown = {r[0]: r[1:3] for r in rows("annotator-table")}
        assert shown == {name: [str(e["images"]), str(e["versions"])] for name, e in expected["annotators"].items()}
        assert set(shown) == {"ann1", "ann2"}
        assert [r[0] for r in rows("agreement-table")] == list(expected["agreement"]) == ["Liver", "Spleen"]
        assert [r[1] for r in rows("agreement-table")] == [
            f"{a['mean_dice']:.3f}" if a["mean_dice"] != 1 else "1" for a in expected["agreement"].values()]
        assert [e.get_attribute("data-image") for e in driver.find_elements(By.CSS_SELECTOR, ".finding")] == [
            item["image"] for item in expected["findings"]]
        assert len(driver.find_elements(By.CSS_SELECTOR, ".finding img")) == sum(
            "preview" in item for item in expected["findings"])
        plotted = driver.find_elements(By.CSS_SELECTOR, "#versions-plot circle")
        assert len(plotted) == sum(len(v["gate_dice"]) for v in expected["versions"]) == 6
        assert [e.get_attribute("data-run") for e in driver.find_elements(By.CSS_SELECTOR, "[data-run]")] == [
            run["run"] for run in expected["runs"]]

        urls = requested_urls(driver, server.url)
        leaving = [url for url in urls if urlsplit(url).scheme not in ("blob", "data")
                   and not url.startswith(server.url + "/")]
        assert f"{server.url}/universal/dashboard.js" in urls and not leaving, leaving

        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, height + 40)
        driver.save_screenshot(str(artefacts() / "dashboard.png"))
    print(f"dashboard: the token form in {asked:.2f} s, then every number and preview {loaded:.2f} s after "
          f"the token was given; {len(urls)} requests, all to the server")


def test_the_lead_exports_the_dataset_from_the_server(team, tmp_path, capsys):
    refused = team["ann1"]("GET", "/universal/export")
    assert refused.status_code == 403, refused.text  # the dataset leaves with an admin
    wrong = team["lead"]("GET", "/universal/export", params={"format": "nnunet1"})
    assert wrong.status_code == 422 and "nnunetv2" in wrong.json()["detail"]
    for hostile, named in (({"images": "../../etc/passwd"}, "no image"), ({"name": "../elsewhere"}, "name"),
                           ({"dataset_id": 5000}, "1-999"), ({"classes": "Liver,Nonsense"}, "Nonsense"),
                           ({"labels": "everything"}, "labels")):
        answer = team["lead"]("GET", "/universal/export", params=hostile)
        assert answer.status_code == 422 and named in answer.json()["detail"], (hostile, answer.text)
    assert team["ann1"]("GET", "/universal/preview/..%2F..%2Fsecret").status_code in (404, 422)

    assert main(["export", team["server"].url, "-o", str(tmp_path / "out"), "--token", team["tokens"]["lead"],
                 "--name", "Team", "--dataset-id", "7"]) == 0
    dataset = tmp_path / "out" / "Dataset007_Team"
    described = json.loads((dataset / "dataset.json").read_text())
    assert described["labels"] == {"background": 0, "Liver": 1, "Spleen": 2} and described["numTraining"] == 2
    liver = np.asarray(nib.load(dataset / "labelsTr" / "case1.nii.gz").dataobj) == 1
    assert np.array_equal(liver, truth(team["root"], 1, "Liver"))  # ann1's label, as submitted
    with (dataset / "provenance.csv").open(newline="") as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert rows["case0"]["annotators"] == "ann1;ann2" and float(rows["case0"]["lowest_dice"]) < 1
    assert "Liver=approved" in rows["case1"]["states"].split(";") and rows["case1"]["prelabel_model_version"] == "2"
    assert "exported from" in capsys.readouterr().out

    assert main(["export", team["server"].url, "-o", str(tmp_path / "again"), "--token", team["tokens"]["ann1"]]) == 2
    assert "the server answered 403" in capsys.readouterr().err and not (tmp_path / "again").exists()
