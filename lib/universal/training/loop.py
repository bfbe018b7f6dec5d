"""Training on partially labelled datasets, and teaching a model new classes.

:func:`train` does the whole job: builds or loads the model, adds classes, samples crops uniformly
across datasets, optimises the partial-label loss, validates, and writes the run folder
(:mod:`universal.training.run_folder`).

Every crop is a pure function of (seed, step, micro-batch, process), so a resumed run samples what
an uninterrupted one would. Several processes (``torchrun``) train with DistributedDataParallel;
process 0 writes.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from universal.catalog import Catalog
from universal.devices import resolve_device, training_dtype
from universal.errors import UniversalError
from universal.inference.segmenter import Segmenter
from universal.inference.settings import InferenceSettings
from universal.io.atomic import atomic_open, atomic_write_text
from universal.nets.checkpoint import TRAINING_FORMAT, load_model, model_record, read_checkpoint
from universal.nets.model import InputSpec, UniversalModel
from universal.nets.registry import DEFAULT_BACKBONE
from universal.progress import progress_bar
from universal.training.datasets import DataError, Datalist
from universal.training.losses import partial_label_loss
from universal.training.metrics import class_dice
from universal.training.run_folder import RunFolder
from universal.training.runlog import RunLog
from universal.training.sampler import CropSampler, PreparedCases
from universal.training.settings import NewClass, TrainSettings


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
    checkpoint_path = RunFolder(run_dir).checkpoint
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
    from universal.nets.text import catalog_embeddings

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
            from universal.nets.text import TextEncoder

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
        self.folder = RunFolder(self.run_dir)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = _process_device(settings.device, self.distributed)
        self.dtype = training_dtype(settings.precision, self.device)
        self.model = model.to(self.device)
        self.base_classes = base_classes
        self.progress = progress and self.rank == 0
        self.step = 0
        crop = settings.crop_size or model.input_spec.window_size
        self.cases = PreparedCases(datalist.templates, model.catalog, model.input_spec)
        self.sampler = CropSampler(datalist, self.cases, crop, seed=settings.seed, accumulate=settings.accumulate)
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
        # never compiled nor converted: the weights change between validations, and each change would
        # compile or convert again
        validation = InferenceSettings(device=str(self.device), compile="off", runtime="torch")
        self.segmenter = Segmenter(self.model, validation, progress=False)

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
        with atomic_open(self.folder.checkpoint) as stream:
            torch.save(state, stream)
        with atomic_open(self.folder.model) as stream:
            torch.save(state["model"], stream)

    # -- fitting --

    def fit(self, on_step: Callable[[int], None] | None = None) -> TrainResult:
        settings = self.settings
        log = RunLog(self.folder, self.step, enabled=self.rank == 0)
        result = TrainResult(self.model, self.step, self.run_dir)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder.info, json.dumps(self._describe(), indent=2) + "\n")
            if self.step == 0 and self.base_classes < len(self.model.catalog) and self.validation_cases:
                result.old_classes_before = self.validate(self.model.catalog.names[: self.base_classes])
                log.validation(0, result.old_classes_before, prefix="before/")
        bar = progress_bar(settings.steps, "training", "step", self.progress, initial=self.step)
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

    def validate(self, classes: Sequence[str] | None = None) -> dict[str, float]:
        """Mean Dice per class over the validation cases that annotate it
        (:func:`~universal.training.metrics.class_dice`); only ``classes`` when given."""
        self._sync_embeddings()
        cases = (self.cases.with_targets(case) for case in self.validation_cases)
        return class_dice(self.segmenter, cases, self.model.catalog, classes)

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
            "datasets": {name: t.classes for name, t in self.cases.templates.items()},
            "training_cases": len(self.sampler.training),
            "validation_cases": len(self.validation_cases),
        }


def _process_device(name: str, distributed: bool) -> torch.device:
    device = resolve_device(name)
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.get_rank() % torch.cuda.device_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


