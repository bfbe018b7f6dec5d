"""CLIP-Driven Universal Model: one 3D CT network whose classes are named by text prompts."""

from universal.catalog import Catalog, ClassInfo
from universal.errors import CheckpointError, UniversalError, UnknownClassError, WeightsUnavailableError
from universal.inference import InferenceSettings, Segmentation, Segmenter, segment
from universal.io.scans import Scan, ScanError, read_scan
from universal.nets.checkpoint import load_model, read_checkpoint, save_model
from universal.nets.model import InputSpec, UniversalModel
from universal.version import __version__

__all__ = [
    "Catalog",
    "CheckpointError",
    "ClassInfo",
    "InferenceSettings",
    "InputSpec",
    "Scan",
    "ScanError",
    "Segmentation",
    "Segmenter",
    "UniversalError",
    "UniversalModel",
    "UnknownClassError",
    "WeightsUnavailableError",
    "__version__",
    "load_model",
    "read_checkpoint",
    "read_scan",
    "save_model",
    "segment",
]
