"""The trunk on OpenVINO: the same values as torch, converted once per weights and cached on disk,
rebuilt when the weights change; int8 opt-in with its measured agreement; and the runtime that
``auto`` picks on each kind of CPU."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from conftest import missing_in_ci
from tiny import PHANTOM, tiny_model

import universal
from universal import InferenceSettings, Segmenter
from universal.errors import UniversalError
from universal.io.download import cache_dir
from universal.nets import openvino as openvino_module
from universal.nets.openvino import openvino_trunk
from universal.synth import calibration_windows, make_phantom


@pytest.fixture(autouse=True)
def openvino_installed(monkeypatch):
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        missing_in_ci("OpenVINO and NNCF (pip install 'universal-model[openvino]')")
    monkeypatch.setattr(openvino_module, "_loaded", weakref.WeakKeyDictionary())  # each test: a new process


@pytest.fixture(scope="module")
def scan():
    phantom = make_phantom(3, **PHANTOM)
    return universal.Scan(phantom.image.astype(np.float32), phantom.affine, "phantom")


def conversions() -> list:
    return sorted((cache_dir() / "openvino").glob("*/info.json"))


def test_a_float32_openvino_trunk_equals_torch_and_is_converted_once_per_weights():
    model = tiny_model().eval()
    window = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    trunk = openvino_trunk(model, "float32")
    with torch.inference_mode():
        for ours, eager in zip(trunk(window), model.trunk(window), strict=True):
            torch.testing.assert_close(ours, eager, rtol=1e-3, atol=1e-3)
    assert len(conversions()) == 1 and openvino_trunk(model, "float32") is trunk
    again = openvino_trunk(tiny_model().eval(), "float32")  # the same weights in another model: from the cache
    assert again is not trunk and len(conversions()) == 1
    with torch.no_grad():
        model.backbone.down_tr64.ops[0].conv1.weight.mul_(1.1)  # fine-tuned in place
    changed = openvino_trunk(model, "float32")
    assert changed is not trunk and len(conversions()) == 2
    with torch.inference_mode():
        torch.testing.assert_close(changed(window)[1], model.trunk(window)[1], rtol=1e-3, atol=1e-3)


def test_openvino_segments_as_torch_does(scan):
    model = tiny_model()
    on_torch = Segmenter(model, InferenceSettings(precision="float32", runtime="torch"), progress=False)(scan)
    on_openvino = Segmenter(model, InferenceSettings(precision="float32", runtime="openvino"), progress=False)(scan)
    assert on_openvino.report["settings"]["runtime"] == "openvino"
    assert on_torch.report["settings"]["runtime"] == "torch"
    assert np.array_equal(on_openvino.label_map, on_torch.label_map)


def test_int8_is_calibrated_once_and_reports_its_agreement(scan, monkeypatch):
    model = tiny_model()
    int8 = InferenceSettings(precision="int8")
    result = Segmenter(model, int8, progress=False, calibration=calibration_windows)(scan)
    settings = result.report["settings"]
    assert settings["precision"] == "int8" and settings["runtime"] == "openvino"
    agreement = settings["int8_agreement"]
    assert 0 <= agreement["lowest_dice"] <= 1 and 0 <= agreement["flipped_percent"] <= 100
    (info,) = conversions()
    assert json.loads(info.read_text())["agreement"] == agreement
    assert layers_quantized(info.parent / "model.xml") == {"first": False, "middle": True, "last two": False,
                                                                "normalisations": False}

    import nncf

    def no_second_calibration(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(nncf, "quantize", no_second_calibration)
    monkeypatch.setattr(openvino_module, "_loaded", weakref.WeakKeyDictionary())  # a new process: the disk cache
    again = Segmenter(tiny_model(), int8, progress=False)(scan)  # no calibration needed now
    assert again.report["settings"]["int8_agreement"] == agreement
    assert np.array_equal(again.label_map, result.label_map)


def layers_quantized(xml) -> dict[str, bool]:
    """Whether an int8 trunk's convolutions (its first, its last two before the head input, the others)
    have int8 weights (dequantized by a Multiply, not a float Constant), and whether its normalisations'
    inputs come through a FakeQuantize."""
    import openvino

    operations = openvino.Core().read_model(str(xml)).get_ordered_ops()
    convolutions = [op for op in operations if op.get_type_name() == "Convolution"]
    last_two = [op for op in convolutions if any(part in op.get_friendly_name() for part in ("feature_head",
                                                                                             "up_tr64.ops.1"))]
    middle = [op for op in convolutions[1:] if op not in last_two]
    norms = [op for op in operations if op.get_type_name() in ("MVN", "GroupNormalization")]
    assert len(last_two) == 2 and middle and norms

    def int8_weights(op) -> bool:
        return op.input_value(1).get_node().get_type_name() != "Constant"

    return {"first": int8_weights(convolutions[0]), "middle": all(map(int8_weights, middle)),
            "last two": any(map(int8_weights, last_two)),
            "normalisations": any(op.input_value(0).get_node().get_type_name() == "FakeQuantize" for op in norms)}


def test_without_openvino_asking_for_it_says_how_to_install_it(scan, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(UniversalError, match=r"pip install 'universal-model\[openvino\]'"):
        Segmenter(tiny_model(), InferenceSettings(runtime="openvino"), progress=False)(scan)
    assert not openvino_module.openvino_available()
    with pytest.raises(UniversalError, match="int8 runs on OpenVINO"):
        InferenceSettings(precision="int8", runtime="torch")


def test_the_cache_keeps_the_conversions_used_last(tmp_path):
    for age in range(openvino_module.KEEP_CONVERSIONS + 3):
        folder = tmp_path / f"conversion{age}"
        folder.mkdir()
        (folder / "info.json").write_text("{}")
        os.utime(folder, (1000 - age, 1000 - age))  # conversion0 used last
    openvino_module.prune(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"conversion{age}" for age in
                                                                range(openvino_module.KEEP_CONVERSIONS))


def test_one_thread_converts_a_trunk_and_another_waits_for_it(monkeypatch):
    model = tiny_model().eval()
    building, built = threading.Event(), []
    real_build = openvino_module.build

    def slow_build(*args, **kwargs):
        building.set()
        time.sleep(0.5)  # long enough for the second caller to find it under way
        built.append(real_build(*args, **kwargs))

    monkeypatch.setattr(openvino_module, "build", slow_build)
    first = []
    converting = threading.Thread(target=lambda: first.append(openvino_trunk(model, "float32")))
    converting.start()
    assert building.wait(30)
    waited = []

    @contextlib.contextmanager
    def waiting():
        waited.append("entered")
        yield

    second = openvino_trunk(model, "float32", waiting=waiting)
    converting.join(30)
    assert first == [second] and len(built) == 1 and waited == ["entered"]
    assert openvino_trunk(model, "float32", waiting=waiting) is second and waited == ["entered"]  # no wait now
