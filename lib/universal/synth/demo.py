"""The demo model: a small model trained on phantoms by this project's own recipe, so that a machine
without the released weights (and without network) still shows something segmented at first
contact. It segments synthetic phantoms, not patients, and says so wherever it answers.

The recipe (the one the learning tests hold over seeds and thread counts): phantoms of 410 × 410 ×
480 mm; a width-8 U-Net trained from scratch at 6.4 mm, the phantoms' in-plane spacing, with windows
of 40 × 32 × 32 voxels (256 mm from right to left, 205 mm front to back and along the body). At 8 mm
the organs' boundaries alone capped a perfect model's spleen Dice at 0.84-0.89 on the scans' grid, and
with 32³ windows a model never told the right kidney from the left: windows 256 mm wide see enough of
both sides. The demo model learns the large organs of fully labelled phantoms, its class embeddings
are seeded random vectors (no CLIP is needed), and its file's SHA-256 is kept beside it
(``demo.json``), so a damaged file is built again rather than served.
"""

from __future__ import annotations

import datetime
import json
import logging
import tempfile
from pathlib import Path

import torch

from universal.io.atomic import atomic_write_text, sha256_of
from universal.io.download import cache_dir
from universal.nets.checkpoint import save_model
from universal.nets.model import InputSpec, UniversalModel
from universal.synth.datasets import PhantomDataset, write_datasets
from universal.training.datasets import DatasetTemplate, prepare_datalist
from universal.training.loop import catalog_for, train
from universal.training.settings import TrainSettings

log = logging.getLogger(__name__)

PHANTOM = {"shape": (64, 64, 48), "spacing": (6.4, 6.4, 10.0)}  # 410 × 410 × 480 mm at coarse voxels
SPACING_MM = 6.4
WINDOW = (40, 32, 32)
WIDTH = 8
LEARNING_RATE, WARMUP_STEPS = 3e-3, 10
STEPS = 1200
CASES = 8
CLASSES = ("Spleen", "Right Kidney", "Left Kidney", "Liver", "Stomach", "Aorta", "Inferior Vena Cava", "Pancreas",
           "Right Lung", "Left Lung", "Bladder")
INFO_NAME = "demo.json"


def demo_model_path() -> Path:
    """Where the demo model is kept: ``<cache>/demo/model.pt``."""
    return cache_dir() / "demo" / "model.pt"


def find_demo_model(path: str | Path | None = None) -> Path | None:
    """``path`` (default :func:`demo_model_path`) when it holds a demo model whose SHA-256 is the one
    recorded when it was built, else ``None``."""
    path = Path(path or demo_model_path())
    try:
        recorded = json.loads((path.parent / INFO_NAME).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return None
    return path if path.is_file() and sha256_of(path) == recorded else None


def build_demo_model(path: str | Path | None = None, *, steps: int = STEPS, seed: int = 0, progress: bool = True
                     ) -> Path:
    """Train the demo model on phantoms (about six minutes on two cores for the default steps) into
    ``path`` (default :func:`demo_model_path`) with its ``demo.json``; returns ``path``."""
    path = Path(path or demo_model_path())
    template = DatasetTemplate("Phantoms", {value: (name,) for value, name in enumerate(CLASSES, start=1)},
                               description="fully labelled synthetic phantoms")
    with tempfile.TemporaryDirectory(prefix="universal-demo-") as root:
        log.info("building the demo model: %d phantoms, %d training steps", CASES, steps)
        folders = write_datasets(root, [PhantomDataset(template)], cases_per_dataset=CASES, seed=seed, **PHANTOM)
        datalist = prepare_datalist(folders, templates={template.name: template}, validation_fraction=0.125)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        catalog = catalog_for(list(CLASSES))
        model = UniversalModel("unet", width=WIDTH, catalog=catalog,
                               class_embeddings=torch.randn(len(catalog), 512, generator=generator),
                               input_spec=InputSpec(spacing=(SPACING_MM,) * 3, window_size=WINDOW))
        settings = TrainSettings(steps=steps, learning_rate=LEARNING_RATE, warmup_steps=WARMUP_STEPS, seed=seed,
                                 checkpoint_every=0, device="cpu")
        result = train(datalist, Path(root) / "run", model=model, settings=settings, progress=progress)
    recipe = {"steps": steps, "seed": seed, "classes": list(CLASSES), "width": WIDTH, "spacing_mm": SPACING_MM,
              "window": list(WINDOW), "phantoms": CASES}
    origin = "demo model: trained on synthetic phantoms by universal.synth.demo; it segments synthetic images only"
    save_model(result.model.cpu(), path, provenance={"demo": True, "origin": origin, "recipe": recipe,
                                                     "validation_dice": result.validation})
    info = {"sha256": sha256_of(path), "recipe": recipe, "validation_dice": result.validation,
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(path.parent / INFO_NAME, json.dumps(info, indent=2) + "\n")
    return path
