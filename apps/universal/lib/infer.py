"""The ``universal`` infer task: a request in, :class:`universal.Segmenter` on the image, a label map
and the report out.

One rule for label values, which both real clients read right: **``label_names`` maps each class in
the answer to its voxels' value**, and

- without a subset, and for ids sent as ``label_prompt`` (OHIF's Class Prompts), a voxel's value is
  its class's catalogue id, the id ``/info`` lists (``label_names``: every class, ``{name: id}``, ids
  1..N; for ``label_prompt``, the classes asked for with their ids);
- for a subset named in ``classes`` (3D Slicer's options table), the classes asked for are numbered
  1..K in id order, and ``label_names`` lists exactly them.

OHIF v3 never reads ``label_names``: it names each value by the ``/info`` id (``modelLabelToIdxMap``
in the MONAILabel repository's plugins/ohifv3/extensions/monai-label/src/components/MonaiLabelPanel.tsx),
also for the ids it sends as ``label_prompt``. 3D Slicer sorts ``label_names`` by value and gives
the k-th name to value k (``onClickSegmentation`` and ``updateSegmentationMask`` in
plugins/slicer/MONAILabel/MONAILabel.py), and makes a segment of every name it is given
(``ImportLabelmapToSegmentationNode`` with segment ids: Slicer/Slicer
Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentationsModuleLogic.cxx creates each listed segment
and gives it label value index + 1): so it shows every class for a full answer and exactly the
classes asked for a subset, each by its name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

import universal
from universal.devices import INT8, resolve_device
from universal.errors import UniversalError, UnknownClassError
from universal.io.dicom import read_series, write_segmentation
from universal.io.labels import LABEL_DTYPES, write_label_file
from universal.io.scans import IMAGE_SUFFIXES, ScanError, ScanTooLargeError, image_suffix
from universal.serving.prelabel_cache import Answer, CachedAnswer
from universal.synth import calibration_windows

from .conf import MODEL_NAME, RESULT_COMPRESS, RESULT_DTYPE, http_error, parse_bool, parse_number
from .prelabel import AppPrelabel
from .state import AppState, ModelNotReady, device_choices, precision_choices

log = logging.getLogger(__name__)

DICOM_SEG = ".dcm"  # result_extension of a DICOM SEG answer


def inference_settings(request: dict, default_device: str) -> universal.InferenceSettings:
    """The request's ``threshold``, ``overlap``, ``postprocess``, ``device`` and ``precision``; ValueError
    or UniversalError naming a malformed one (the library checks the ranges and names)."""
    defaults = universal.InferenceSettings()
    settings = universal.InferenceSettings(
        threshold=parse_number("threshold", request.get("threshold"), defaults.threshold),
        overlap=parse_number("overlap", request.get("overlap"), defaults.overlap),
        postprocess=parse_bool("postprocess", request.get("postprocess"), defaults.postprocess),
        device=str(request.get("device") or default_device),
        precision=str(request.get("precision") or defaults.precision),
    )
    resolve_device(settings.device)  # one of this machine's devices, before any model is loaded for it
    return settings


def requested_classes(request: dict):
    """The classes a request asks for: ``classes`` (3D Slicer's option, the API's), or ``label_prompt``
    (the ids OHIF's Class Prompts send); ``None`` for all."""
    return request.get("classes") or request.get("label_prompt") or None


def answer_names(catalog, wanted: list[int], classes, renumbered: bool) -> dict[str, int]:
    """The answer's ``label_names`` by the module docstring's rule: catalogue ids, with every class (all
    asked) or the classes asked (``label_prompt``); or, ``renumbered``, the asked classes as values 1..K
    in id order."""
    if classes is None:
        return catalog.label_map()
    if not renumbered:
        return {catalog[i].name: i for i in wanted}
    return {catalog[i].name: value for value, i in enumerate(wanted, start=1)}


def answer_values(label_map: np.ndarray, wanted: list[int], renumbered: bool) -> np.ndarray:
    """The label map to send (catalogue ids, or ``renumbered``: the ``wanted`` ids as 1..K)."""
    if not renumbered:
        return label_map
    table = np.zeros(256, np.uint8)
    table[wanted] = np.arange(1, len(wanted) + 1)
    return table[label_map]


class UniversalInfer(InferTask):
    """Segmentation over the catalogue's classes. Request parameters: ``classes`` or ``label_prompt``
    (a subset: names or ids, a list or one comma-separated string), ``threshold``, ``overlap``,
    ``device``, ``precision`` (``auto``, or ``int8``: faster on a CPU, its masks within a per-class
    Dice of 0.99 of float32 on the phantom-trained model), ``postprocess``; ``result_extension``
    (``.nrrd``, ``.nii.gz``, ``.nii``, or ``.dcm``: a DICOM SEG referencing the image's series, for a
    PACS's images; default: the image's), ``result_dtype`` (default ``uint8``) and ``result_compress``
    (gzip an NRRD; default false, as MONAI Label's writer)."""

    def __init__(self, state: AppState, prelabel: AppPrelabel):
        defaults = universal.InferenceSettings()
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=None,
            dimension=3,
            description="CLIP-Driven Universal Model: abdominal organs and tumours in CT, classes named by prompts",
            config={"classes": "", "threshold": defaults.threshold, "overlap": defaults.overlap,
                    "postprocess": defaults.postprocess, "device": device_choices(),
                    "precision": precision_choices()},
        )
        self.state, self.prelabel = state, prelabel
        self.served = ThreadPoolExecutor(1, thread_name_prefix="served")  # kept after the answer, in order

    def info(self) -> dict:
        self.labels = self.state.catalog().label_map()
        return {**super().info(), **self.state.describe(), "prelabel": self.prelabel.status()}

    def is_valid(self) -> bool:
        return True  # listed even without weights: /info says whether it is ready

    def get_path(self, validate=True):
        return str(self.state.source) if self.state.source else None

    def __call__(self, request) -> tuple[str, dict]:
        started = time.perf_counter()
        try:
            settings = inference_settings(request, self.state.conf.device)
            classes = requested_classes(request)
            renumbered = bool(request.get("classes"))  # a subset by name: values 1..K (see the module docstring)
            extension = self._extension(request)
            dtype = str(request.get("result_dtype") or RESULT_DTYPE)
            compress = parse_bool("result_compress", request.get("result_compress"), RESULT_COMPRESS)
            if dtype not in LABEL_DTYPES:
                raise ValueError(f"result_dtype must be one of {', '.join(LABEL_DTYPES)}, got {dtype!r}")
        except (ValueError, UniversalError) as error:
            raise http_error(422, f"bad inference parameter: {error}") from error
        with self.prelabel.gate.interactive():  # background pre-labelling waits meanwhile
            return self._answer(request, settings, classes, renumbered, extension, dtype, compress, started)

    def _answer(self, request: dict, settings, classes, renumbered: bool, extension: str, dtype: str, compress: bool,
                started: float) -> tuple[str, dict]:
        """The answer's file and JSON: from the pre-labelling cache for all classes when it holds this
        image's answer, else computed now."""
        try:
            model, version = self.state.serving(settings.device)
            segmenter = universal.Segmenter(model, settings, progress=False, calibration=calibration_windows)
            wanted = segmenter.catalog.select(classes)
            if settings.precision == INT8 and segmenter.device.type == "cpu":
                self.prelabel.int8_trunk(model)  # perhaps being calibrated in the background: wait for it
        except ModelNotReady as error:
            raise http_error(503, str(error)) from error
        except UnknownClassError as error:
            raise http_error(422, f"{error}; GET /info lists the classes (models.{MODEL_NAME}.labels)") from error
        except UniversalError as error:
            raise http_error(422, str(error)) from error
        loaded = time.perf_counter()
        cached = self.prelabel.lookup(request["image"], settings) if classes is None else None
        if cached is not None:
            answer = cached
            read = time.perf_counter()
        else:
            try:
                scan = universal.read_scan(request["image"], max_voxels=self.state.conf.max_image_voxels)
            except ScanError as error:
                status = 413 if isinstance(error, ScanTooLargeError) else 422
                raise http_error(status, f"the image cannot be segmented: {error}") from error
            read = time.perf_counter()
            try:
                result = segmenter(scan, wanted)
            except UniversalError as error:
                raise http_error(422, f"the image cannot be segmented: {error}") from error
            answer = Answer(result.label_map, scan.affine, result.report)
        handle, path = tempfile.mkstemp(suffix=extension)
        os.close(handle)
        as_kept = (dtype, compress) == (RESULT_DTYPE, RESULT_COMPRESS) and not renumbered  # catalogue ids
        if extension == DICOM_SEG:  # a SEG referencing the image's series, to store in the PACS
            write_segmentation(answer.label_map, segmenter.catalog, read_series(request["image"]), path)
        elif as_kept and answer.encoded is not None and answer.encoded.name.endswith(extension):
            shutil.copyfile(answer.encoded, path)  # the file this answer was kept as: the same bytes
        else:
            write_label_file(answer_values(answer.label_map, wanted, renumbered), answer.affine, path, dtype=dtype,
                             compress=compress)
        if request.get("image_id"):
            values = {class_id: segmenter.catalog[class_id].name for class_id in wanted}
            encoded = Path(path).read_bytes() if as_kept and extension == ".nii.gz" else None
            self.served.submit(self._keep_served, request["image_id"], request.get("annotator") or "anonymous",
                               answer, values, version, encoded)
        done = time.perf_counter()
        log.info("segmented %s: %d classes in %.2f s%s", Path(str(request["image"])).name, len(wanted), done - started,
                 " (pre-labelled)" if cached is not None else "")
        described = self.state.describe()
        return path, {
            "label_names": answer_names(segmenter.catalog, wanted, classes, renumbered),
            "report": answer.report,
            "model": {"version": version, "weights": str(self.state.source), "classes": len(segmenter.catalog),
                      "demo": described["demo"], "warning": described["warning"]},
            "latencies": {"load": round(loaded - started, 3), "read": round(read - loaded, 3),
                          "infer": round(done - read, 3), "total": round(done - started, 3),
                          "pre_labelled": cached is not None},
        }

    def flush(self) -> None:
        """Wait until every prediction served so far is kept (a label saved next is measured against it)."""
        self.served.submit(lambda: None).result()

    def _keep_served(self, image_id: str, annotator: str, answer: Answer | CachedAnswer, values: dict, version,
                     encoded: bytes | None) -> None:
        """Remember the prediction ``annotator`` was served (their effort is measured against it; the
        answer's file when it was sent in catalogue ids as a uint8 .nii.gz, else its label map)."""
        try:
            label_map = None if encoded is not None else answer.label_map
            self.state.team.serve(image_id, annotator, label_map, answer.affine, values, version, encoded=encoded)
        except (OSError, UniversalError) as error:
            log.warning("the prediction served for %s could not be kept: %s", image_id, error)

    @staticmethod
    def _extension(request: dict) -> str:
        extension = str(request.get("result_extension") or "") or image_suffix(request.get("image", ""))
        extension = (extension if extension.startswith(".") else f".{extension}").lower()
        if extension == DICOM_SEG and not Path(str(request.get("image", ""))).is_dir():
            raise ValueError("result_extension .dcm (a DICOM SEG) needs an image that is a DICOM series")
        if extension not in (*IMAGE_SUFFIXES, DICOM_SEG):
            raise ValueError(f"result_extension must be one of {', '.join((*IMAGE_SUFFIXES, DICOM_SEG))}, "
                             f"got {extension!r}")
        return extension
