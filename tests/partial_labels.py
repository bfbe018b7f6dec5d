"""Phantom datasets with disjoint annotations and the learning recipe (the demo model's,
:mod:`universal.synth.demo`) trained on them, shared by the training and learning tests and
``bench/learning.py``.

``Organs`` annotates liver, spleen and stomach; ``Kidneys`` both kidneys as one value (a right/left
pair split by side); ``BothKidneys`` names "Kidneys", a class no model has yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import universal
from universal.cli import main
from universal.inference import InferenceSettings, Segmenter
from universal.io.scans import Scan
from universal.synth import PhantomDataset, make_phantom, write_datasets
from universal.synth.demo import LEARNING_RATE, PHANTOM, SPACING_MM, WARMUP_STEPS, WINDOW
from universal.synth.demo import STEPS as BASE_STEPS
from universal.training.datasets import DatasetTemplate, load_templates
from universal.training.metrics import dice

LIVER = ("Liver", "Hepatic Vessel")  # the phantom datasets draw the vessels as liver
TEMPLATES = """datasets:
  Organs:
    labels: {1: Liver, 2: Spleen, 3: Stomach}
  Kidneys:
    labels:
      1: [Right Kidney, Left Kidney]
  BothKidneys:
    description: both kidneys as one structure, a class no model has yet
    labels: {1: Kidneys}
"""

CASES_PER_DATASET = 8
UNSEEN_SEEDS = (9001, 9002)
LARGE_ORGANS = ("Liver", "Spleen", "Kidneys", "Stomach")
TRAINED = ("Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney")


def write_partial_datasets(root: Path, cases: int, **phantom) -> dict[str, Path]:
    """The three datasets under ``root`` (``cases`` patients each) and their templates file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "templates.yaml").write_text(TEMPLATES)
    templates = load_templates(root / "templates.yaml")
    both = PhantomDataset(DatasetTemplate("BothKidneys", {1: ("Right Kidney", "Left Kidney")}))  # labelled as a pair
    chosen = [PhantomDataset(templates["Organs"]), PhantomDataset(templates["Kidneys"]), both]
    folders = write_datasets(root, chosen, cases_per_dataset=cases, **phantom)
    return {"organs": folders[0], "kidneys": folders[1], "both": folders[2], "templates": root / "templates.yaml"}


def train_base(datasets: dict[str, Path], root: Path, embeddings: Path, *, seed: int = 0, threads: int = 2) -> Path:
    """Train the recipe's model from scratch through the CLI on the Organs and Kidneys datasets
    (class embeddings: the released file ``embeddings``); returns the run folder."""
    datalist = root / "datalist.json"
    assert main(["prepare", str(datasets["organs"]), str(datasets["kidneys"]), "--templates",
                 str(datasets["templates"]), "--validation-fraction", "0.25", "-o", str(datalist)]) == 0
    torch.set_num_threads(threads)
    arguments = ["train", str(datalist), "-o", str(root / "run"), "--width", "8", "--spacing", str(SPACING_MM),
                 "--window", *map(str, WINDOW), "--steps", str(BASE_STEPS), "--lr", str(LEARNING_RATE),
                 "--warmup-steps", str(WARMUP_STEPS),
                 "--checkpoint-every", "0", "--seed", str(seed), "--quiet"]
    with mock.patch.dict(os.environ, {"UNIVERSAL_TEXT_EMBEDDINGS": str(embeddings)}):
        assert main(arguments) == 0
    return root / "run"


def unseen_cases() -> list[tuple[Scan, dict[str, np.ndarray]]]:
    """Patients no dataset holds: (scan, truth masks by class name, "Kidneys" both sides)."""
    cases = []
    for seed in UNSEEN_SEEDS:
        phantom = make_phantom(seed, **PHANTOM)
        ids = universal.Catalog.default()
        truth = {name: np.isin(phantom.label, ids.ids([name])) for name in TRAINED}
        truth["Liver"] = np.isin(phantom.label, ids.ids(LIVER))
        truth["Kidneys"] = truth["Right Kidney"] | truth["Left Kidney"]
        cases.append((Scan(phantom.image.astype(np.float32), phantom.affine, f"unseen{seed}"), truth))
    return cases


def scores(model, cases, classes) -> dict[str, float]:
    """Mean Dice per class over ``cases`` on the scans' grids (whole pipeline, post-processing on);
    "Kidneys", when the model lacks it, is the union of its right and left kidney masks."""
    segmenter = Segmenter(model, InferenceSettings(device="cpu"), progress=False)
    found: dict[str, list[float]] = {name: [] for name in classes}
    for scan, truth in cases:
        result = segmenter(scan)
        for name in classes:
            if name == "Kidneys" and name not in model.catalog.names:
                mask = result.mask("Right Kidney") | result.mask("Left Kidney")
            else:
                mask = result.mask(name)
            found[name].append(dice(mask, truth[name]))
    return {name: float(np.mean(v)) for name, v in found.items()}
