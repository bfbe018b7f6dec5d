"""The ``universal`` train task: :func:`universal.serving.finetune.finetune` on the datastore's final labels."""

from __future__ import annotations

import datetime
import logging

import torch
from monailabel.interfaces.tasks.train import TrainTask

from universal.errors import UniversalError
from universal.serving.finetune import FinetuneSettings, finetune

from .state import AppState, device_choices, parse_bool, parse_number

log = logging.getLogger(__name__)


class UniversalTrainer(TrainTask):
    """Fine-tunes the model in use on the final labels (partial labels: each label trains the classes
    it annotates) and publishes it if the regression gate lets it through.

    Request keys: ``max_epochs`` (passes over the training images), ``train_batch_size``,
    ``learning_rate``, ``val_split`` (held-out share), ``gate_tolerance`` (Dice), ``device``,
    ``multi_gpu`` (one process per GPU).
    """

    def __init__(self, state: AppState):
        super().__init__("Fine-tune the Universal Model on final labels, behind a regression gate")
        self.state = state

    def config(self) -> dict:
        conf = self.state.conf
        return {"max_epochs": conf.max_epochs, "train_batch_size": 1, "learning_rate": conf.learning_rate,
                "val_split": conf.val_split, "gate_tolerance": conf.gate_tolerance, "device": device_choices(),
                "multi_gpu": True}

    def stats(self) -> dict:
        return self.state.store.stats()

    def __call__(self, request, datastore) -> dict:
        started = datetime.datetime.now()
        settings = self._settings(request)
        source = self.state.require_source()
        annotations = self.state.annotations(datastore)
        log.info("training request: %s; %d annotated image(s)", {k: request.get(k) for k in self.config()},
                 len(annotations))
        result = finetune(self.state.store, source, annotations, settings)
        after = result.decision.after
        stats = {
            "name": request.get("name", "train"),
            "start_ts": int(started.timestamp()),
            "total_time": str(datetime.datetime.now() - started).split(".")[0],
            "epochs": settings.epochs,
            "steps": result.steps,
            "best_metric": round(sum(after.values()) / len(after), 4) if after else 0.0,
            "published": result.published,
            "version": result.version if result.published else self.state.version(),
            "gate": result.decision.to_record(),
            "gate_summary": result.decision.summary(),
            "training_images": result.training_cases,
            "held_out_images": result.held_out_cases,
            "run": str(result.run_dir),
        }
        self.state.store.write_stats(stats)  # finetune has logged the gate's decision
        return stats

    def _settings(self, request: dict) -> FinetuneSettings:
        conf = self.state.conf
        try:
            device = str(request.get("device") or conf.device)
            gpus = torch.cuda.device_count()
            multi = parse_bool("multi_gpu", request.get("multi_gpu"), True) and device in ("auto", "cuda") and gpus > 1
            return FinetuneSettings(
                epochs=parse_number("max_epochs", request.get("max_epochs"), conf.max_epochs, 1e-3, 1e6),
                batch_size=int(parse_number("train_batch_size", request.get("train_batch_size"), 1, 1, 1024,
                                            integer=True)),
                learning_rate=parse_number("learning_rate", request.get("learning_rate"), conf.learning_rate,
                                           1e-9, 1.0),
                held_out=parse_number("val_split", request.get("val_split"), conf.val_split, 0.0, 0.9),
                tolerance=parse_number("gate_tolerance", request.get("gate_tolerance"), conf.gate_tolerance,
                                       0.0, 1.0),
                device="cuda" if multi else device,
                processes=gpus if multi else 1,
            )
        except ValueError as error:
            raise UniversalError(f"bad training parameter: {error}") from error
