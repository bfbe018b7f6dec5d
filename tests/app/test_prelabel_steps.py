"""The background pre-labelling of one image steps aside before each of its steps, not only before
each window: reading, preparing, post-processing and keeping the answer each wait for interactive
requests; a new model's int8 trunk is calibrated in the background, window by window, once int8 was
asked for, and a request that needs it meanwhile waits for it without stopping it."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from app_server import APP
from conftest import missing_in_ci
from tiny import PHANTOM, tiny_model

import universal
from universal.inference.stages import CasePlan
from universal.nets.openvino import CALIBRATION_WINDOWS, CHECK_WINDOWS
from universal.synth import make_phantom, save_phantom

sys.path.insert(0, str(APP))
from lib.conf import AppConf
from lib.prelabel import AppPrelabel
from lib.state import AppState


class Images:
    """The one call of a datastore that segmenting an image needs."""

    def __init__(self, uris: dict[str, str]):
        self.uris = uris

    def get_image_uri(self, image_id: str) -> str:
        return self.uris[image_id]


def test_every_step_of_a_background_segmentation_waits_for_interactive_requests(tmp_path, monkeypatch):
    save_phantom(make_phantom(0, **PHANTOM), tmp_path / "case0.nii.gz")
    universal.save_model(tiny_model(), tmp_path / "model" / "clip_driven_universal_unet.pth")
    state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), download=False), tmp_path / "team")
    images = Images({"case0": str(tmp_path / "case0.nii.gz")})
    prelabel = AppPrelabel(state, lambda: images, enabled=False)
    prelabel.settings = replace(prelabel.settings, compile="off", runtime="torch")  # steps, not runtimes
    steps = []

    def logged(name, function):
        def run(*args, **kwargs):
            steps.append(name)
            return function(*args, **kwargs)
        return run

    monkeypatch.setattr(universal, "read_scan", logged("read", universal.read_scan))
    monkeypatch.setattr(CasePlan, "prepare", logged("prepare", CasePlan.prepare))
    monkeypatch.setattr(CasePlan, "finish", logged("finish", CasePlan.finish))
    monkeypatch.setattr(prelabel.cache, "put", logged("keep", prelabel.cache.put))
    monkeypatch.setattr(universal.Segmenter, "window_logits", logged("window", universal.Segmenter.window_logits))

    key = prelabel.cache.key(images.uris["case0"], prelabel.model_name(), prelabel.settings)
    prelabel.compute("case0", key, lambda: steps.append("wait"))

    assert key in prelabel.cache and steps.count("window") > 1
    named = [step for step in steps if step != "wait"]
    assert named[:2] == ["read", "prepare"] and named[-2:] == ["finish", "keep"]
    for index, step in enumerate(steps):
        if step != "wait":
            assert steps[index - 1] == "wait", steps  # each step right after a wait


def test_a_new_models_int8_trunk_is_calibrated_in_the_background_and_a_request_waits_for_it(tmp_path, monkeypatch):
    try:
        import nncf
    except ImportError:
        missing_in_ci("OpenVINO and NNCF (pip install 'universal-model[openvino]')")
    universal.save_model(tiny_model(), tmp_path / "model" / "clip_driven_universal_unet.pth")
    state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), download=False), tmp_path / "team")
    prelabel = AppPrelabel(state, lambda: Images({}), enabled=False)
    gate, steps = prelabel.gate, []

    def before_step():  # as the background worker steps aside
        steps.append(1)
        gate.wait_until_idle()

    prelabel.prepare_int8(before_step)
    assert not steps and prelabel.int8_prepared == {}  # nobody asked for int8: nothing calibrated
    prelabel.int8_wanted = True
    model, _ = state.serving("cpu")
    background = threading.Thread(target=prelabel.prepare_int8, args=(before_step,))
    answered = []

    def request():  # an int8 request that arrives first and waits for the background's calibration
        with gate.interactive():
            background.start()
            deadline = time.monotonic() + 120
            while not steps and time.monotonic() < deadline:  # converted, at its first window
                time.sleep(0.01)
            time.sleep(0.3)
            answered.append(len(steps))  # where it waits while the request runs
            prelabel.int8_trunk(model)
            answered.append(prelabel.int8_prepared[prelabel.model_name()])

    asking = threading.Thread(target=request)
    asking.start()
    asking.join(300)
    background.join(60)
    assert answered == [1, "ready"] and len(steps) >= CALIBRATION_WINDOWS + CHECK_WINDOWS

    def quantize_again(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(nncf, "quantize", quantize_again)
    prelabel.int8_trunk(model)  # ready: no calibration
    prelabel.prepare_int8(before_step)  # once per model


def test_the_background_int8_calibration_waits_out_a_fine_tuning_and_stops_for_a_new_model(tmp_path, monkeypatch):
    import lib.prelabel

    universal.save_model(tiny_model(), tmp_path / "model" / "clip_driven_universal_unet.pth")
    state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), download=False), tmp_path / "team")
    prelabel = AppPrelabel(state, lambda: Images({}), enabled=False)
    prelabel.int8_wanted = True
    steps, fine_tuning = [], iter([True, True])  # a fine-tuning runs for two looks, then ends

    def convert(model, precision, calibration):  # the conversion reads its calibration windows one by one
        for _ in calibration(model.input_spec, 3, 0):
            steps.append("window")

    monkeypatch.setattr(lib.prelabel, "openvino_trunk", convert)
    monkeypatch.setattr(lib.prelabel, "TRAINING_POLL_S", 0.0)
    monkeypatch.setattr(prelabel, "training", lambda: next(fine_tuning, False))
    prelabel.prepare_int8(lambda: steps.append("wait"))
    assert steps[:3] == ["wait", "wait", "wait"] and steps[3:] == ["window", "wait"] * 2 + ["window"]
    assert prelabel.int8_prepared == {prelabel.model_name(): "ready"}

    published = prelabel.model_name()
    monkeypatch.setattr(prelabel, "model_name", lambda: "a newer model")
    with pytest.raises(lib.prelabel.Cancelled):  # work for a replaced model stops
        prelabel.stepping_aside(published, lambda: None)()


def test_once_int8_is_ready_each_image_is_pre_labelled_in_int8_too_and_an_int8_request_finds_it(tmp_path):
    try:
        import nncf  # noqa: F401
    except ImportError:
        missing_in_ci("OpenVINO and NNCF (pip install 'universal-model[openvino]')")
    save_phantom(make_phantom(0, **PHANTOM), tmp_path / "case0.nii.gz")
    universal.save_model(tiny_model(), tmp_path / "model" / "clip_driven_universal_unet.pth")
    state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), download=False), tmp_path / "team")
    image = str(tmp_path / "case0.nii.gz")
    images = Images({"case0": image})
    images.get_unlabeled_images = lambda: ["case0"]
    images.get_image_info = lambda image_id: {}
    prelabel = AppPrelabel(state, lambda: images, enabled=False)
    int8 = replace(prelabel.settings, precision="int8")
    assert len(list(prelabel.pending())) == 1  # nobody asked for int8: the default answer only

    prelabel.int8_wanted = True
    assert len(list(prelabel.pending())) == 1  # asked for, not yet ready
    prelabel.prepare_int8(lambda: None)
    pending = list(prelabel.pending())
    assert [image_id for image_id, _ in pending] == ["case0", "case0"] and pending[0][1] != pending[1][1]
    for image_id, key in pending:
        prelabel.compute(image_id, key, lambda: None)

    kept = prelabel.lookup(image, int8)
    assert kept is not None and kept.report["settings"]["precision"] == "int8"
    assert prelabel.lookup(image, prelabel.settings).report["settings"]["precision"] != "int8"
    model, _ = state.serving("cpu")
    fresh = universal.Segmenter(model, int8, progress=False)(universal.read_scan(image))
    assert np.array_equal(kept.label_map, fresh.label_map)  # the answer a fresh int8 request computes


def test_that_an_annotator_asked_for_int8_is_remembered_over_a_restart(tmp_path, monkeypatch):
    import lib.prelabel

    monkeypatch.setattr(lib.prelabel, "openvino_trunk", lambda *args, **kwargs: None)  # converting: tests above
    state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), download=False), tmp_path / "team")
    before = AppPrelabel(state, lambda: Images({}), enabled=False)
    assert not before.int8_wanted
    before.int8_trunk(tiny_model())
    assert before.int8_wanted and AppPrelabel(state, lambda: Images({}), enabled=False).int8_wanted
