"""Fine-tuning behind the gate, as the app's train task runs it (tiny model, three annotated phantoms)."""

from __future__ import annotations

import json

import numpy as np
from tiny import PHANTOM, tiny_model

import universal
from universal.catalog import Catalog
from universal.io.labels import write_label_file
from universal.serving.annotations import read_annotation
from universal.serving.finetune import FinetuneSettings, finetune
from universal.serving.model_store import ModelStore
from universal.synth import make_phantom, save_phantom


def test_finetuning_publishes_a_new_version_and_keeps_the_held_out_images_apart(tmp_path):
    store = ModelStore(tmp_path / "model")
    source = universal.save_model(tiny_model(), tmp_path / "start.pt")
    annotations = []
    for seed in range(3):
        phantom = make_phantom(seed, **PHANTOM)
        save_phantom(phantom, tmp_path / f"case{seed}.nii.gz")
        label = np.where(phantom.label == Catalog.default()["Liver"].id, 1, 0).astype(np.uint8)
        write_label_file(label, phantom.affine, tmp_path / f"label{seed}.nii.gz")
        annotations.append(read_annotation(f"case{seed}", tmp_path / f"case{seed}.nii.gz",
                                           tmp_path / f"label{seed}.nii.gz", [{"name": "Liver", "idx": 1}],
                                           tiny_model().catalog))
    result = finetune(store, source, annotations, FinetuneSettings(epochs=1, device="cpu", tolerance=1.0))
    assert result.published and result.version == 1 and store.index()["current"] == 1
    assert result.held_out_cases and not set(result.held_out_cases) & set(result.training_cases)
    assert sorted(result.held_out_cases + result.training_cases) == ["case0", "case1", "case2"]
    assert "Liver" in result.decision.before and json.loads(json.dumps(result.to_record()))["version"] == 1
    assert universal.load_model(store.current_path).catalog.names == tiny_model().catalog.names
