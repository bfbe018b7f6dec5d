"""Read released and own checkpoints into a :class:`UniversalModel`; write the own format.

Accepted sources:

* the released U-Net file: ``{'net': {'module.backbone.down_tr64…', 'module.GAP…', …}}``;
* the released Swin UNETR file, whose backbone keys lack ``backbone.``
  (``module.swinViT.*``, ``module.encoder1.*``, ``module.decoder5.*``);
* plain state dicts in either naming, with or without ``module.``;
* the own format (``format: universal-model``) written by :func:`save_model`: weights, the class
  catalogue with its embeddings, the input the model expects, and provenance; and a training run's
  ``checkpoint.pt``, which holds one;
* a released model by name (``"unet"``, ``"swinunetr"``), resolved locally or downloaded and
  verified (:data:`RELEASED_CHECKPOINTS`).

Everything is read with ``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from universal.catalog import Catalog
from universal.errors import CatalogError, CheckpointError
from universal.io.atomic import atomic_open
from universal.io.download import RELEASE_LICENCE, RemoteFile, resolve
from universal.nets.model import InputSpec, UniversalModel
from universal.nets.registry import BACKBONES, backbone_record
from universal.version import __version__

log = logging.getLogger(__name__)

# The download links of ljwztc/CLIP-Driven-Universal-Model README.md ("Model" table). Hugging Face
# publishes each file's SHA-256 with the redirect (see universal.io.download); HF_ENDPOINT names a mirror
# of the hub, as for huggingface_hub (src/huggingface_hub/constants.py).
_RELEASE_URL = "https://huggingface.co/ljwztc/CLIP-Driven-Universal-Model/resolve/main/"
RELEASED_CHECKPOINTS = {
    name: RemoteFile(
        description=f"released {record.title} weights ({record.released_file})",
        url=_RELEASE_URL + record.released_file,
        filename=f"weights/{record.released_file}",
        env=record.weights_env,
        licence=RELEASE_LICENCE,
        mirror_env="HF_ENDPOINT",
    )
    for name, record in BACKBONES.items()
}

FORMAT = "universal-model"
FORMAT_VERSION = 1
TRAINING_FORMAT = "universal-training"  # universal.training.loop's resumable state, with the model inside

# Released names → this library's names (prefix renames, applied after stripping "module.").
_RENAMES = (("organ_embedding", "class_embeddings"), ("precls_conv.", "feature_head."), ("GAP.", "image_pool."))
# Buffers a file may carry that the model never reads (U-Net running statistics) or rebuilds from
# its architecture (Swin relative position index).
_IGNORED_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked", ".relative_position_index")
_LEGACY_PREFIXES = tuple(prefix for record in BACKBONES.values() for prefix in record.legacy_prefixes)


@dataclass
class Checkpoint:
    """The contents of a checkpoint, in this library's naming."""

    state_dict: dict[str, torch.Tensor]
    backbone: str
    width: int
    source_format: str
    catalog: Catalog | None
    input_spec: InputSpec = field(default_factory=InputSpec)
    provenance: dict = field(default_factory=dict)


def load_model(
    source: str | Path | Mapping,
    device: str | torch.device = "cpu",
    *,
    backbone: str | None = None,
    catalog: Catalog | None = None,
) -> UniversalModel:
    """A :class:`UniversalModel` in eval mode from a checkpoint file, a state dict or a released name.

    The backbone is detected from the keys; pass ``backbone`` to insist on one. ``catalog`` names the
    classes of a file that does not carry its own catalogue and does not hold the 32 released classes.
    """
    if (name := released_name(source)) is not None:
        source = resolve(RELEASED_CHECKPOINTS[name])
    checkpoint = read_checkpoint(source)
    if backbone and backbone != checkpoint.backbone:
        raise CheckpointError(
            f"{_describe(source)} holds a {BACKBONES[checkpoint.backbone].title} model, not "
            f"{backbone_record(backbone).title}; use backbone='{checkpoint.backbone}' or the other file"
        )
    embeddings = checkpoint.state_dict.get("class_embeddings")
    if embeddings is None:
        raise CheckpointError(f"{_describe(source)} has no class embeddings (organ_embedding); it is incomplete")
    chosen = checkpoint.catalog or catalog or _catalog_for(len(embeddings), source)
    if len(chosen) != len(embeddings):
        raise CheckpointError(
            f"{_describe(source)} holds {len(embeddings)} class embeddings but the catalogue has "
            f"{len(chosen)} classes; pass the catalogue the model was trained with"
        )
    model = UniversalModel(
        checkpoint.backbone, catalog=chosen, width=checkpoint.width, input_spec=checkpoint.input_spec
    )
    _load_weights(model, checkpoint.state_dict, source)
    model.source_format = checkpoint.source_format
    model.provenance = dict(checkpoint.provenance)
    origin = Path(source).name if isinstance(source, str | Path) else "a state dict"
    model.provenance.setdefault("origin", f"{checkpoint.source_format}: {origin}")
    return model.to(device).eval()


