"""Uncertainty and tumour suspicion of a scan: one pass, scores in their ranges."""

from __future__ import annotations

import numpy as np
from tiny import PHANTOM, tiny_model

from universal import InferenceSettings, Scan, Segmenter
from universal.inference.uncertainty import score_scan
from universal.synth import make_phantom


def test_scores_are_entropies_and_lesion_volumes():
    model = tiny_model(["Liver", "Spleen", "Liver Tumor"])
    phantom = make_phantom(3, lesions=True, **PHANTOM)
    scan = Scan(phantom.image.astype(np.float32), phantom.affine, "case")
    score = score_scan(Segmenter(model, InferenceSettings(overlap=0.0, device="cpu"), progress=False), scan)
    assert set(score.entropy) == {"Liver", "Spleen", "Liver Tumor"}
    assert all(0.0 <= value <= 1.0 for value in score.entropy.values())
    assert score.score == max(score.entropy.values()) == score.entropy[score.top_class]
    assert set(score.lesion_ml) == {"Liver Tumor"} and score.lesion_score == score.lesion_ml["Liver Tumor"] >= 0
    assert 0.0 <= score.lesion_probability <= 1.0
    only = score_scan(Segmenter(model, InferenceSettings(overlap=0.0, device="cpu"), progress=False), scan, ["liver"])
    assert set(only.entropy) == {"Liver"} and only.lesion_ml == {}
