"""Compiled trunks and heads: the same answer as eager code, fresh weights after fine-tuning, a head's
output the same alone or with others, and a fallback to eager code when compilation fails."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import torch

from universal import InferenceSettings, InputSpec, Scan, Segmenter, UniversalModel
from universal.nets.compiled import CompiledHeads, compiled_trunk
from universal.nets.heads import HEAD_CHANNELS, pointwise_heads, run_heads
from universal.synth import make_phantom


def small_model() -> UniversalModel:
    torch.manual_seed(0)
    return UniversalModel("unet", width=8, class_embeddings=torch.randn(32, 512),
                          input_spec=InputSpec(spacing=(8.0, 8.0, 8.0), window_size=(32, 32, 32))).eval()


def test_compiled_trunk_matches_eager_and_recompiles_when_weights_change():
    model = small_model()
    window = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        compiled = compiled_trunk(model)
        for ours, eager in zip(compiled(window), model.trunk(window), strict=True):
            torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-4)
        assert compiled.active and compiled_trunk(model) is compiled  # shared while weights stay
        model.add_class("Appendix", embedding=torch.randn(512))
        assert compiled_trunk(model) is compiled  # a new class leaves the trunk as it is
        with torch.no_grad():
            for parameter in model.backbone.parameters():
                parameter.mul_(1.1)  # as an optimiser step would, in place
        recompiled = compiled_trunk(model)
        assert recompiled is not compiled
        for ours, eager in zip(recompiled(window), model.trunk(window), strict=True):
            torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-4)


def test_a_dropped_model_and_its_compiled_trunk_are_freed():
    model = small_model()
    with torch.inference_mode():
        compiled_trunk(model)(torch.rand(1, 1, 32, 32, 32))
    dropped = weakref.ref(model)
    del model
    gc.collect()
    assert dropped() is None  # a server that loads each fine-tuned version does not keep the old ones


def test_fused_heads_equal_the_batched_heads_and_each_head_is_the_same_alone_or_with_others():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(2, HEAD_CHANNELS, 12, 10, 8, generator=generator)
    params = torch.randn(2, 33, 153, generator=generator) * 0.4
    heads = CompiledHeads()
    with torch.inference_mode():
        together = heads(features, params)
        torch.testing.assert_close(together, run_heads(features, params), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pointwise_heads(features, params), run_heads(features, params), rtol=1e-5,
                                   atol=1e-5)
        for chosen in ([5], [0, 31], list(range(32))):
            assert torch.equal(heads(features, params[:, chosen]), together[:, chosen]), chosen
        assert torch.equal(heads(features[:1], params[:1]), together[:1])  # one sample of the batch
    assert heads.active


def test_recompiling_a_trunk_keeps_other_compiled_code():
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    other = torch.compile(lambda x: torch.relu(x) * 2, backend=counter)
    x = torch.rand(8)
    other(x)
    model = small_model()
    window = torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode():
        compiled_trunk(model)(window)
        with torch.no_grad():
            model.backbone.down_tr64.ops[0].conv1.weight.mul_(1.1)
        compiled_trunk(model)(window)
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


def test_a_failed_compilation_falls_back_to_eager_code(monkeypatch, caplog):
    def broken_compiler(module, **options):
        def run(*args):
            raise RuntimeError("no C++ compiler found\nlong trace")
        return run

    monkeypatch.setattr(torch, "compile", broken_compiler)
    model = small_model()
    window = torch.rand(1, 1, 32, 32, 32)
    features, params = torch.randn(1, HEAD_CHANNELS, 4, 4, 4), torch.randn(1, 3, 153)
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="universal.nets.compiled"):
        trunk, heads = compiled_trunk(model), CompiledHeads()
        torch.testing.assert_close(trunk(window)[1], model.trunk(window)[1])
        torch.testing.assert_close(heads(features, params), run_heads(features, params))
    assert not trunk.active and not heads.active
    assert "compiling the trunk failed, so it runs uncompiled: no C++ compiler found" in caplog.text
    assert "compiling the heads failed, so they run uncompiled: no C++ compiler found" in caplog.text
