"""``preview.png`` is drawn as radiologists read a CT: in the axial view the patient's right lies on the
viewer's left and anterior is up; in the coronal and sagittal views the head is up."""

from __future__ import annotations

import numpy as np
from PIL import Image

import universal
from universal.inference.preview import PANEL, write_preview

CATALOG = universal.Catalog.default()


def coloured(path, colour) -> np.ndarray:
    """(rows, columns) where the picture has ``colour`` blended over black, in the panels' band."""
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)[8:8 + PANEL]
    return np.argwhere((picture > 0).all(-1) & (np.abs(picture - np.asarray(colour) * 0.45).max(-1) <= 2))


def test_the_patients_right_is_on_the_viewers_left_and_the_head_is_up(tmp_path):
    image = np.zeros((40, 40, 40), np.float32)  # RAS: +X right, +Y anterior, +Z superior
    liver = np.zeros(image.shape, bool)
    liver[30:36, 30:36, 30:36] = True  # right, anterior, superior
    path = write_preview(image, {CATALOG["Liver"].id: liver}, CATALOG, tmp_path / "preview.png")
    found = coloured(path, CATALOG["Liver"].color)
    axial = found[found[:, 1] < 8 + PANEL]  # the first panel
    assert axial[:, 1].mean() < 8 + PANEL / 2 and axial[:, 0].mean() < PANEL / 2  # viewer's left, top
    coronal = found[(found[:, 1] > 16 + PANEL) & (found[:, 1] < 16 + 2 * PANEL)]
    assert coronal[:, 0].mean() < PANEL / 2 and coronal[:, 1].mean() < 16 + 1.5 * PANEL  # head up, right on left
    sagittal = found[found[:, 1] > 24 + 2 * PANEL]
    assert sagittal[:, 0].mean() < PANEL / 2 and sagittal[:, 1].mean() < 24 + 2.5 * PANEL  # head up, anterior left
