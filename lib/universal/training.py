"""Training on partially labelled datasets, and teaching a model new classes.

:func:`train` does the whole job: builds or loads the model, adds classes, samples crops uniformly
across datasets, optimises the partial-label loss, validates, and writes the run folder:

``RUN/checkpoint.pt``  resumable state (model in the own format, optimiser, schedule, step)
``RUN/model.pt``       the latest model in the own format (``universal segment --model RUN/model.pt``)
``RUN/metrics.csv``    step, learning rate, loss, seconds per step
``RUN/validation.csv`` step, class, mean Dice over the validation cases that annotate it
``RUN/tensorboard/``   the same figures for TensorBoard (when it is installed)
``RUN/run.json``       the datalist, the settings, the classes added and how

Every crop is a pure function of (seed, step, micro-batch, process), so a resumed run samples what
an uninterrupted one would. Several processes (``torchrun``) train with DistributedDataParallel;
process 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .backbones import DEFAULT_BACKBONE
from .catalog import Catalog
from .checkpoint import TRAINING_FORMAT, load_model, model_record, read_checkpoint
from .data import DataError, Datalist, DatasetTemplate, PartialLabelTargetd, left_side_mask
from .errors import UniversalError
from .inference import PRECISIONS, InferenceSettings, Segmenter, resolve_device
from .io_utils import atomic_open, atomic_write_text
from .losses import partial_label_loss
from .model import InputSpec, UniversalModel


@dataclass(frozen=True)
class TrainSettings:
    """How a model is trained.

    ``steps``: optimiser steps; ``batch_size``: crops per network call and process; ``accumulate``:
    calls per step; ``crop_size``: voxels (default: the model's window); learning rate rises linearly
    from 0 over ``warmup_steps`` then follows a cosine to 0 (AdamW). ``precision``: ``"auto"``
    (bfloat16 autocast on CUDA GPUs that support it, float32 otherwise), ``"float32"``,
    ``"bfloat16"`` or ``"float16"``. ``freeze_base``: only the added classes' embeddings train, so
    every other class computes exactly as before; ``distill``: when classes are added without
    ``freeze_base``, a frozen copy of the model teaches the old classes where a case does not
    annotate them. ``checkpoint_every`` / ``validate_every``: steps (0: only at the end).
    ``max_grad_norm``: gradients are scaled down to this norm when larger (0: never), which keeps the
    generated heads from diverging at high learning rates.
    """

    steps: int = 2000
    batch_size: int = 2
    accumulate: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    crop_size: tuple[int, int, int] | None = None
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 100
    validate_every: int = 0
    freeze_base: bool = False
    distill: bool = True
    embedding_learning_rate: float = 1e-2
    max_grad_norm: float = 1.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise UniversalError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "validate_every", "seed"):
            if getattr(self, name) < 0:
                raise UniversalError(f"{name.replace('_', ' ')} must not be negative, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.embedding_learning_rate <= 0 or self.weight_decay < 0:
            raise UniversalError("learning rates must be positive and weight decay not negative")
        if self.max_grad_norm < 0:
            raise UniversalError(f"max grad norm must not be negative (0: no clipping), got {self.max_grad_norm}")
        if self.precision not in ("auto", *PRECISIONS):
            raise UniversalError(f"precision must be auto, {', '.join(PRECISIONS)}; got {self.precision!r}")

    def to_record(self) -> dict:
        record = asdict(self)
        record["crop_size"] = list(self.crop_size) if self.crop_size else None
        return record

    @classmethod
    def from_record(cls, record: Mapping) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        if values.get("crop_size"):
            values["crop_size"] = tuple(int(s) for s in values["crop_size"])
        return cls(**values)


@dataclass(frozen=True)
class NewClass:
    """A class to add: ``name``, its ``prompt`` (default: the released template) and optionally its
    512-value ``embedding`` (default: the prompt's CLIP embedding)."""

    name: str
    prompt: str | None = None
    embedding: torch.Tensor | None = None
    kind: str = "organ"

    def to_record(self) -> dict:
        embedding = None if self.embedding is None else [float(v) for v in self.embedding.flatten()]
        return {"name": self.name, "prompt": self.prompt, "embedding": embedding, "kind": self.kind}

    @classmethod
    def from_record(cls, record: Mapping) -> NewClass:
        embedding = record.get("embedding")
        return cls(record["name"], record.get("prompt"), None if embedding is None else torch.tensor(embedding),
                   record.get("kind", "organ"))


@dataclass
class TrainResult:
    """What a run produced: the model, the steps done, and validation Dice per class."""

    model: UniversalModel
    steps: int
    run_dir: Path
    validation: dict[str, float] = field(default_factory=dict)
    old_classes_before: dict[str, float] = field(default_factory=dict)


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The factor on the base learning rate for optimiser step ``step`` (0-based): linear warm-up
    from 0, then a cosine to 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


# -- the whole job ----------------------------------------------------------------------------


def train(
    datalist: Datalist | str | Path,
    run_dir: str | Path,
    *,
    model: UniversalModel | str | Path | None = None,
    settings: TrainSettings | None = None,
    add_classes: Sequence[NewClass] = (),
    backbone: str = DEFAULT_BACKBONE,
    width: int | None = None,
    input_spec: InputSpec | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` (a model, a checkpoint path or released name; ``None``: a new ``backbone`` of
    ``width`` with ``input_spec``, whose classes are those the datalist annotates) on ``datalist``.

    ``add_classes`` and classes that a dataset template names but the model lacks are added first
    (CLIP embeddings of their prompts unless given). ``resume`` continues the run in ``run_dir``
    from its last checkpoint, with its settings; without it, a folder that already holds a run is
    refused. ``on_step(step)`` is called after every optimiser step (process 0).
    """
    run_dir = Path(run_dir)
    datalist = datalist if isinstance(datalist, Datalist) else Datalist.load(datalist)
    checkpoint_path = run_dir / "checkpoint.pt"
    state = None
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("format") != TRAINING_FORMAT:
            raise UniversalError(f"{checkpoint_path} is not a training checkpoint")
        settings = TrainSettings.from_record(state["settings"])
        model = load_model(state["model"])
        base_classes = int(state["base_classes"])
    else:
        if checkpoint_path.is_file():
            raise UniversalError(
                f"{run_dir} already holds a training run (checkpoint.pt); continue it with --resume or choose "
                "another folder"
            )
        settings = settings or TrainSettings()
        model = _initial_model(model, datalist, backbone, width, input_spec, settings.seed)
        base_classes = len(model.catalog)
        _add_classes(model, [*add_classes, *_classes_named_by_templates(model.catalog, datalist, add_classes)])
    if settings.freeze_base and base_classes == len(model.catalog):
        raise UniversalError("--freeze-base trains only added classes, and none were added; name one with --add-class")
    trainer = Trainer(model, datalist, run_dir, settings, base_classes=base_classes, progress=progress)
    if state is not None:
        trainer.restore(state)
    return trainer.fit(on_step=on_step)


def _initial_model(model, datalist: Datalist, backbone: str, width, input_spec, seed: int) -> UniversalModel:
    if isinstance(model, UniversalModel):
        return model
    if model is not None:
        return load_model(model)
    torch.manual_seed(seed)
    catalog = catalog_for(datalist.classes)
    from .text import catalog_embeddings

    embeddings = catalog_embeddings(catalog)
    return UniversalModel(backbone, catalog=catalog, class_embeddings=embeddings, width=width, input_spec=input_spec)


def catalog_for(names: Sequence[str]) -> Catalog:
    """A catalogue of the released classes among ``names``, in that order and renumbered 1..N, with
    their released prompts and metadata (parents outside it dropped)."""
    released = Catalog.default()
    chosen = list(dict.fromkeys(released[n].name for n in names if n in released))
    if not chosen:
        raise DataError("the datalist annotates no class of the catalogue; add its classes with --add-class")
    records = []
    for number, name in enumerate(chosen, start=1):
        record = released[name].to_record()
        record.update(id=number, parents=[p for p in record["parents"] if p in chosen])
        records.append(record)
    return Catalog.from_records(records)


def _classes_named_by_templates(catalog: Catalog, datalist: Datalist, asked: Sequence[NewClass]) -> list[NewClass]:
    asked_names = {c.name.lower() for c in asked}
    missing = [n for n in datalist.classes if n not in catalog and n.lower() not in asked_names]
    return [NewClass(name) for name in missing]


def _add_classes(model: UniversalModel, classes: Sequence[NewClass]) -> None:
    encoder = None
    for new in classes:
        if new.embedding is None and encoder is None:
            from .text import TextEncoder

            encoder = TextEncoder()
        model.add_class(new.name, new.prompt, new.embedding, kind=new.kind, text_encoder=encoder)


# -- the loop ---------------------------------------------------------------------------------


class Trainer:
    """Optimises a model on a datalist; see :func:`train`.

    ``base_classes``: the number of classes the model had before classes were added (their output
    channels come first).
    """

    def __init__(
        self,
        model: UniversalModel,
        datalist: Datalist,
        run_dir: Path,
        settings: TrainSettings,
        *,
        base_classes: int,
        progress: bool = True,
    ):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = _process_device(settings.device, self.distributed)
        self.dtype = _autocast_dtype(settings.precision, self.device)
        self.model = model.to(self.device)
        self.base_classes = base_classes
        self.progress = progress and self.rank == 0
        self.step = 0
        crop = settings.crop_size or model.input_spec.window_size
        self.sampler = CropSampler(datalist, model.catalog, model.input_spec, crop, settings)
        self.validation_cases = datalist.validation
        self.teacher = self._teacher() if settings.distill and not settings.freeze_base else None
        self.parameters = self._trainable_parameters()
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=self._base_rate(), weight_decay=settings.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: learning_rate_factor(s, settings.warmup_steps, settings.steps)
        )
        self.network = self.model
        if self.distributed and not settings.freeze_base:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        # never compiled: the weights change between validations, and each change would recompile
        self.segmenter = Segmenter(self.model, InferenceSettings(device=str(self.device), compile="off"),
                                   progress=False)

    # -- set-up --

    def _base_rate(self) -> float:
        return self.settings.embedding_learning_rate if self.settings.freeze_base else self.settings.learning_rate

    def _teacher(self) -> UniversalModel | None:
        """A frozen copy of the model's old classes, when classes were added."""
        if self.base_classes == len(self.model.catalog):
            return None
        teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        teacher.class_embeddings = teacher.class_embeddings[: self.base_classes].clone()
        return teacher

    def _trainable_parameters(self) -> list[nn.Parameter]:
        if not self.settings.freeze_base:
            return [p for p in self.model.parameters() if p.requires_grad]
        self.model.requires_grad_(False)
        self.new_embeddings = nn.Parameter(self.model.class_embeddings[self.base_classes:].clone())
        return [self.new_embeddings]

    def _sync_embeddings(self, detach: bool = False) -> None:
        """In ``freeze_base`` mode the model's embedding table is the fixed rows plus the trained ones
        (``detach``: as plain values, once training is over)."""
        if self.settings.freeze_base:
            fixed = self.model.class_embeddings[: self.base_classes].detach()
            trained = self.new_embeddings.detach().clone() if detach else self.new_embeddings
            self.model.class_embeddings = torch.cat([fixed, trained])

    # -- state --

    def state(self) -> dict:
        self._sync_embeddings()
        with torch.no_grad():
            record = model_record(self.model, provenance={"training": {"steps": self.step, "run": str(self.run_dir)}})
        return {
            "format": TRAINING_FORMAT,
            "format_version": 1,
            "step": self.step,
            "base_classes": self.base_classes,
            "settings": self.settings.to_record(),
            "model": record,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def restore(self, state: Mapping) -> None:
        self.step = int(state["step"])
        if self.settings.freeze_base:
            checkpoint = read_checkpoint(state["model"])
            self.new_embeddings.data.copy_(checkpoint.state_dict["class_embeddings"][self.base_classes:])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])

    def save(self) -> None:
        if self.rank != 0:
            return
        state = self.state()
        with atomic_open(self.run_dir / "checkpoint.pt") as stream:
            torch.save(state, stream)
        with atomic_open(self.run_dir / "model.pt") as stream:
            torch.save(state["model"], stream)

    # -- fitting --

    def fit(self, on_step: Callable[[int], None] | None = None) -> TrainResult:
        settings = self.settings
        log = _RunLog(self.run_dir, self.step, enabled=self.rank == 0)
        result = TrainResult(self.model, self.step, self.run_dir)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "run.json", json.dumps(self._describe(), indent=2) + "\n")
            if self.step == 0 and self.base_classes < len(self.model.catalog) and self.validation_cases:
                result.old_classes_before = self.validate(range(self.base_classes))
                log.validation(0, result.old_classes_before, prefix="before/")
        bar = _progress_bar(settings.steps, self.step, self.progress)
        try:
            while self.step < settings.steps:
                started, rate = time.perf_counter(), self.optimizer.param_groups[0]["lr"]
                loss = self.train_step()
                self.step += 1
                log.step(self.step, rate, loss, time.perf_counter() - started)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if settings.validate_every and self.step % settings.validate_every == 0 and self.step < settings.steps:
                    log.validation(self.step, self.validate())
                if settings.checkpoint_every and self.step % settings.checkpoint_every == 0:
                    self.save()
                if on_step is not None and self.rank == 0:
                    on_step(self.step)
            self._sync_embeddings(detach=True)
            result.steps = self.step
            result.validation = self.validate() if self.validation_cases else {}
            log.validation(self.step, result.validation)
        finally:
            bar.close()
            log.close()
        self.save()
        return result

    def train_step(self) -> float:
        """One optimiser step over ``accumulate`` batches; returns the mean loss."""
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(self.settings.accumulate):
            batch = self.sampler.batch(self.step, micro, self.rank, self.world, self.settings.batch_size)
            loss = self._loss(batch) / self.settings.accumulate
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if self.settings.freeze_base and self.distributed:
            dist.all_reduce(self.new_embeddings.grad)
            self.new_embeddings.grad /= self.world
        if self.settings.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.parameters, self.settings.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return total

    def _loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image = batch["image"].to(self.device)
        target = batch["target"].to(self.device)
        annotated = batch["annotated"].to(self.device)
        channels = annotated.any(0).nonzero().flatten()
        if self.teacher is not None:
            channels = torch.unique(torch.cat([channels, torch.arange(self.base_classes, device=self.device)]))
        target, annotated = target[:, channels].float(), annotated[:, channels]
        self._sync_embeddings()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits = self.network(image, classes=(channels + 1).tolist())
            if self.teacher is not None:
                target, annotated = self._distilled(image, target, annotated, channels)
        return partial_label_loss(logits.float(), target, annotated)

    def _distilled(self, image, target, annotated, channels):
        """Old classes a case does not annotate learn the frozen teacher's probabilities."""
        old = channels < self.base_classes
        with torch.no_grad():
            taught = torch.sigmoid(self.teacher(image, classes=(channels[old] + 1).tolist()).float())
        unlabelled = old[None] & ~annotated
        target = target.clone()
        target[:, old] = torch.where(unlabelled[:, old, None, None, None], taught, target[:, old])
        return target, annotated | old[None]

    # -- validation --

    def validate(self, channels: Sequence[int] | None = None) -> dict[str, float]:
        """Mean Dice per class over the validation cases that annotate it (model space, threshold
        0.5, no post-processing); only ``channels`` when given."""
        self._sync_embeddings()
        wanted = set(range(len(self.model.catalog)) if channels is None else channels)
        scores: dict[int, list[float]] = {}
        for index in range(len(self.validation_cases)):
            case = self.sampler.validation_case(index)
            annotated = [int(c) for c in case["annotated"].nonzero().flatten() if int(c) in wanted]
            if not annotated:
                continue
            with torch.no_grad():
                masks = self.segmenter.predict_masks(case["image"], annotated)
            for channel, mask in zip(annotated, masks, strict=True):
                scores.setdefault(channel, []).append(dice(mask, case["target"][channel].numpy().astype(bool)))
        catalog = self.model.catalog
        return {catalog[c + 1].name: float(np.mean(v)) for c, v in sorted(scores.items())}

    def _describe(self) -> dict:
        catalog = self.model.catalog
        return {
            "settings": self.settings.to_record(),
            "processes": self.world,
            "device": str(self.device),
            "precision": str(self.dtype).removeprefix("torch."),
            "backbone": self.model.backbone_name,
            "width": self.model.width,
            "input": self.model.input_spec.to_record(),
            "classes": catalog.names,
            "added_classes": catalog.names[self.base_classes:],
            "datasets": {name: t.classes for name, t in self.sampler.templates.items()},
            "training_cases": len(self.sampler.training),
            "validation_cases": len(self.validation_cases),
        }


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total


def _process_device(name: str, distributed: bool) -> torch.device:
    device = resolve_device(name)
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.get_rank() % torch.cuda.device_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if supported else torch.float32
    return PRECISIONS[precision]


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="training", unit="step", disable=not enabled, dynamic_ncols=True)


# -- crops ------------------------------------------------------------------------------------


class CropSampler:
    """Training crops and validation volumes of a datalist, in model space.

    Cases are read and pre-processed once and kept in memory (image, label and, for datasets with
    right/left pairs, the left-side mask). A batch for (step, micro-batch, process) is drawn from a
    generator seeded by those numbers: item n of the run takes dataset n mod D (uniform across
    datasets), a random case of it, and a random crop: 2:1 foreground:background centres for organ
    datasets, and 5:1:1 lesion:organ:background for datasets that annotate lesions.
    """

    def __init__(
        self, datalist: Datalist, catalog: Catalog, spec: InputSpec, crop: Sequence[int], settings: TrainSettings
    ):
        self.templates: dict[str, DatasetTemplate] = datalist.templates
        self.catalog = catalog
        self.spec = spec
        self.crop = tuple(int(c) for c in crop)
        self.seed = settings.seed
        self.accumulate = settings.accumulate
        self.training = datalist.training
        self.validation = datalist.validation
        self.targets = PartialLabelTargetd(catalog, self.templates)
        self.datasets = sorted({case["dataset"] for case in self.training})
        self.by_dataset = {name: [c for c in self.training if c["dataset"] == name] for name in self.datasets}
        self._cache: dict[tuple[str, str], dict] = {}

    def batch(self, step: int, micro: int, rank: int, world: int, size: int) -> dict[str, torch.Tensor]:
        """``image`` (B, 1, *crop) float32, ``target`` (B, K, *crop) uint8, ``annotated`` (B, K) bool."""
        items = []
        for index in range(size):
            item = ((step * self.accumulate + micro) * world + rank) * size + index
            rng = np.random.default_rng([self.seed, step, micro, rank, index])
            dataset = self.datasets[item % len(self.datasets)]
            case = self.by_dataset[dataset][int(rng.integers(len(self.by_dataset[dataset])))]
            items.append(self._crop(self._prepared(case), rng))
        return {key: torch.stack([item[key] for item in items]) for key in ("image", "target", "annotated")}

    def validation_case(self, index: int) -> dict:
        """``image`` (1, X, Y, Z), ``target`` (K, X, Y, Z), ``annotated`` (K,) of validation case ``index``."""
        prepared = self._prepared(self.validation[index])
        return self.targets(prepared)

    def _prepared(self, case: Mapping) -> dict:
        key = (case["image"], case["label"])
        if key not in self._cache:
            self._cache[key] = self._load(case)
        return self._cache[key]

    def _load(self, case: Mapping) -> dict:
        from monai.data import MetaTensor

        from .preprocess import preprocessing
        from .scans import read_label_map, read_scan

        image = read_scan(case["image"])
        label, label_affine = read_label_map(case["label"])
        if image.shape != label.shape or not np.allclose(image.affine, label_affine, atol=1e-3):
            raise DataError(f"{case['label']} does not lie on the grid of {case['image']} (shape or affine differ)")
        affine = torch.as_tensor(image.affine, dtype=torch.float64)
        data = {
            "image": MetaTensor(torch.from_numpy(image.image.astype(np.float32))[None], affine=affine),
            "label": MetaTensor(torch.from_numpy(label)[None], affine=affine),
        }
        data = preprocessing(self.spec, label_keys=["label"])(data)
        out = {
            "image": data["image"].as_tensor().float(),
            "label": data["label"].as_tensor().round().to(torch.uint8),
            "dataset": case["dataset"],
        }
        template = self.templates[case["dataset"]]
        if template.has_pairs:
            left = left_side_mask(out["label"][0].numpy(), out["image"][0].numpy(), template, self.catalog)
            out["left"] = torch.from_numpy(left)[None]
        return out

    def _crop(self, prepared: Mapping, rng: np.random.Generator) -> dict:
        from monai.transforms import RandCropByLabelClassesd, RandCropByPosNegLabeld, SpatialPadd

        keys = [k for k in ("image", "label", "left") if k in prepared]
        data = SpatialPadd(keys, spatial_size=self.crop)({k: prepared[k] for k in keys})
        template = self.templates[prepared["dataset"]]
        lesion_values = [v for v, names in template.labels.items() if self.catalog[names[0]].is_lesion]
        if lesion_values:
            ratios = [1.0] + [5.0 if v in lesion_values else (1.0 if v in template.labels else 0.0)
                              for v in range(1, max(template.labels) + 1)]
            cropper = RandCropByLabelClassesd(keys, "label", self.crop, ratios=ratios, num_classes=len(ratios),
                                              num_samples=1, warn=False)
        else:
            cropper = RandCropByPosNegLabeld(keys, "label", self.crop, pos=2, neg=1, num_samples=1,
                                             image_key="image", image_threshold=0)
        cropper.set_random_state(seed=int(rng.integers(2**31)))
        crop = {key: _plain(value) for key, value in cropper(data)[0].items() if key in keys}
        image = crop["image"].float()
        if rng.random() < 0.2:  # intensity shift, as in the released training
            image = image + float(rng.uniform(-0.1, 0.1))
        out = self.targets({**crop, "image": image, "dataset": prepared["dataset"]})
        return {"image": image, "target": out["target"], "annotated": out["annotated"]}


def _plain(value) -> torch.Tensor:
    """A MONAI MetaTensor (or array) as a plain tensor."""
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)


# -- logs -------------------------------------------------------------------------------------


class _RunLog:
    """metrics.csv, validation.csv and TensorBoard events of a run; rows past ``step`` (left by an
    interrupted run) are dropped when it resumes."""

    def __init__(self, run_dir: Path, step: int, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = run_dir / "metrics.csv"
        self.scores = run_dir / "validation.csv"
        _keep_rows(self.metrics, ["step", "learning_rate", "loss", "seconds"], step)
        _keep_rows(self.scores, ["step", "class", "dice"], step)
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1)

    def step(self, step: int, rate: float, loss: float, seconds: float) -> None:
        if not self.enabled:
            return
        with self.metrics.open("a", newline="") as stream:
            csv.writer(stream).writerow([step, f"{rate:.6g}", f"{loss:.6f}", f"{seconds:.3f}"])
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", rate, step)

    def validation(self, step: int, scores: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled or not scores:
            return
        with self.scores.open("a", newline="") as stream:
            for name, value in scores.items():
                csv.writer(stream).writerow([step, f"{prefix}{name}", f"{value:.4f}"])
        if self.writer is not None:
            for name, value in scores.items():
                self.writer.add_scalar(f"dice/{prefix}{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _keep_rows(path: Path, header: list[str], step: int) -> None:
    """Rewrite ``path`` keeping its header and the rows of steps up to ``step``."""
    rows = []
    if path.is_file():
        with path.open(newline="") as stream:
            rows = [row for row in list(csv.reader(stream))[1:] if row and int(row[0]) <= step]
    with atomic_open(path, "w") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
