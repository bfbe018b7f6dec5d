"""The runtime table: which trunk and heads ``auto`` takes for a model, a device, a precision and the
work ahead, and what it asks for when int8 has nothing to calibrate on."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from universal import InferenceSettings, InputSpec, UniversalModel
from universal.errors import UniversalError
from universal.nets import runtime as runtime_module
from universal.nets.runtime import COMPILE_MIN_WINDOWS, choose_runtime, choose_trunk, released_windows

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def small_model() -> UniversalModel:
    return UniversalModel("unet", width=8, input_spec=InputSpec(spacing=(8.0,) * 3, window_size=(32, 32, 32)))


def test_a_window_of_work_is_counted_in_released_size_windows():
    assert released_windows(UniversalModel("unet")) == 1
    assert released_windows(small_model()) == pytest.approx(1 / 432)  # width 8 of 32, 32³ of 96³


def test_auto_compiles_a_bfloat16_unet_on_the_cpu_for_enough_work(monkeypatch):
    monkeypatch.setattr(runtime_module, "openvino_available", lambda: False)
    released, swin, small = UniversalModel("unet"), UniversalModel("swinunetr"), small_model()
    many = COMPILE_MIN_WINDOWS
    assert choose_trunk(released, CPU, torch.bfloat16, many) == "compiled"
    assert choose_trunk(released, CPU, torch.bfloat16, many - 1) == "torch"
    assert choose_trunk(released, CPU, torch.float32, many) == "torch"
    assert choose_trunk(swin, CPU, torch.bfloat16, many) == "torch"  # minutes of compilation
    assert choose_trunk(released, CUDA, torch.bfloat16, many) == "torch"
    assert choose_trunk(small, CPU, torch.bfloat16, many) == "torch"  # 1/432 of the work
    assert choose_trunk(small, CPU, torch.bfloat16, many * 432) == "compiled"
    assert choose_trunk(small, CPU, torch.float32, 1, compile="on") == "compiled"
    assert choose_trunk(released, CPU, torch.bfloat16, many, compile="off") == "torch"
    with pytest.raises(UniversalError, match="compile must be auto, on, off"):
        InferenceSettings(compile="yes")


def test_auto_takes_openvino_for_a_bfloat16_unet_on_native_bfloat16_with_enough_work(monkeypatch):
    released, small = UniversalModel("unet"), small_model()
    monkeypatch.setattr(runtime_module, "cpu_has_native_bfloat16", lambda: True)  # AMX or AVX-512 BF16
    monkeypatch.setattr(runtime_module, "openvino_available", lambda: True)
    assert choose_trunk(released, CPU, torch.bfloat16, 16) == "openvino"
    assert choose_trunk(released, CPU, torch.bfloat16, 15) == "torch"  # too little work for a conversion
    assert choose_trunk(small, CPU, torch.bfloat16, 16) == "torch"
    assert choose_trunk(released, CPU, torch.float32, 99) == "torch"
    assert choose_trunk(UniversalModel("swinunetr"), CPU, torch.bfloat16, 99) == "torch"
    assert choose_trunk(small, CPU, torch.float32, 1, precision="int8") == "openvino"
    assert choose_trunk(released, CPU, torch.bfloat16, 99, runtime="torch") == "compiled"
    monkeypatch.setattr(runtime_module, "openvino_available", lambda: False)  # not installed: compiled torch
    assert choose_trunk(released, CPU, torch.bfloat16, 99) == "compiled"
    monkeypatch.setattr(runtime_module, "openvino_available", lambda: True)
    monkeypatch.setattr(runtime_module, "cpu_has_native_bfloat16", lambda: False)  # emulated: compiled torch
    assert choose_trunk(released, CPU, torch.bfloat16, 99) == "compiled"
    with pytest.raises(UniversalError, match="runs on the CPU, not cuda"):
        choose_trunk(released, CUDA, torch.float16, 99, runtime="openvino")


def test_eager_runs_the_models_own_trunk_and_int8_without_calibration_says_what_to_pass(monkeypatch):
    model = tiny_model()
    chosen = choose_runtime(model, CPU, torch.float32, 1)
    assert chosen.name == "torch" and not chosen.compiled and chosen.agreement is None
    window = torch.rand(1, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(chosen.trunk(window)[1], model.trunk(window)[1])
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    with pytest.raises(UniversalError, match=r"calibration=universal\.synth\.calibration_windows"):
        choose_runtime(model, CPU, torch.float32, 1, precision="int8")
