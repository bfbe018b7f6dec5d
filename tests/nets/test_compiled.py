"""Compiled backbones: the same answer as the eager backbone, fresh weights after fine-tuning, and a
fallback to the eager backbone when compilation fails."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from universal import InferenceSettings, InputSpec, Scan, Segmenter, UniversalModel
from universal.errors import UniversalError
from universal.nets.compiled import COMPILE_MIN_WINDOWS, compiled_backbone, worth_compiling
from universal.synth import make_phantom


def small_model() -> UniversalModel:
    torch.manual_seed(0)
    return UniversalModel("unet", width=8, class_embeddings=torch.randn(32, 512),
                          input_spec=InputSpec(spacing=(8.0, 8.0, 8.0), window_size=(32, 32, 32))).eval()


def test_compiled_backbone_matches_eager_and_recompiles_when_weights_change():
    model = small_model()
    window = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        compiled = compiled_backbone(model.backbone)
        for ours, eager in zip(compiled(window), model.backbone(window), strict=True):
            torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-4)
        assert compiled.active and compiled_backbone(model.backbone) is compiled  # shared while weights stay
        with torch.no_grad():
            for parameter in model.backbone.parameters():
                parameter.mul_(1.1)  # as an optimiser step would, in place
        recompiled = compiled_backbone(model.backbone)
        assert recompiled is not compiled
        for ours, eager in zip(recompiled(window), model.backbone(window), strict=True):
            torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-4)


def test_recompiling_a_backbone_keeps_other_compiled_code():
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    other = torch.compile(lambda x: torch.relu(x) * 2, backend=counter)
    x = torch.rand(8)
    other(x)
    model = small_model()
    window = torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode():
        compiled_backbone(model.backbone)(window)
        with torch.no_grad():
            model.backbone.down_tr64.ops[0].conv1.weight.mul_(1.1)
        compiled_backbone(model.backbone)(window)
    other(x)
    assert counter.frame_count == 1  # the other function was not compiled again


def test_segmenter_gives_the_same_masks_compiled_and_reports_it():
    model = small_model()
    phantom = make_phantom(3, shape=(48, 48, 24), spacing=(6.4, 6.4, 10.0))
    scan = Scan(phantom.image.astype(np.float32), phantom.affine, "phantom")
    eager = Segmenter(model, InferenceSettings(precision="float32", compile="off"), progress=False)(scan)
    compiled = Segmenter(model, InferenceSettings(precision="float32", compile="on"), progress=False)(scan)
    assert compiled.report["settings"]["compiled"] and not eager.report["settings"]["compiled"]
    assert np.array_equal(compiled.label_map, eager.label_map)
    auto = Segmenter(model, InferenceSettings(precision="float32"), progress=False)(scan)
    assert not auto.report["settings"]["compiled"]  # float32: compiling does not pay


def test_auto_compiles_a_bfloat16_unet_on_the_cpu_for_enough_work():
    cpu, many = torch.device("cpu"), COMPILE_MIN_WINDOWS
    released, swin, small = UniversalModel("unet"), UniversalModel("swinunetr"), small_model()
    assert worth_compiling(released, cpu, torch.bfloat16, many)
    assert not worth_compiling(released, cpu, torch.bfloat16, many - 1)
    assert not worth_compiling(released, cpu, torch.float32, many)
    assert not worth_compiling(swin, cpu, torch.bfloat16, many)  # minutes of compilation
    assert not worth_compiling(released, torch.device("cuda"), torch.bfloat16, many)
    assert not worth_compiling(small, cpu, torch.bfloat16, many)  # width 8, 32³ windows: 1/432 of the work
    assert worth_compiling(small, cpu, torch.bfloat16, many * 432)
    with pytest.raises(UniversalError, match="compile must be auto, on, off"):
        InferenceSettings(compile="yes")


def test_a_failed_compilation_falls_back_to_the_eager_backbone(monkeypatch, caplog):
    def broken_compiler(module, **options):
        def run(x):
            raise RuntimeError("no C++ compiler found\nlong trace")
        return run

    monkeypatch.setattr(torch, "compile", broken_compiler)
    model = small_model()
    window = torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="universal.nets.compiled"):
        backbone = compiled_backbone(model.backbone)
        out = backbone(window)
        torch.testing.assert_close(out[1], model.backbone(window)[1])
    assert not backbone.active
    assert "compiling the backbone failed, so it runs uncompiled: no C++ compiler found" in caplog.text