def released_name(source) -> str | None:
    """The released model ``source`` names (``"unet"``, ``"swinunetr"``), or ``None`` for anything else,
    a file of that name included."""
    name = str(source) if isinstance(source, str | Path) else None
    return name if name in RELEASED_CHECKPOINTS and not Path(name).exists() else None


def read_checkpoint(source: str | Path | Mapping) -> Checkpoint:
    """Parse a checkpoint without building a model (see the module docstring for accepted sources)."""
    content = _torch_load(source) if isinstance(source, str | Path) else source
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{_describe(source)} holds a {type(content).__name__}, not a checkpoint dictionary")
    if content.get("format") == TRAINING_FORMAT and isinstance(content.get("model"), Mapping):
        content = content["model"]  # a training run's checkpoint holds the model in the own format
    if content.get("format") == FORMAT:
        return _read_own(content, source)
    for container in ("net", "state_dict", "model"):
        if isinstance(content.get(container), Mapping):
            return _read_state_dict(content[container], source, f"released layout ('{container}')")
    if content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return _read_state_dict(content, source, "state dict")
    raise CheckpointError(
        f"{_describe(source)} is not a Universal Model checkpoint: no 'net' or 'state_dict' entry and not a "
        f"state dict (top-level keys: {_preview(content)})"
    )


def save_model(model: UniversalModel, path: str | Path, *, provenance: Mapping | None = None) -> Path:
    """Write ``model`` atomically in the own format; returns ``path``.

    The file holds the weights, the catalogue (names, prompts, embeddings), the expected input and
    provenance (``model.provenance`` updated with ``provenance``).
    """
    with atomic_open(path) as stream:
        torch.save(model_record(model, provenance=provenance), stream)
    return Path(path)


def model_record(model: UniversalModel, *, provenance: Mapping | None = None) -> dict:
    """The own-format dictionary of ``model`` (what :func:`save_model` writes), tensors on the CPU."""
    record = {
        **model.provenance,
        **(provenance or {}),
        "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "library_version": __version__,
        "torch_version": str(torch.__version__),
    }
    content = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": model.backbone_name,
        "width": model.width,
        "classes": model.catalog.to_records(),
        "input": model.input_spec.to_record(),
        "provenance": record,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not _ignored(k)},
    }
    return content


# -- reading ----------------------------------------------------------------------------------


# What a checkpoint may hold besides tensors and plain containers: numpy numbers (a training script
# that saved a numpy epoch or learning rate), i.e. numpy's scalar constructor and numeric dtypes. None
# of them can run code.
_NUMPY_NUMBERS = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64)
_ALLOWED_GLOBALS = {f"{kind.__module__}.{kind.__name__}": kind
                    for kind in (np.core.multiarray.scalar, np.dtype, *(type(np.dtype(n)) for n in _NUMPY_NUMBERS))}


