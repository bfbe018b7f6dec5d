"""A picture of a result: an axial, a coronal and a sagittal slice through the labelled organs, the
classes in their catalogue colours over the CT, with a legend (``preview.png``).

Drawn from model space, which is RAS at isotropic spacing whatever the file was: slices are shown
as radiologists read them (the patient's right on the viewer's left, anterior up in the axial view,
the head up in the others)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from universal.catalog import Catalog
from universal.io.atomic import atomic_path

PANEL = 256  # pixels of a view's longer side
ALPHA = 0.45  # opacity of the colours over the CT


def write_preview(image: np.ndarray, masks: Mapping[int, np.ndarray], catalog: Catalog, path: str | Path) -> Path:
    """Write the preview of ``image`` (float (X, Y, Z), 0..1, RAS, isotropic) and its class ``masks``
    (class id → bool (X, Y, Z)) to ``path`` (PNG); returns ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    labels = np.zeros(image.shape, np.uint8)
    for class_id in sorted(masks, key=lambda i: (catalog[i].is_lesion, i)):
        labels[masks[class_id]] = class_id
    centre = np.argwhere(labels).mean(0) if labels.any() else np.array(image.shape) / 2  # through the organs
    i, j, k = (int(v) for v in centre)
    views = [(image[::-1, ::-1, k].T, labels[::-1, ::-1, k].T),  # axial: rows anterior→posterior, right on the left
             (image[::-1, j, ::-1].T, labels[::-1, j, ::-1].T),  # coronal: the head up
             (image[i, ::-1, ::-1].T, labels[i, ::-1, ::-1].T)]  # sagittal: the head up, anterior on the left
    colours = np.zeros((256, 3), np.float32)
    for info in catalog:
        colours[info.id] = info.color
    panels = []
    for ct, classes in views:
        grey = np.repeat((np.clip(ct, 0, 1) * 255)[..., None], 3, axis=2)
        coloured = np.where((classes > 0)[..., None], (1 - ALPHA) * grey + ALPHA * colours[classes], grey)
        panel = Image.fromarray(coloured.astype(np.uint8))
        scale = PANEL / max(panel.size)
        panels.append(panel.resize((max(1, round(panel.width * scale)), max(1, round(panel.height * scale))),
                                   Image.NEAREST))
    present = [catalog[int(v)] for v in np.unique(labels) if v]
    font = ImageFont.load_default(size=13)
    legend_height = 20 * ((len(present) + 2) // 3) + 8
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * 4, PANEL + 16 + legend_height), (20, 20, 20))
    x = 8
    for panel in panels:
        canvas.paste(panel, (x, 8 + (PANEL - panel.height) // 2))
        x += panel.width + 8
    draw = ImageDraw.Draw(canvas)
    for number, info in enumerate(present):
        left, top = 8 + (number % 3) * (canvas.width // 3), PANEL + 16 + 20 * (number // 3)
        draw.rectangle((left, top + 3, left + 12, top + 15), fill=tuple(info.color))
        draw.text((left + 18, top + 1), info.name, fill=(235, 235, 235), font=font)
    with atomic_path(path, suffix=".png") as temporary:
        canvas.save(temporary, format="PNG")
    return Path(path)
