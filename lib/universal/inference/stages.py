"""The stages around the network, which need the model's classes and input but not its weights, so
CPU workers can run them while the network runs elsewhere:

1. :meth:`CasePlan.prepare`: a scan to model space (:mod:`universal.inference.preprocess`) →
   :class:`PreparedScan`;
2. the network (:meth:`universal.inference.segmenter.Segmenter.predict`) → :class:`Prediction`;
3. :meth:`CasePlan.finish`: post-process (:mod:`universal.inference.postprocess`), paint the label
   map (lesions over their organ), bring it back to the scan's grid, measure it
   (:mod:`universal.inference.report`) and check its anatomy (:mod:`universal.quality`) →
   :class:`~universal.inference.result.Segmentation`.

Every stage's output pickles, so the stages may run in different processes or machines; a
prediction's masks travel as packed bits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from universal.catalog import Catalog, ClassKey
from universal.errors import UniversalError
from universal.inference.postprocess import postprocess, required_classes
from universal.inference.preprocess import to_model_space, to_scan_grid
from universal.inference.report import class_statistics, lesion_findings
from universal.inference.result import Segmentation
from universal.inference.settings import InferenceSettings
from universal.io.scans import Scan
from universal.nets.model import InputSpec, UniversalModel
from universal.quality import check_label_map
from universal.version import __version__

IO_STAGES = ("read", "write")  # seconds reading the scan and writing results, not counted in a report's total


@dataclass(eq=False)
class PreparedScan:
    """A scan in model space, ready for the network.

    ``image``: float32 (1, X, Y, Z), 0..1, with affine ``model_affine``. ``affine`` and ``shape``:
    the scan's own grid, which the results go back to. ``wanted``: the class ids asked for;
    ``computed``: those plus the organs their post-processing reads. ``timings``: seconds per stage
    so far.
    """

    name: str
    input: dict
    affine: np.ndarray
    shape: tuple[int, int, int]
    image: torch.Tensor
    model_affine: np.ndarray
    wanted: list[int]
    computed: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        """The network's output channels of ``computed``."""
        return [class_id - 1 for class_id in self.computed]


@dataclass(eq=False)
class Prediction:
    """The network's answer for a :class:`PreparedScan`: ``masks``, bool (K, X, Y, Z) in model space,
    one per computed class; how it ran (``windows`` of the full grid, ``device``, ``precision``,
    ``compiled``, ``runtime``: ``"torch"`` or ``"openvino"``; for an int8 trunk its measured
    ``agreement`` with float32) and its ``seconds``."""

    masks: np.ndarray
    windows: int
    device: str
    precision: str
    compiled: bool
    seconds: float
    runtime: str = "torch"
    agreement: dict | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "masks": (self.masks.shape, np.packbits(self.masks, axis=None))}

    def __setstate__(self, state: dict) -> None:
        shape, bits = state["masks"]
        self.__dict__.update(state, masks=np.unpackbits(bits, count=int(np.prod(shape))).view(bool).reshape(shape))


@dataclass(frozen=True)
class CasePlan:
    """What the stages around the network need of a model (its classes, input and description) and
    the settings; holds no weights. ``model`` describes the model for reports."""

    catalog: Catalog
    input_spec: InputSpec
    settings: InferenceSettings
    model: dict

    @classmethod
    def for_model(cls, model: UniversalModel, settings: InferenceSettings) -> CasePlan:
        description = {"backbone": model.backbone_name, "classes": len(model.catalog), "provenance": model.provenance}
        return cls(model.catalog, model.input_spec, settings, description)

    def prepare(self, scan: Scan, classes: Iterable[ClassKey] | None = None) -> PreparedScan:
        """``scan`` in model space, with the classes to compute (names or ids; all when ``None``).
        Raises :class:`UniversalError` for no classes or an unknown one, or when nothing in the scan
        lies above the HU window."""
        started = time.perf_counter()
        wanted = self.catalog.select(classes)
        if not wanted:
            raise UniversalError("no classes asked for; name at least one class or leave classes out")
        computed = required_classes(wanted, self.catalog) if self.settings.postprocess else wanted
        try:
            image, model_affine = to_model_space(scan.image, scan.affine, self.input_spec)
        except ValueError as error:
            raise UniversalError(f"{scan.source or scan.name}: {error}") from error
        return PreparedScan(scan.name, scan.describe(), scan.affine, scan.shape, image, model_affine, wanted,
                            computed, {"preprocess": round(time.perf_counter() - started, 3)})

    def finish(self, prepared: PreparedScan, prediction: Prediction) -> Segmentation:
        """Post-process ``prediction``'s masks, paint the label map on the scan's grid and measure it."""
        timings = {**prepared.timings, "network": round(prediction.seconds, 3)}
        started = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal started
            timings[stage] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()

        masks = dict(zip(prepared.computed, prediction.masks, strict=True))
        if self.settings.postprocess:
            masks = postprocess(masks, self.catalog, prepared.model_affine)
        masks = {class_id: masks[class_id] for class_id in prepared.wanted}
        lap("postprocess")
        label_map = to_scan_grid(self.paint(masks), prepared.model_affine, prepared.affine, prepared.shape)
        result = Segmentation(prepared.name, prepared.affine, self.catalog, label_map, masks, prepared.model_affine)
        lap("scan grid")
        classes_report, lesions_report = {}, {}
        for class_id in prepared.wanted:
            info = self.catalog[class_id]
            blocks = result.mask_blocks(class_id)  # the same figures as the whole grid's, sooner
            classes_report[info.name] = {"id": class_id, **class_statistics(blocks.core, prepared.affine,
                                                                              blocks.repeats)}
            if info.is_lesion:
                lesions_report[info.name] = lesion_findings(blocks.core, prepared.affine, blocks.corner,
                                                            blocks.repeats)
        lap("measure")
        findings = check_label_map(label_map, prepared.affine, self.catalog, prepared.wanted) \
            if self.settings.checks else []
        lap("check")
        result.report = {
            "case": prepared.name,
            "input": prepared.input,
            "model": self.model,
            "settings": {**self.settings.__dict__, "device": prediction.device, "precision": prediction.precision,
                         "compiled": prediction.compiled, "runtime": prediction.runtime,
                         **({"int8_agreement": prediction.agreement} if prediction.agreement else {}),
                         "classes": [self.catalog[i].name for i in prepared.wanted], "windows": prediction.windows,
                         "model_space_shape": list(prepared.image.shape[1:])},
            "classes": classes_report,
            "lesions": lesions_report,
            "findings": [finding.to_record() for finding in findings],
            "timings_s": {**timings, "total": round(sum(v for k, v in timings.items() if k not in IO_STAGES), 3)},
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
