"""First contact on a machine without the released weights and without network: the demo model
(built by ``universal demo-model``, as ``scripts/serve.sh`` does) is served, announced as a model for
synthetic images in the log, ``/info`` and every answer, and the released weights replace it as soon
as they are there."""

from __future__ import annotations

import contextlib
import io

from app_server import start_server
from tiny import PHANTOM, tiny_model

import universal
from universal.cli import main
from universal.synth import make_phantom, save_phantom
from universal.synth.demo import find_demo_model

RELEASED = "clip_driven_universal_unet.pth"


def demo_model(*arguments: str) -> str:
    """What ``universal demo-model ARGUMENTS`` prints."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo-model", *arguments, "--quiet"]) == 0
    return printed.getvalue().strip()


def test_the_demo_model_is_served_and_announced_until_the_released_weights_are_there(tmp_path, random_clip_weights):
    model_dir = tmp_path / "model"
    built = demo_model(str(tmp_path / "demo" / "model.pt"), "--unless-weights", str(model_dir), "--steps", "20")
    assert built == str(tmp_path / "demo" / "model.pt") and find_demo_model(built)
    assert demo_model(built) == built  # kept: not built again
    studies = tmp_path / "studies"
    studies.mkdir()
    save_phantom(make_phantom(0, **PHANTOM), studies / "phantom.nii.gz")
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(tmp_path / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    server = start_server(tmp_path, studies, {"model_dir": str(model_dir), "demo_model": built}, env)
    try:
        described = server.get("/info/").json()["universal"]
        assert described["ready"] and described["demo"] and "synthetic images only" in described["warning"]
        assert "demo model trained on synthetic phantoms" in server.log_text()
        answer = server.post("/infer/universal", params={"image": "phantom", "output": "json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["demo"] and "synthetic images only" in answer.json()["model"]["warning"]
        assert "Liver" in answer.json()["label_names"]

        universal.save_model(tiny_model(), model_dir / RELEASED)  # the released weights arrive
        described = server.get("/info/").json()["universal"]
        assert described["ready"] and not described["demo"] and described["warning"] is None
        assert described["weights"] == str(model_dir / RELEASED)
        answer = server.post("/infer/universal", params={"image": "phantom", "output": "json"})
        assert not answer.json()["model"]["demo"] and answer.json()["model"]["weights"] == str(model_dir / RELEASED)
    finally:
        server.stop()
    assert demo_model("--unless-weights", str(model_dir)) == ""  # weights there: no demo model needed
    (tmp_path / "demo" / "model.pt").write_bytes(b"damaged")
    assert find_demo_model(built) is None  # its digest no longer holds: built again when asked for
