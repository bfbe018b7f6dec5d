"""Phantom windows in a model's input space: what an int8 trunk is calibrated on and checked against
(the ``calibration`` of :mod:`universal.nets.openvino`)."""

from __future__ import annotations

import numpy as np

from universal.inference.preprocess import to_model_space
from universal.inference.windows import pad_to_window, window_boxes
from universal.nets.model import InputSpec
from universal.synth.phantom import make_phantom

PHANTOM_EXTENT_MM = (410.0, 410.0, 320.0)  # an abdomen from side to side, and from the lungs to the pelvis


def calibration_windows(spec: InputSpec, count: int, seed: int) -> list[np.ndarray]:
    """``count`` windows, float32 (1, 1, *window), from phantom CTs (seeds ``seed``, ``seed`` + 100,
    ...) brought to ``spec``'s space: windows that tile the body side by side, spread evenly over it,
    none of them air alone."""
    shape = tuple(max(round(extent / spacing), 8) for extent, spacing in zip(PHANTOM_EXTENT_MM, spec.spacing,
                                                                              strict=True))
    windows: list[np.ndarray] = []
    patient = seed
    while len(windows) < count:
        phantom = make_phantom(patient, shape=shape, spacing=spec.spacing)
        image, _ = to_model_space(phantom.image.astype(np.float32), phantom.affine, spec)
        padded, _ = pad_to_window(image, spec.window_size)
        boxes = [box for box in window_boxes(padded.shape[1:], spec.window_size, 0.0)
                 if bool(padded[(slice(None), *box)].max() > 0)]
        wanted = min(count - len(windows), len(boxes))
        for index in np.linspace(0, len(boxes) - 1, wanted).round().astype(int):
            windows.append(padded[(slice(None), *boxes[index])][None].numpy().astype(np.float32))
        patient += 100
    return windows
