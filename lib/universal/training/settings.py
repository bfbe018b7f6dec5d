"""How a training run is set up: :class:`TrainSettings` (every default lives here) and the classes
to add (:class:`NewClass`); both round-trip through plain records (``run.json``, launch records)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch

from universal.catalog import DEFAULT_KIND
from universal.devices import check_precision
from universal.errors import UniversalError


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
        rates = (self.learning_rate, self.embedding_learning_rate)
        if not all(0 < rate < float("inf") for rate in rates) or not 0 <= self.weight_decay < float("inf"):
            raise UniversalError("learning rates must be positive and weight decay not negative")
        if not 0 <= self.max_grad_norm < float("inf"):
            raise UniversalError(f"max grad norm must not be negative (0: no clipping), got {self.max_grad_norm}")
        check_precision(self.precision)

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
    kind: str = DEFAULT_KIND

    def to_record(self) -> dict:
        embedding = None if self.embedding is None else [float(v) for v in self.embedding.flatten()]
        return {"name": self.name, "prompt": self.prompt, "embedding": embedding, "kind": self.kind}

    @classmethod
    def from_record(cls, record: Mapping) -> NewClass:
        embedding = record.get("embedding")
        return cls(record["name"], record.get("prompt"), None if embedding is None else torch.tensor(embedding),
                   record.get("kind", DEFAULT_KIND))
