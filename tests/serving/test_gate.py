"""The regression gate: a fine-tuned model that lost an old class is not published."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import PHANTOM, tiny_model

import universal
from universal.catalog import Catalog
from universal.io.labels import write_label_file
from universal.serving.annotations import annotation_datalist, read_annotation
from universal.serving.gate import regression_gate
from universal.synth import make_phantom, save_phantom


def constant_model(logit: float) -> universal.UniversalModel:
    """The tiny model with every class's generated head reduced to a constant ``logit``."""
    model = tiny_model()
    with torch.no_grad():
        model.controller.weight.zero_()
        model.controller.bias.zero_()
        model.controller.bias[-1] = logit  # the last generated value is the output layer's bias
    return model


@pytest.fixture
def one_thread():
    """One compute thread, as the server's processes use (on a couple of shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_regression_gate_refuses_a_model_that_lost_an_old_class(tmp_path, one_thread):
    phantom = make_phantom(0, **PHANTOM)
    save_phantom(phantom, tmp_path / "image.nii.gz")
    label, info = np.zeros(phantom.label.shape, np.uint8), [{"name": "Liver", "idx": 1}]
    label[phantom.label == Catalog.default()["Liver"].id] = 1
    write_label_file(label, phantom.affine, tmp_path / "label.nii.gz")
    annotation = read_annotation("case", tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", info,
                                 tiny_model().catalog)
    held_out = annotation_datalist([annotation], held_out=["case"])
    everything, nothing = constant_model(10.0), constant_model(-10.0)

    refused = regression_gate(everything, nothing, held_out, tolerance=0.01, device="cpu")
    assert refused.before["Liver"] > 0.01 and refused.after["Liver"] == 0.0
    assert not refused.publish and refused.worse == ["Liver"]
    assert "keep the previous model" in refused.summary() and "Liver" in refused.summary()
    assert regression_gate(nothing, everything, held_out, device="cpu").publish  # better: published
    lenient = regression_gate(everything, nothing, held_out, tolerance=1.0, device="cpu")
    assert lenient.publish and lenient.before == refused.before
    unchecked = regression_gate(everything, nothing, annotation_datalist([annotation]), device="cpu")
    assert unchecked.publish and "without a check" in unchecked.reason  # no held-out evidence
