"""The network over a whole scan: :class:`Segmenter` holds a loaded model and segments
:class:`~universal.io.scans.Scan` objects in memory (:func:`universal.inference.batch.segment` does it
for files). ``segmenter(scan)`` runs the three stages of :mod:`universal.inference.stages` in turn;
the middle one, :meth:`Segmenter.predict`, is the network's:

slide windows over the model-space image (:mod:`universal.inference.windows`: overlap 0.5, Gaussian
weights as MONAI's ``sliding_window_inference``), blending logits slab by slab along the last axis:
a slab is turned into masks (sigmoid after blending, threshold 0.5: the blended logit above the
threshold's logit, which decides the same without a sigmoid per voxel) as soon as no later window
reaches it, so memory holds one band of logits, not all classes over the whole scan.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from universal.catalog import Catalog, ClassKey
from universal.devices import INT8, dtype_name
from universal.errors import UniversalError
from universal.inference.result import Segmentation
from universal.inference.settings import LOCALIZE_MAX_CLASSES, InferenceSettings
from universal.inference.stages import CasePlan, Prediction, PreparedScan
from universal.inference.windows import (
    BlendBand,
    Region,
    box_key,
    covering_starts,
    gaussian_weights,
    logit,
    pad_to_window,
    window_boxes,
)
from universal.io.scans import Scan
from universal.nets.model import UniversalModel
from universal.nets.runtime import Calibration, choose_runtime, eager
from universal.progress import progress_bar


class Segmenter:
    """A loaded model and the settings to segment scans with it.

    ``segmenter(scan, classes=None)`` → :class:`Segmentation`. ``classes`` (names or ids, default
    all) computes only those heads plus the organs their post-processing reads. What runs the trunk
    and heads is chosen per scan (:mod:`universal.nets.runtime`); ``calibration`` gives the windows an
    int8 trunk is quantized on (e.g. :func:`universal.synth.calibration_windows`); ``before_window`` is
    called before each network call (background work waits there for interactive work, or stops).
    """

    def __init__(self, model: UniversalModel, settings: InferenceSettings | None = None, progress: bool = True,
                 calibration: Calibration | None = None, before_window: Callable[[], None] | None = None):
        self.settings = settings or InferenceSettings()
        self.device = self.settings.torch_device()
        self.dtype = self.settings.torch_dtype(self.device)
        self.model = model.to(self.device).eval()
        self.progress = progress
        self.calibration = calibration
        self.before_window = before_window
        self.runtime = eager(self.model)  # the last scan's
        if len(model.catalog) > 255:
            raise UniversalError(f"a uint8 label map holds at most 255 classes; this model has {len(model.catalog)}")

    @property
    def catalog(self) -> Catalog:
        return self.model.catalog

    @property
    def plan(self) -> CasePlan:
        """The stages around the network, for this model and these settings (no weights)."""
        return CasePlan.for_model(self.model, self.settings)

    def __call__(self, scan: Scan, classes: Iterable[ClassKey] | None = None) -> Segmentation:
        plan = self.plan
        prepared = plan.prepare(scan, classes)
        return plan.finish(prepared, self.predict(prepared))

    def predict(self, prepared: PreparedScan) -> Prediction:
        """The network's masks of ``prepared.computed`` over the prepared scan."""
        started = time.perf_counter()
        masks = self.predict_masks(prepared.image, prepared.channels, prepared.name)
        windows = len(window_boxes(prepared.image.shape[1:], self.model.input_spec.window_size, self.settings.overlap))
        precision = INT8 if self.settings.precision == INT8 else dtype_name(self.dtype)
        return Prediction(masks, windows, str(self.device), precision, self.runtime.compiled,
                          time.perf_counter() - started, self.runtime.name, self.runtime.agreement)

    # -- sliding window -----------------------------------------------------------------------

    def predict_masks(self, image: torch.Tensor, channels: Sequence[int], name: str = "") -> np.ndarray:
        """Thresholded masks, bool (K, X, Y, Z), of output ``channels`` for a model-space image (1, X, Y, Z)."""
        masks = np.zeros((len(channels), *image.shape[1:]), dtype=bool)
        cut = logit(self.settings.threshold)
        for depth, logits in self.blended_logits(image, channels, name):
            masks[..., depth] = (logits > cut).cpu().numpy()
        return masks

    def blended_logits(
        self, image: torch.Tensor, channels: Sequence[int], name: str = ""
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield ``(z range, logits (K, X, Y, dz))`` slabs of the Gaussian-blended window logits, in order
        along the last axis, each as soon as it is final; together they cover the image (1, X, Y, Z).
        Voxels that no run window covers (air, or outside the localised region) get ``BACKGROUND_LOGIT``."""
        roi, size = self.model.input_spec.window_size, self.settings.batch_size
        padded, inside = pad_to_window(image, roi)
        boxes = window_boxes(padded.shape[1:], roi, self.settings.overlap)
        if self.settings.skip_air:
            boxes = [box for box in boxes if bool(padded[(slice(None), *box)].max() > 0)]
        settings = self.settings
        self.runtime = choose_runtime(self.model, self.device, self.dtype, len(boxes), precision=settings.precision,
                                      runtime=settings.runtime, compile=settings.compile, calibration=self.calibration)
        known: dict[tuple, torch.Tensor] = {}  # logits (K, *roi) of windows already run, by box_key
        region = None
        if self.settings.localize and len(channels) <= LOCALIZE_MAX_CLASSES and boxes:
            known, region = self._localize(padded, boxes, channels, name)
            boxes = [box for box in boxes if box_key(box) in known or region.reaches(box)]
        starts = sorted({box[2].start for box in boxes})
        band = BlendBand(len(channels), padded.shape[1:3], gaussian_weights(roi, self.device))
        todo = sum(box_key(box) not in known for box in boxes)
        with progress_bar(todo, name or "windows", "window", self.progress) as progress, torch.inference_mode():
            for start, next_start in itertools.pairwise([*sorted({0, *starts}), padded.shape[-1]]):
                group = [box for box in boxes if box[2].start == start]
                missing = [box for box in group if box_key(box) not in known]
                for box in (box for box in group if box_key(box) in known):
                    band.add([box], known.pop(box_key(box))[None])
                for batch in (missing[i:i + size] for i in range(0, len(missing), size)):
                    band.add(batch, self._run(padded, batch, channels))
                    progress.update(len(batch))
                first, logits = band.release(next_start)
                if region is not None:
                    logits = region.restrict(logits, first)
                depth = slice(max(first, inside[2].start), min(next_start, inside[2].stop))
                if depth.start < depth.stop:
                    local = slice(depth.start - first, depth.stop - first)
                    offset = inside[2].start
                    yield slice(depth.start - offset, depth.stop - offset), logits[:, inside[0], inside[1], local]

    def _run(self, padded: torch.Tensor, boxes: Sequence[tuple[slice, ...]], channels: Sequence[int]) -> torch.Tensor:
        """float32 logits (B, K, *roi) of the windows at ``boxes`` of the padded image."""
        if self.before_window is not None:
            self.before_window()
        windows = torch.stack([padded[(slice(None), *box)] for box in boxes]).to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.window_logits(windows, boxes, channels).float()

    def _localize(
        self, padded: torch.Tensor, boxes: Sequence[tuple[slice, ...]], channels: Sequence[int], name: str
    ) -> tuple[dict[tuple, torch.Tensor], Region]:
        """Run the fewest windows of ``boxes`` that still cover the volume (a coarse grid); return their
        logits (K, *roi) by :func:`box_key`, for reuse, and the region their masks (any channel) grown
        by the margin cover."""
        chosen = [covering_starts(sorted({box[axis].start for box in boxes}), size)
                  for axis, size in enumerate(self.model.input_spec.window_size)]
        coarse = [box for box in boxes if all(box[axis].start in chosen[axis] for axis in range(3))]
        region = Region(padded.shape[1:], self.settings.localize_margin)
        known = {}
        progress = progress_bar(len(coarse), f"{name or 'windows'} (coarse)", "window", self.progress)
        with progress, torch.inference_mode():
            for box in coarse:
                logits = known[box_key(box)] = self._run(padded, [box], channels)[0]
                region.mark(box, (logits > logit(self.settings.threshold)).any(0))
                progress.update(1)
        region.grow()
        return known, region

    def window_logits(
        self, windows: torch.Tensor, boxes: Sequence[tuple[slice, ...]], channels: Sequence[int]
    ) -> torch.Tensor:
        """Logits (B, K, *roi) of output ``channels`` for windows (B, 1, *roi); ``boxes`` locate the
        windows in the padded image (a subclass may use them, e.g. to replay known answers)."""
        self.model.check_window(windows.shape)
        image, head_input = self.runtime.trunk(windows)
        return self.model.heads(image, head_input, channels, run=self.runtime.heads)
