"""Whole-scan inference: a CT in; class masks, a label map on the scan's grid and a report out.

:func:`segment` does the whole job for many files with one model load; :class:`Segmenter` holds a
loaded model and segments :class:`~universal.scans.Scan` objects in memory. The stages:

1. read the scan (:mod:`universal.scans`) and bring it to model space (:mod:`universal.preprocess`);
2. slide windows over it (overlap 0.5, Gaussian weights as MONAI's ``sliding_window_inference``),
   blending logits slab by slab along the last axis: a slab is turned into masks (sigmoid after
   blending, threshold 0.5) as soon as no later window reaches it, so memory holds one band of
   logits, not all classes over the whole scan;
3. post-process (:mod:`universal.postprocess`), paint the label map (lesions over their organ) and
   bring it and any mask back to the scan's grid; measure them (:mod:`universal.report`).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .backbones import DEFAULT_BACKBONE
from .catalog import Catalog, ClassKey
from .compiled import compiled_backbone, worth_compiling
from .errors import UniversalError
from .io_utils import atomic_write_text
from .model import UniversalModel
from .postprocess import postprocess, required_classes
from .preprocess import to_model_space, to_scan_grid
from .report import class_statistics, lesion_findings
from .scans import Scan, case_name, read_scan, write_nifti

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMPILE_CHOICES = ("auto", "on", "off")
LOCALIZE_MAX_CLASSES = 8  # above this, the classes' region is most of the body and the coarse grid saves nothing
BACKGROUND_LOGIT = -1e4  # where no window was run: certainly background
SIGMA_SCALE = 0.125  # Gaussian window weights: SD as a fraction of the window side (MONAI's default)
REPORT_NAME, LABEL_MAP_NAME, MASKS_FOLDER = "report.json", "segmentation.nii.gz", "masks"


@dataclass(frozen=True)
class InferenceSettings:
    """How a scan is segmented.

    ``overlap``: fraction of a window shared with its neighbour (0 ≤ overlap < 1). ``batch_size``:
    windows per network call. ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``. ``precision``: ``"auto"`` (float16 on CUDA; bfloat16 on CPUs with
    native bfloat16 arithmetic, float32 on other CPUs), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    ``threshold``: probability above which a voxel belongs to a class. ``postprocess``: apply
    :mod:`universal.postprocess`. ``compile``: run the backbone through TorchInductor
    (:mod:`universal.compiled`): ``"auto"`` (a U-Net in bfloat16 on the CPU, for scans of at least
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
        if self.precision not in ("auto", *PRECISIONS):
            raise UniversalError(f"precision must be auto, {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not 0.0 < self.threshold < 1.0:
            raise UniversalError(f"threshold must lie between 0 and 1, got {self.threshold}")
        if self.compile not in COMPILE_CHOICES:
            raise UniversalError(f"compile must be {', '.join(COMPILE_CHOICES)}; got {self.compile!r}")
        if self.localize_margin < 0:
            raise UniversalError(f"localize margin must not be negative, got {self.localize_margin} voxels")

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.precision == "auto":
            if device.type == "cuda":
                return torch.float16
            return torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
        return PRECISIONS[self.precision]


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), where it is faster than
    float32; elsewhere bfloat16 is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def cpu_description() -> str:
    """The CPU's model name and its bfloat16 units, e.g. ``"AMD EPYC (AVX-512 BF16, no AMX), 2 threads"``."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as stream:
            name = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), name)
    except OSError:
        pass
    avx512 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    units = f"{'AVX-512 BF16' if avx512 else 'no AVX-512 BF16'}, {'AMX' if amx else 'no AMX'}"
    return f"{name} ({units}), {torch.get_num_threads()} threads"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UniversalError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UniversalError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


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

    def save(self, folder: str | Path, masks: bool = False) -> Path:
        """Write ``segmentation.nii.gz``, with ``masks`` one ``masks/<Class Name>.nii.gz`` per class, and
        ``report.json`` last (its presence marks a finished case). Returns the folder.

        Writing over an earlier result first removes its report, and then its masks of classes this
        result does not hold, so the folder never mixes two runs under a finished mark.
        """
        folder, started = Path(folder), time.perf_counter()
        (folder / REPORT_NAME).unlink(missing_ok=True)
        write_nifti(self.label_map, self.affine, folder / LABEL_MAP_NAME)
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

        wanted = sorted(set(self.catalog.ids(classes))) if classes is not None else [c.id for c in self.catalog]
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
        with _progress(todo, name or "windows", "window", self.progress) as progress, torch.inference_mode():
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
        progress = _progress(len(coarse), f"{name or 'windows'} (coarse)", "window", self.progress)
        with progress, torch.inference_mode():
            for box in coarse:
                logits = known[box_key(box)] = self._run(padded, [box], channels)[0]
                region.mark(box, (logits > _logit(self.settings.threshold)).any(0))
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


class BlendBand:
    """Weighted sums of window logits over a band of slices along the last axis.

    ``add`` accumulates windows (logits times the Gaussian weights); ``release(z)`` returns the
    blended logits (K, X, Y, dz) of the slices below ``z`` and forgets them.
    """

    def __init__(self, classes: int, plane: Sequence[int], weight_map: torch.Tensor):
        self.weight_map = weight_map
        self.sums = weight_map.new_zeros((classes, *plane, 0))
        self.weights = weight_map.new_zeros((*plane, 0))
        self.first = 0  # the slice held at index 0

    def add(self, boxes: Sequence[tuple[slice, ...]], logits: torch.Tensor) -> None:
        """Accumulate windows: ``logits`` (B, K, *roi) at ``boxes`` (slices in the padded volume)."""
        self._reach(max(box[2].stop for box in boxes))
        for box, window in zip(boxes, logits, strict=True):
            depth = slice(box[2].start - self.first, box[2].stop - self.first)
            self.sums[:, box[0], box[1], depth] += window * self.weight_map
            self.weights[box[0], box[1], depth] += self.weight_map

    def _reach(self, stop: int) -> None:
        """Hold the slices up to ``stop``."""
        missing = stop - self.first - self.sums.shape[-1]
        if missing > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros((*self.sums.shape[:-1], missing))], dim=-1)
            self.weights = torch.cat([self.weights, self.weights.new_zeros((*self.weights.shape[:-1], missing))], -1)

    def release(self, stop: int) -> tuple[int, torch.Tensor]:
        """(first slice, blended logits (K, X, Y, stop - first)) of the slices below ``stop``; slices
        that no window reached are ``BACKGROUND_LOGIT``."""
        self._reach(stop)
        count = stop - self.first
        weights = self.weights[..., :count]
        blended = torch.where(weights > 0, self.sums[..., :count] / weights.clamp(min=1e-12), BACKGROUND_LOGIT)
        first = self.first
        self.sums, self.weights, self.first = self.sums[..., count:], self.weights[..., count:], stop
        return first, blended


class Region:
    """Where localised classes may lie, over the padded image: voxels marked by the coarse pass,
    grown by a margin on a grid of ``CELL``-voxel cells (a cell is in when any of its voxels is)."""

    CELL = 4

    def __init__(self, shape: Sequence[int], margin: int):
        self.marked = torch.zeros(tuple(shape), dtype=torch.bool)
        self.margin = -(-margin // self.CELL)
        self.cells = None

    def mark(self, box: Sequence[slice], mask: torch.Tensor) -> None:
        """Add the voxels of ``mask`` (bool, the box's shape) at ``box``."""
        self.marked[tuple(box)] |= mask.cpu()

    def grow(self) -> None:
        """Fix the region: the marked voxels' cells grown by the margin along every axis."""
        cells = torch.nn.functional.max_pool3d(self.marked[None, None].float(), self.CELL, ceil_mode=True)
        if self.margin:
            cells = torch.nn.functional.max_pool3d(cells, 2 * self.margin + 1, stride=1, padding=self.margin)
        self.cells = cells[0, 0].bool()
        self.marked = None

    def reaches(self, box: Sequence[slice]) -> bool:
        return bool(self.cells[tuple(slice(b.start // self.CELL, -(-b.stop // self.CELL)) for b in box)].any())

    def restrict(self, logits: torch.Tensor, first: int) -> torch.Tensor:
        """``logits`` (K, X, Y, dz) of slices from ``first`` on, set to background outside the region."""
        x, y = (torch.arange(n) // self.CELL for n in logits.shape[1:3])
        z = torch.arange(first, first + logits.shape[3]) // self.CELL
        inside = self.cells[x][:, y][:, :, z].to(logits.device)
        return torch.where(inside[None], logits, BACKGROUND_LOGIT)


def covering_starts(starts: Sequence[int], size: int) -> set[int]:
    """The fewest of the sorted window ``starts`` (windows of ``size``) that leave no gap between the
    first window and the last."""
    chosen = [starts[0]]
    while chosen[-1] != starts[-1]:
        reachable = [start for start in starts if chosen[-1] < start <= chosen[-1] + size]
        chosen.append(reachable[-1] if reachable else next(s for s in starts if s > chosen[-1]))
    return set(chosen)


def box_key(box: Sequence[slice]) -> tuple[tuple[int, int], ...]:
    """A window's box as a hashable key."""
    return tuple((b.start, b.stop) for b in box)


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


def pad_to_window(image: torch.Tensor, roi: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``image`` (C, X, Y, Z) padded with zeros to at least ``roi`` along each axis (half before, half
    after, as MONAI does), and the slices that recover the image from the padded one."""
    before = [max(r - n, 0) // 2 for r, n in zip(roi, image.shape[1:], strict=True)]
    after = [max(r - n, 0) - b for r, n, b in zip(roi, image.shape[1:], before, strict=True)]
    pad = [size for axis in (2, 1, 0) for size in (before[axis], after[axis])]
    padded = torch.nn.functional.pad(image, pad) if any(pad) else image
    inside = tuple(slice(b, b + n) for b, n in zip(before, image.shape[1:], strict=True))
    return padded, inside


def window_boxes(shape: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The windows (tuples of slices) that tile a volume of ``shape`` (at least ``roi``), as MONAI's
    sliding window places them: steps of ``int(roi·(1-overlap))``, the last window flush with the end."""
    from monai.data.utils import dense_patch_slices

    shape = [max(n, r) for n, r in zip(shape, roi, strict=True)]
    interval = [r if n == r else max(int(r * (1 - overlap)), 1) for n, r in zip(shape, roi, strict=True)]
    return [tuple(box) for box in dense_patch_slices(shape, roi, interval)]


def gaussian_weights(roi: Sequence[int], device: torch.device) -> torch.Tensor:
    """Blending weights of one window (``roi``), MONAI's Gaussian importance map."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=SIGMA_SCALE, device=device,
                                  dtype=torch.float32)


def _progress(total: int, description: str, unit: str, enabled: bool, leave: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True)


# -- files in, files out ------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one input: ``status`` is ``"done"``, ``"skipped"`` (finished before, with
    ``resume``) or ``"failed"`` (``error`` says why)."""

    name: str
    source: str
    status: str
    folder: Path
    error: str = ""
    seconds: float = 0.0


def segment(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    model: str | Path | UniversalModel = DEFAULT_BACKBONE,
    classes: Iterable[ClassKey] | None = None,
    masks: bool = False,
    resume: bool = False,
    series: str | None = None,
    settings: InferenceSettings | None = None,
    progress: bool = True,
    on_case=None,
) -> list[CaseOutcome]:
    """Segment CT files (NIfTI, NRRD, DICOM series folders) into ``output/<case>/``.

    Each case folder receives ``segmentation.nii.gz`` (uint8 label map on the scan's grid),
    optionally ``masks/<Class Name>.nii.gz``, and ``report.json``. The model (a checkpoint path, a
    released name, or a loaded model) is loaded once. A case that fails is reported in its outcome
    and the others go on; with ``resume``, cases whose report exists are skipped. ``on_case`` is
    called with each :class:`CaseOutcome` as it completes.
    """
    from .checkpoint import load_model

    paths = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    if not paths:
        raise UniversalError("no input scans given")
    names = [case_name(path) for path in paths]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UniversalError(f"several inputs share the case name {', '.join(repeated)}; their outputs would "
                             "overwrite each other, so segment them into different output folders")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UniversalError(f"output {output} is a file; give a folder")
    loaded = model if isinstance(model, UniversalModel) else load_model(model)
    segmenter = Segmenter(loaded, settings, progress=progress)
    classes = list(classes) if classes is not None else None
    if classes is not None:
        segmenter.catalog.ids(classes)  # unknown names fail before any case is read
    outcomes = []
    with _progress(len(paths), "cases", "case", progress and len(paths) > 1, leave=True) as cases:
        for path, name in zip(paths, names, strict=True):
            started, folder = time.perf_counter(), output / name
            if resume and (folder / REPORT_NAME).is_file():
                outcome = CaseOutcome(name, str(path), "skipped", folder)
            else:
                try:
                    scan = read_scan(path, series=series)
                    read_seconds = time.perf_counter() - started
                    result = segmenter(scan, classes)
                    result.report["timings_s"]["read"] = round(read_seconds, 3)
                    result.save(folder, masks=masks)
                    outcome = CaseOutcome(name, str(path), "done", folder, seconds=time.perf_counter() - started)
                except (UniversalError, RuntimeError, MemoryError, OSError) as error:
                    outcome = CaseOutcome(name, str(path), "failed", folder, describe_error(error),
                                          time.perf_counter() - started)
            outcomes.append(outcome)
            if on_case is not None:
                on_case(outcome)
            cases.update(1)
    return outcomes


def describe_error(error: Exception) -> str:
    """One line: the library's own message, or the type and first line of any other error."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return first if isinstance(error, UniversalError) else f"{type(error).__name__}: {first}"
