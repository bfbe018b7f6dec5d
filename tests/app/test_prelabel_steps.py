"""The background pre-labelling of one image steps aside before each of its steps, not only before
each window: reading, preparing, post-processing and keeping the answer each wait for interactive
requests."""

from __future__ import annotations

import sys
from dataclasses import replace

from app_server import APP
from tiny import PHANTOM, tiny_model

import universal
from universal.inference.stages import CasePlan
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
