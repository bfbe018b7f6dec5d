"""Fine-tuning the model in use on annotators' labels, behind the regression gate.

:func:`finetune` holds out some annotated images (:func:`~universal.serving.annotations.held_out_cases`),
trains a copy of the current model on the others with partial labels (:func:`universal.training.loop.train`,
in several processes through :mod:`universal.training.distributed` when asked), compares it with the current model
on the held-out images (:func:`~universal.serving.gate.regression_gate`) and publishes it into the
:class:`~universal.serving.model_store.ModelStore` only when the gate lets it through.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from universal.errors import UniversalError
from universal.nets.checkpoint import load_model, non_finite
from universal.nets.model import UniversalModel
from universal.serving.annotations import Annotation, annotation_datalist, held_out_cases
from universal.serving.gate import DEFAULT_TOLERANCE, GateDecision, regression_gate
from universal.serving.model_store import ModelStore
from universal.training import TrainSettings, train
from universal.training.datasets import Datalist
from universal.training.distributed import train_in_processes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """``epochs``: passes over the training images (one crop per image each); ``held_out``: share of
    annotated images kept for the gate; ``tolerance``: Dice an old class may lose; ``processes``:
    training processes (GPUs) under ``torchrun`` (1: in this process)."""

    epochs: float = 10.0
    batch_size: int = 1
    learning_rate: float = 1e-4
    device: str = "auto"
    held_out: float = 0.2
    tolerance: float = DEFAULT_TOLERANCE
    processes: int = 1
    seed: int = 0

    def __post_init__(self):
        if not self.epochs > 0:  # NaN fails every comparison
            raise UniversalError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1 or self.processes < 1:
            raise UniversalError(f"batch size and processes must be at least 1, got {self.batch_size} and "
                                 f"{self.processes}")
        if not 0 < self.learning_rate < float("inf"):
            raise UniversalError(f"the learning rate must be positive, got {self.learning_rate}")
        if not 0 <= self.held_out < 1:
            raise UniversalError(f"the held-out share must be at least 0 and below 1, got {self.held_out}")
        if not 0 <= self.tolerance <= 1:  # NaN fails it too
            raise UniversalError(f"the gate's tolerance is a Dice difference from 0 to 1, got {self.tolerance}")


@dataclass
class FinetuneResult:
    """What a fine-tuning did: ``published`` (and the new ``version``), the gate's ``decision``, and the
    classes each training image trained (``classes_by_case``)."""

    published: bool
    decision: GateDecision
    run_dir: Path
    steps: int
    training_cases: list[str] = field(default_factory=list)
    held_out_cases: list[str] = field(default_factory=list)
    classes_by_case: dict[str, list[str]] = field(default_factory=dict)
    version: int | None = None
    seconds: float = 0.0

    def to_record(self) -> dict:
        record = asdict(self)
        record.update(run_dir=str(self.run_dir), decision=self.decision.to_record())
        return record


def finetune(store: ModelStore, source: str | Path, annotations: Sequence[Annotation],
             settings: FinetuneSettings | None = None, *, progress: bool = False) -> FinetuneResult:
    """Fine-tune the model in ``source`` on ``annotations`` and publish it if the gate allows."""
    settings = settings or FinetuneSettings()
    started = time.perf_counter()
    previous = load_model(source)
    held = held_out_cases([a.case for a in annotations if a.values], settings.held_out)
    datalist = annotation_datalist(annotations, held)
    if not datalist.training:
        raise UniversalError(
            "no annotated image to train on: save a final label (with at least one class drawn) for more images"
        )
    steps = max(1, math.ceil(settings.epochs * len(datalist.training) / (settings.batch_size * settings.processes)))
    run_dir = store.new_run_dir()
    log.info("fine-tuning on %d image(s), %d held out for the gate; %d step(s) into %s",
             len(datalist.training), len(datalist.validation), steps, run_dir)
    training_only = Datalist(datalist.templates, datalist.training, [])
    train_settings = TrainSettings(steps=steps, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                                   warmup_steps=min(100, steps // 10), device=settings.device, seed=settings.seed,
                                   checkpoint_every=0)
    if settings.processes > 1:
        candidate = train_in_processes(training_only, run_dir, previous, train_settings, settings.processes)
    else:
        candidate = train(training_only, run_dir, model=copy.deepcopy(previous), settings=train_settings,
                          progress=progress).model.cpu().eval()
    if non_finite(candidate.state_dict()):
        raise UniversalError(f"the training diverged: the fine-tuned weights hold NaN or infinite values, so nothing "
                             f"was published; train again with a lower learning rate (this one: "
                             f"{settings.learning_rate:g})")
    decision = regression_gate(previous, candidate, datalist, tolerance=settings.tolerance, device=settings.device)
    log.info(decision.summary())
    result = FinetuneResult(decision.publish, decision, run_dir, steps,
                            [c["case"] for c in datalist.training], [c["case"] for c in datalist.validation],
                            {c["case"]: list(c["classes"]) for c in datalist.training})
    if decision.publish:
        with store.lock():
            _keep_classes_added_meanwhile(store, candidate)
            origin = f"fine-tuned on {len(datalist.training)} image(s) ({run_dir.name})"
            record = store.publish_locked(candidate, origin, {"gate": decision.to_record(), "run": str(run_dir)})
        result.version = record["version"]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _keep_classes_added_meanwhile(store: ModelStore, candidate: UniversalModel) -> None:
    """Classes published while training ran (added by name) join the candidate, as they were."""
    if not store.current_path.is_file():
        return
    current = load_model(store.current_path)
    for info in current.catalog:
        if info.name not in candidate.catalog:
            candidate.add_class(info.name, info.prompt, current.class_embeddings[info.id - 1], kind=info.kind,
                                parents=info.parents, color=info.color, synonyms=info.synonyms)


