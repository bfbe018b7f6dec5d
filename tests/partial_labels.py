"""Phantom datasets with disjoint annotations, shared by the training and learning tests.

``Organs`` annotates liver, spleen and stomach; ``Kidneys`` both kidneys as one value (a right/left
pair split by side); ``BothKidneys`` names "Kidneys", a class no model has yet.
"""

from __future__ import annotations

from pathlib import Path

from universal.phantoms import DatasetSpec, write_datasets

LIVER = ("Liver", "Hepatic Vessel")  # the phantom datasets draw the vessels as liver
ORGANS = DatasetSpec("Organs", (("liver", LIVER), ("spleen", ("Spleen",)), ("stomach", ("Stomach",))))
KIDNEYS = DatasetSpec("Kidneys", (("kidney", ("Right Kidney", "Left Kidney")),))
BOTH_KIDNEYS = DatasetSpec("BothKidneys", (("kidneys", ("Right Kidney", "Left Kidney")),))
TEMPLATES = """datasets:
  Organs:
    labels: {1: Liver, 2: Spleen, 3: Stomach}
  Kidneys:
    labels:
      1: [Right Kidney, Left Kidney]
  BothKidneys:
    description: both kidneys as one structure, a class the model does not have
    labels: {1: Kidneys}
"""


def write_partial_datasets(root: Path, cases: int, **phantom) -> dict[str, Path]:
    """The three datasets under ``root`` (``cases`` patients each) and their templates file."""
    folders = write_datasets(root, [ORGANS, KIDNEYS, BOTH_KIDNEYS], cases_per_dataset=cases, **phantom)
    (root / "templates.yaml").write_text(TEMPLATES)
    return {"organs": folders[0], "kidneys": folders[1], "both": folders[2], "templates": root / "templates.yaml"}
