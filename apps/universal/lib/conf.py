"""The app's settings (``--conf`` keys) and the reading of request parameters, which arrive as
strings or JSON values. Ranges are the library's: values are checked where they are used
(:class:`universal.InferenceSettings`, :class:`universal.serving.finetune.FinetuneSettings`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

from fastapi import HTTPException

from universal.errors import UniversalError
from universal.nets.checkpoint import RELEASED_CHECKPOINTS
from universal.nets.registry import DEFAULT_BACKBONE
from universal.serving.finetune import FinetuneSettings
from universal.serving.review import TRAIN_ON

log = logging.getLogger(__name__)

MODEL_NAME = "universal"
# an answer's voxel type and NRRD gzip unless the request says otherwise, as MONAI Label's own writer
# (Project-MONAI/MONAILabel monailabel/transform/writer.py: Writer.__call__)
RESULT_DTYPE, RESULT_COMPRESS = "uint8", False
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
FINETUNE = FinetuneSettings()  # the library's defaults, which the --conf keys of training default to


def http_error(status: int, message: str) -> HTTPException:
    """An HTTP error whose body is ``{"detail": message}``."""
    return HTTPException(status_code=status, detail=message)


def parse_bool(name: str, value, default: bool) -> bool:
    """``value`` (a bool, or true/false/yes/no/on/off/1/0) as a bool; ``default`` when empty."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def parse_number(name: str, value, default: float, *, integer: bool = False) -> float:
    """``value`` (a finite number or its text) as a float, or an int when ``integer``; ``default`` when empty."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer and number != int(number):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number) if integer else number


@dataclass(frozen=True)
class AppConf:
    """The app's ``--conf`` keys; see the README's table."""

    models: str = MODEL_NAME
    backbone: str = DEFAULT_BACKBONE
    weights: str = ""
    download: bool = True
    model_dir: str = ""
    device: str = "auto"
    restore: int = 0
    max_epochs: float = FINETUNE.epochs
    learning_rate: float = FINETUNE.learning_rate
    val_split: float = FINETUNE.held_out
    gate_tolerance: float = FINETUNE.tolerance
    inline_scoring: int = 2
    demo_model: str = ""
    team_dir: str = ""
    train_on: str = "final"
    preload: bool = False
    allow_local_paths: bool = False
    max_image_voxels: int = 512 * 512 * 2048  # a volume's values; 2 GiB as float32
    max_upload_mb: float = 2048.0
    prelabel: str = "auto"  # auto: on for a studies folder, off for a PACS (each image would be fetched)
    prelabel_cache_mb: float = 2048.0

    @classmethod
    def parse(cls, conf: dict) -> AppConf:
        """The settings from ``--conf`` values (strings); ValueError naming a key whose value is not
        allowed."""
        known = {field.name: field for field in fields(cls)}
        unknown = sorted(set(conf) - set(known) - {"server_mode"})
        if unknown:
            log.warning("unknown --conf keys %s ignored; known keys: %s", unknown, ", ".join(sorted(known)))
        values = {}
        for name, field in known.items():
            given, key = conf.get(name), f"--conf {name}"
            if field.type in ("bool", bool):
                values[name] = parse_bool(key, given, field.default)
            elif field.type in ("int", "float", int, float):
                values[name] = parse_number(key, given, field.default, integer=field.type in ("int", int))
            else:
                values[name] = field.default if given is None else str(given)
        if values["models"] not in (MODEL_NAME, "all"):
            raise ValueError(f"--conf models must be '{MODEL_NAME}' (or 'all'), got {values['models']!r}")
        if values["backbone"] not in RELEASED_CHECKPOINTS:
            raise ValueError(f"--conf backbone must be {' or '.join(RELEASED_CHECKPOINTS)}, got {values['backbone']!r}")
        if values["prelabel"] != "auto":
            values["prelabel"] = str(parse_bool("--conf prelabel", values["prelabel"], False)).lower()
        if values["prelabel_cache_mb"] < 0:
            raise ValueError(f"--conf prelabel_cache_mb must not be negative, got {values['prelabel_cache_mb']}")
        if values["train_on"] not in TRAIN_ON:
            raise ValueError(f"--conf train_on must be {' or '.join(TRAIN_ON)}, got {values['train_on']!r}")
        for name in ("restore", "inline_scoring"):
            if values[name] < 0:
                raise ValueError(f"--conf {name} must not be negative, got {values[name]}")
        settings = cls(**{**values, "models": MODEL_NAME})
        try:
            settings.finetune_settings()
        except UniversalError as error:
            raise ValueError(f"--conf: {error}") from error
        return settings

    def finetune_settings(self, **overrides) -> FinetuneSettings:
        """The fine-tuning settings these keys give, with ``overrides`` (FinetuneSettings fields)."""
        return FinetuneSettings(**{"epochs": self.max_epochs, "learning_rate": self.learning_rate,
                                   "held_out": self.val_split, "tolerance": self.gate_tolerance,
                                   "device": self.device, **overrides})
