"""Whole-scan inference: a CT in; class masks, a label map on the scan's grid and a report out.

:class:`Segmenter` holds a loaded model and segments :class:`~universal.io.scans.Scan` objects in
memory (:func:`universal.inference.batch.segment` does it for files). The stages:

1. bring the scan to model space (:mod:`universal.inference.preprocess`);
2. slide windows over it (:mod:`universal.inference.windows`: overlap 0.5, Gaussian weights as
   MONAI's ``sliding_window_inference``),
   blending logits slab by slab along the last axis: a slab is turned into masks (sigmoid after
   blending, threshold 0.5) as soon as no later window reaches it, so memory holds one band of
   logits, not all classes over the whole scan;
3. post-process (:mod:`universal.inference.postprocess`), paint the label map (lesions over their
   organ) and bring it and any mask back to the scan's grid; measure them
   (:mod:`universal.inference.report`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from universal import __version__
from universal.catalog import Catalog, ClassKey
from universal.devices import check_precision, inference_dtype, resolve_device
from universal.errors import UniversalError
from universal.inference.postprocess import postprocess, required_classes
from universal.inference.preprocess import to_model_space, to_scan_grid
from universal.inference.report import class_statistics, lesion_findings
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
from universal.io.atomic import atomic_write_text
from universal.io.scans import Scan, write_nifti
from universal.nets.compiled import compiled_backbone, worth_compiling
from universal.nets.model import UniversalModel
from universal.progress import progress_bar

COMPILE_CHOICES = ("auto", "on", "off")
LOCALIZE_MAX_CLASSES = 8  # above this, the classes' region is most of the body and the coarse grid saves nothing
REPORT_NAME, LABEL_MAP_NAME, MASKS_FOLDER = "report.json", "segmentation.nii.gz", "masks"
DICOM_SEG_NAME = "segmentation.dcm"


@dataclass(frozen=True)
class InferenceSettings:
    """How a scan is segmented.

    ``overlap``: fraction of a window shared with its neighbour (0 ≤ overlap < 1). ``batch_size``:
    windows per network call. ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``. ``precision``: ``"auto"`` (float16 on CUDA; bfloat16 on CPUs with
    native bfloat16 arithmetic, float32 on other CPUs), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    ``threshold``: probability above which a voxel belongs to a class. ``postprocess``: apply
    :mod:`universal.inference.postprocess`. ``compile``: run the backbone through TorchInductor
    (:mod:`universal.nets.compiled`): ``"auto"`` (a U-Net in bfloat16 on the CPU, for scans of at least
    ``COMPILE_MIN_WINDOWS`` released-size windows' work), ``"on"`` or ``"off"``.

    Work that does not change the answer: ``skip_air`` leaves out windows whose every voxel lies at
    or below the HU window's lower end; ``localize``, when at most ``LOCALIZE_MAX_CLASSES`` classes are
    computed, first runs a coarse grid (the fewest windows of the full grid that still cover the
    volume), and then only the windows that reach those classes' coarse masks grown by
    ``localize_margin`` voxels: inside that region every window that covers a voxel is blended, as in
    a full pass; outside it is background.
    """

    overlap: float = 0.5
    batch_size: int = 1
    device: str = "auto"
    precision: str = "auto"
    threshold: float = 0.5
    postprocess: bool = True
    skip_air: bool = True
    localize: bool = True
    localize_margin: int = 24
    compile: str = "auto"

    def __post_init__(self):
        if not 0.0 <= self.overlap < 1.0:
            raise UniversalError(f"overlap must be at least 0 and below 1, got {self.overlap}")
        if self.batch_size < 1:
            raise UniversalError(f"batch size must be at least 1 window, got {self.batch_size}")
        check_precision(self.precision)
        if not 0.0 < self.threshold < 1.0:
            raise UniversalError(f"threshold must lie between 0 and 1, got {self.threshold}")
        if self.compile not in COMPILE_CHOICES:
            raise UniversalError(f"compile must be {', '.join(COMPILE_CHOICES)}; got {self.compile!r}")
        if self.localize_margin < 0:
            raise UniversalError(f"localize margin must not be negative, got {self.localize_margin} voxels")

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        return inference_dtype(self.precision, device)


@dataclass(eq=False)
class Segmentation:
    """The result for one scan.

    ``label_map``: uint8 (X, Y, Z) on the scan's grid, catalogue ids, lesions painted over their
    organ. ``model_masks``: per class id, bool masks in model space (affine ``model_affine``).
    ``report``: the JSON document written beside the label map.
    """

    name: str
    affine: np.ndarray
    catalog: Catalog
    label_map: np.ndarray
    model_masks: dict[int, np.ndarray]
    model_affine: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def class_ids(self) -> list[int]:
        return list(self.model_masks)

    def mask(self, key: ClassKey) -> np.ndarray:
        """bool (X, Y, Z) mask of one class on the scan's grid."""
        class_id = self.catalog[key].id
        if class_id not in self.model_masks:
            raise UniversalError(f"class {self.catalog[class_id].name!r} was not computed; ask for it in classes")
        model_mask = self.model_masks[class_id].view(np.uint8)
        return to_scan_grid(model_mask, self.model_affine, self.affine, self.label_map.shape).view(bool)

    def save(self, folder: str | Path, masks: bool = False, dicom_series: Sequence | None = None) -> Path:
        """Write ``segmentation.nii.gz``, with ``masks`` one ``masks/<Class Name>.nii.gz`` per class,
        with ``dicom_series`` (the headers of the scan's DICOM series, :func:`universal.io.dicom.read_series`)
        ``segmentation.dcm``, a DICOM SEG referencing that series, and ``report.json`` last (its presence
        marks a finished case). Returns the folder.

        Writing over an earlier result first removes its report, and then its masks of classes this
        result does not hold and a SEG it does not write, so the folder never mixes two runs under a
        finished mark.
        """
        folder, started = Path(folder), time.perf_counter()
        (folder / REPORT_NAME).unlink(missing_ok=True)
        write_nifti(self.label_map, self.affine, folder / LABEL_MAP_NAME)
        if dicom_series is not None:
            from universal.io.dicom import write_segmentation

            write_segmentation(self.label_map, self.catalog, dicom_series, folder / DICOM_SEG_NAME)
        else:
            (folder / DICOM_SEG_NAME).unlink(missing_ok=True)
        written = set()
        if masks:
            for class_id in self.class_ids:
                path = folder / MASKS_FOLDER / f"{self.catalog[class_id].name}.nii.gz"
                write_nifti(self.mask(class_id).astype(np.uint8), self.affine, path)
                written.add(path)
        for stale in set((folder / MASKS_FOLDER).glob("*.nii.gz")) - written:
            stale.unlink()
        if "timings_s" in self.report:
            self.report["timings_s"]["write"] = round(time.perf_counter() - started, 3)
        atomic_write_text(folder / REPORT_NAME, json.dumps(self.report, indent=2) + "\n")
        return folder


class Segmenter:
    """A loaded model and the settings to segment scans with it.

    ``segmenter(scan, classes=None)`` → :class:`Segmentation`. ``classes`` (names or ids, default
    all) computes only those heads plus the organs their post-processing reads.
    """

    def __init__(self, model: UniversalModel, settings: InferenceSettings | None = None, progress: bool = True):
        self.settings = settings or InferenceSettings()
        self.device = self.settings.torch_device()
        self.dtype = self.settings.torch_dtype(self.device)
        self.model = model.to(self.device).eval()
        self.progress = progress
        self.backbone = self.model.backbone  # or its compiled form: chosen per scan by blended_logits
        if len(model.catalog) > 255:
            raise UniversalError(f"a uint8 label map holds at most 255 classes; this model has {len(model.catalog)}")

    @property
    def catalog(self) -> Catalog:
        return self.model.catalog

    def __call__(self, scan: Scan, classes: Iterable[ClassKey] | None = None) -> Segmentation:
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(stage: str) -> None:
            timings[stage] = round(time.perf_counter() - started - sum(timings.values()), 3)

        wanted = self.catalog.select(classes)
        if not wanted:
            raise UniversalError("no classes asked for; name at least one class or leave classes out")
        computed = required_classes(wanted, self.catalog) if self.settings.postprocess else wanted
        try:
            image, model_affine = to_model_space(scan.image, scan.affine, self.model.input_spec)
        except ValueError as error:
            raise UniversalError(f"{scan.source or scan.name}: {error}") from error
        lap("preprocess")
        windows = len(window_boxes(image.shape[1:], self.model.input_spec.window_size, self.settings.overlap))
        stack = self.predict_masks(image, [class_id - 1 for class_id in computed], scan.name)
        masks = dict(zip(computed, stack, strict=True))
        lap("network")
        if self.settings.postprocess:
            masks = postprocess(masks, self.catalog, model_affine)
        masks = {class_id: masks[class_id] for class_id in wanted}
        lap("postprocess")
        label_map = to_scan_grid(self.paint(masks), model_affine, scan.affine, scan.shape)
        result = Segmentation(scan.name, scan.affine, self.catalog, label_map, masks, model_affine)
        lap("scan grid")
        classes_report, lesions_report = {}, {}
        for class_id in wanted:
            info = self.catalog[class_id]
            mask = result.mask(class_id)
            classes_report[info.name] = {"id": class_id, **class_statistics(mask, scan.affine)}
            if info.is_lesion:
                lesions_report[info.name] = lesion_findings(mask, scan.affine)
        lap("measure")
        result.report = {
            "case": scan.name,
            "input": scan.describe(),
            "model": {"backbone": self.model.backbone_name, "classes": len(self.catalog),
                      "provenance": self.model.provenance},
            "settings": {**self.settings.__dict__, "device": str(self.device), "precision": str(self.dtype)[6:],
                         "compiled": self.compiled,
                         "classes": [self.catalog[i].name for i in wanted], "windows": windows,
                         "model_space_shape": list(image.shape[1:])},
            "classes": classes_report,
            "lesions": lesions_report,
            "timings_s": {**timings, "total": round(time.perf_counter() - started, 3)},
            "version": __version__,
        }
        return result

    def paint(self, masks: dict[int, np.ndarray]) -> np.ndarray:
        """uint8 label map of ``masks`` (class id → bool): organs in id order, then lesions over them."""
        label_map = np.zeros(next(iter(masks.values())).shape, dtype=np.uint8)
        ordered = sorted(masks, key=lambda class_id: (self.catalog[class_id].is_lesion, class_id))
        for class_id in ordered:
            label_map[masks[class_id]] = class_id
        return label_map

    # -- sliding window -----------------------------------------------------------------------

    def predict_masks(self, image: torch.Tensor, channels: Sequence[int], name: str = "") -> np.ndarray:
        """Thresholded masks, bool (K, X, Y, Z), of output ``channels`` for a model-space image (1, X, Y, Z)."""
        masks = np.zeros((len(channels), *image.shape[1:]), dtype=bool)
        for depth, logits in self.blended_logits(image, channels, name):
            masks[..., depth] = (torch.sigmoid(logits) > self.settings.threshold).cpu().numpy()
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
        self.backbone = self._choose_backbone(len(boxes))
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

    def _choose_backbone(self, windows: int):
        """The backbone to run ``windows`` windows with: compiled or not, as ``settings.compile`` says."""
        choice = self.settings.compile
        if choice == "on" or (choice == "auto" and worth_compiling(self.model, self.device, self.dtype, windows)):
            return compiled_backbone(self.model.backbone)
        return self.model.backbone

    @property
    def compiled(self) -> bool:
        """Whether the last scan's windows ran through compiled code."""
        return getattr(self.backbone, "active", False)

    def window_logits(
        self, windows: torch.Tensor, boxes: Sequence[tuple[slice, ...]], channels: Sequence[int]
    ) -> torch.Tensor:
        """Logits (B, K, *roi) of output ``channels`` for windows (B, 1, *roi); ``boxes`` locate the
        windows in the padded image (a subclass may use them, e.g. to replay known answers)."""
        self.model.check_window(windows.shape)
        bottleneck, features = self.backbone(windows)
        return self.model.heads(bottleneck, features, channels)




