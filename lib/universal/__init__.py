"""CLIP-Driven Universal Model: one 3D CT network whose classes are named by text prompts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("universal-model")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from .catalog import Catalog, ClassInfo
from .checkpoint import load_model, read_checkpoint, save_model
from .errors import CheckpointError, UniversalError, UnknownClassError, WeightsUnavailableError
from .inference import InferenceSettings, Segmentation, Segmenter, segment
from .model import InputSpec, UniversalModel
from .scans import Scan, ScanError, read_scan

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
