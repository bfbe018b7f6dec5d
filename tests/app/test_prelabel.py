"""Pre-labelling in the background on the real server: while idle it segments the unlabelled images,
``/infer`` then answers from its cache with the same file a fresh inference gives, ``/info`` tells
its state, and its work survives a restart; once int8 was asked for, it keeps the int8 trunk ready."""

from __future__ import annotations

import json

import pytest
from app_server import start_server, wait_until
from requests_toolbelt.multipart.decoder import MultipartDecoder
from tiny import PHANTOM, tiny_model

import universal
from universal.nets.openvino import int8_available
from universal.synth import make_phantom, save_phantom

IMAGES = ("case0", "case1")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, random_clip_weights):
    root = tmp_path_factory.mktemp("prelabel")
    studies = root / "studies"
    studies.mkdir()
    for seed, image in enumerate(IMAGES):
        save_phantom(make_phantom(seed, **PHANTOM), studies / f"{image}.nii.gz")
    (root / "model").mkdir()
    universal.save_model(tiny_model(), root / "model" / "clip_driven_universal_unet.pth")
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    return root, studies, env


def serve(folders, prelabel: str):
    root, studies, env = folders
    return start_server(root, studies, {"model_dir": str(root / "model"), "prelabel": prelabel}, env)


def infer(server, image: str) -> tuple[bytes, dict]:
    """The answer's file, as sent, and its JSON part."""
    answer = server.post("/infer/universal", params={"image": image, "output": "all"},
                         data={"params": json.dumps({"result_extension": ".nii.gz"})})
    assert answer.status_code == 200, answer.text[:300]
    parts = {}
    for part in MultipartDecoder.from_response(answer).parts:
        name = "params" if 'name="params"' in part.headers[b"Content-Disposition"].decode() else "file"
        parts[name] = part.content
    return parts["file"], json.loads(parts["params"])


def status(server) -> dict:
    return server.get("/info/").json()["models"]["universal"]["prelabel"]


def test_prelabelled_answers_are_the_fresh_answers_and_survive_a_restart(folders):
    server = serve(folders, "false")
    try:
        assert status(server) == {"enabled": False}
        fresh = {image: infer(server, image) for image in IMAGES}
    finally:
        server.stop()
    assert not any(params["latencies"]["pre_labelled"] for _, params in fresh.values())

    server = serve(folders, "true")
    try:
        found = wait_until(lambda: (lambda s: s if s["cached"] == 2 and s["queued"] == 0 and not s["current"]
                                    else None)(status(server)), 180, "both images pre-labelled")
        assert found["enabled"] and found["done"] == 2 and found["failed"] == 0
        kept = sorted(p.name for p in folders[0].rglob("prelabel-cache/*/encoded.*"))
        assert kept == ["encoded.nii.gz"] * 2  # each answer also kept as the file it is sent as
        for image in IMAGES:
            answer, params = infer(server, image)
            assert params["latencies"]["pre_labelled"], params["latencies"]
            assert answer == fresh[image][0]  # the same file, byte for byte
            assert params["label_names"] == fresh[image][1]["label_names"]
            assert params["report"]["findings"] == fresh[image][1]["report"]["findings"]
    finally:
        server.stop()

    server = serve(folders, "true")
    try:
        wait_until(lambda: status(server)["cached"] == 2, 30, "the cache read back")
        assert infer(server, "case1")[1]["latencies"]["pre_labelled"]
        assert status(server)["done"] == 0  # nothing computed again
        if int8_available():  # once asked for, the background keeps the model's int8 trunk ready
            assert status(server)["int8"] == "not asked"
            asked = server.post("/infer/universal", params={"image": "case0", "output": "json"},
                                data={"params": json.dumps({"precision": "int8"})})
            assert asked.status_code == 200, asked.text[:300]
            wait_until(lambda: status(server)["int8"] == "ready", 60, "the int8 trunk kept ready")
    finally:
        server.stop()