def _torch_load(path: str | Path) -> object:
    """The file's content, read with ``weights_only=True``; a file that holds other Python objects is
    read only when each is on the allow-list (and says so), else refused naming them."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Unsupported global" not in str(error):
            lines = str(error).splitlines() if isinstance(error, RuntimeError | EOFError) else []
            detail = lines[0] if lines else type(error).__name__
            raise CheckpointError(
                f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint ({detail})"
            ) from error
    found = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    refused = [name for name in found if name not in _ALLOWED_GLOBALS]
    if refused:
        raise CheckpointError(
            f"cannot read checkpoint {path} safely: it holds Python objects other than weights "
            f"({', '.join(refused)}). Re-save its tensors, e.g. torch.save({{'net': model.state_dict()}}, path), "
            "with code you trust"
        )
    log.info("checkpoint %s holds numpy numbers besides tensors (%s); read through the allow-list", path,
             ", ".join(found))
    with torch.serialization.safe_globals(list(_ALLOWED_GLOBALS.values())):
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_own(content: Mapping, source) -> Checkpoint:
    if content.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{_describe(source)} was written by a newer version (format {content['format_version']}); "
            "upgrade the universal package"
        )
    try:
        catalog = Catalog.from_records(content["classes"])
        checkpoint = _read_state_dict(content["state_dict"], source, "universal-model")
        checkpoint.catalog = catalog
        checkpoint.input_spec = InputSpec.from_record(content["input"])
        checkpoint.provenance = dict(content.get("provenance") or {})
    except (KeyError, TypeError, ValueError, CatalogError) as error:
        raise CheckpointError(f"{_describe(source)} is a damaged universal-model file: {error}") from error
    if content.get("backbone") not in (None, checkpoint.backbone):
        raise CheckpointError(
            f"{_describe(source)} says backbone {content['backbone']} but holds {checkpoint.backbone} weights"
        )
    return checkpoint


def _read_state_dict(raw: Mapping, source, source_format: str) -> Checkpoint:
    state = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{_describe(source)}: entry '{key}' is a {type(value).__name__}, not a tensor")
        name = _normalize_key(key)
        if not _ignored(name):
            state[name] = value
    detected = [name for name, record in BACKBONES.items() if any(k.startswith(record.marker) for k in state)]
    if len(detected) != 1:
        found = "both U-Net and Swin UNETR" if detected else "neither U-Net (down_tr64.*) nor Swin UNETR (swinViT.*)"
        raise CheckpointError(
            f"{_describe(source)} is not a Universal Model checkpoint: it holds {found} backbone weights "
            f"(first keys: {_preview(raw)})"
        )
    backbone = detected[0]
    width_key = BACKBONES[backbone].width_key
    if width_key not in state:
        raise CheckpointError(f"{_describe(source)} lacks {width_key}; the file is incomplete")
    return Checkpoint(
        state_dict=state,
        backbone=backbone,
        width=int(state[width_key].shape[0]),
        source_format=f"{BACKBONES[backbone].title} {source_format}",
        catalog=None,
    )


def _normalize_key(key: str) -> str:
    if key.startswith("module."):
        key = key[len("module.") :]
    if key.startswith(_LEGACY_PREFIXES):
        key = "backbone." + key
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _ignored(key: str) -> bool:
    return key.endswith(_IGNORED_SUFFIXES)


def _catalog_for(num_classes: int, source) -> Catalog:
    default = Catalog.default()
    if num_classes == len(default):
        return default
    raise CheckpointError(
        f"{_describe(source)} holds {num_classes} classes, not the {len(default)} released ones, and no "
        "catalogue; pass catalog=Catalog.from_yaml(...) naming its classes in order"
    )


def _load_weights(model: UniversalModel, state: dict[str, torch.Tensor], source) -> None:
    expected = {k: v for k, v in model.state_dict().items() if not _ignored(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_preview(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_preview(unexpected)})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} with the wrong shape ({_preview(wrong_shape)})")
    if problems:
        raise CheckpointError(
            f"{_describe(source)} does not fit a {model.title} (width {model.width}) model: "
            + "; ".join(problems)
        )
    not_finite = non_finite(state)
    if not_finite:
        raise CheckpointError(f"{_describe(source)} has NaN or infinite weights in {_preview(not_finite)}")
    model.load_state_dict(state, strict=False)


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` that hold NaN or infinite values."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _describe(source) -> str:
    return f"checkpoint {source}" if isinstance(source, str | Path) else "the state dict"


def _preview(keys, limit: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")
