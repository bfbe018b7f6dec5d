"""The ``universal`` train task: :func:`universal.serving.finetune.finetune` on the datastore's final labels."""

from __future__ import annotations

import datetime
import logging

import torch
from monailabel.interfaces.tasks.train import TrainTask

from universal.devices import resolve_device
from universal.errors import UniversalError
from universal.serving.finetune import FinetuneSettings, finetune
from universal.serving.review import TRAIN_ON

from .conf import FINETUNE, AppConf, parse_bool, parse_number
from .state import AppState, device_choices

log = logging.getLogger(__name__)


class UniversalTrainer(TrainTask):
    """Fine-tunes the model in use on the final labels (partial labels: each label trains the classes
    it annotates) and publishes it if the regression gate lets it through.

    Request keys: ``max_epochs`` (passes over the training images), ``train_batch_size``,
    ``learning_rate``, ``val_split`` (held-out share), ``gate_tolerance`` (Dice), ``device``,
    ``multi_gpu`` (one process per GPU), ``train_on`` (``final``: the accepted labels but the classes a
    reviewer rejected; ``approved``: approved classes only).
    """

    def __init__(self, state: AppState):
        super().__init__("Fine-tune the Universal Model on final labels, behind a regression gate")
        self.state = state

    def config(self) -> dict:
        conf = self.state.conf
        return {"max_epochs": conf.max_epochs, "train_batch_size": FINETUNE.batch_size,
                "learning_rate": conf.learning_rate, "val_split": conf.val_split, "gate_tolerance": conf.gate_tolerance,
                "device": device_choices(), "multi_gpu": True,
                "train_on": [conf.train_on, *(choice for choice in TRAIN_ON if choice != conf.train_on)]}

    def stats(self) -> dict:
        return self.state.store.training.read()

    def __call__(self, request, datastore) -> dict:
        started = datetime.datetime.now()
        settings = self._settings(request)
        source = self.state.require_source()
        annotations = self.state.annotations(datastore, train_on(self.state.conf, request))
        asked = {k: request.get(k) for k in self.config()}
        log.info("training request: %s; %d annotated image(s)", asked, len(annotations))
        self.state.store.training.running({"start_ts": int(started.timestamp()), "request": asked})
        try:
            result = finetune(self.state.store, source, annotations, settings)
        except BaseException as error:
            self.state.store.training.failed(str(error) or type(error).__name__)
            raise
        after = result.decision.after
        stats = {
            # the keys MONAI Label's clients read from train_stats
            "name": request.get("name", "train"),
            "start_ts": int(started.timestamp()),
            "total_time": str(datetime.datetime.now() - started).split(".")[0],
            "epochs": settings.epochs,
            "best_metric": round(sum(after.values()) / len(after), 4) if after else 0.0,
            **result.to_record(),
            "version": result.version if result.published else self.state.version(),
            "gate_summary": result.decision.summary(),
        }
        self.state.store.training.write(stats)  # finetune has logged the gate's decision
        return stats

    def _settings(self, request: dict) -> FinetuneSettings:
        return finetune_settings(self.state.conf, request)


def train_on(conf: AppConf, request: dict) -> str:
    """What a training request trains on (``train_on``, default ``--conf train_on``): ``final`` labels
    but their rejected classes, or ``approved`` classes only."""
    chosen = request.get("train_on") or conf.train_on
    if isinstance(chosen, list):  # an options table's list of choices: its first
        chosen = chosen[0]
    if chosen not in TRAIN_ON:
        raise UniversalError(f"bad training parameter: train_on must be {' or '.join(TRAIN_ON)}, got {chosen!r}")
    return chosen


def finetune_settings(conf: AppConf, request: dict) -> FinetuneSettings:
    """The fine-tuning settings of a training request (its keys over the ``--conf`` defaults); a
    UniversalError naming a malformed or out-of-range one."""
    try:
        device = str(request.get("device") or conf.device)
        resolve_device(device)  # one of this machine's devices
        gpus = torch.cuda.device_count()
        multi = parse_bool("multi_gpu", request.get("multi_gpu"), True) and device in ("auto", "cuda") and gpus > 1
        return conf.finetune_settings(
            epochs=parse_number("max_epochs", request.get("max_epochs"), conf.max_epochs),
            batch_size=parse_number("train_batch_size", request.get("train_batch_size"), FINETUNE.batch_size,
                                    integer=True),
            learning_rate=parse_number("learning_rate", request.get("learning_rate"), conf.learning_rate),
            held_out=parse_number("val_split", request.get("val_split"), conf.val_split),
            tolerance=parse_number("gate_tolerance", request.get("gate_tolerance"), conf.gate_tolerance),
            device="cuda" if multi else device,
            processes=gpus if multi else 1,
        )
    except (ValueError, UniversalError) as error:
        raise UniversalError(f"bad training parameter: {error}") from error
