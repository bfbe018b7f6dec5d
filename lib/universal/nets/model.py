"""UniversalModel: a backbone whose per-class output heads are generated from text embeddings.

A window goes through the *trunk* (the backbone, then its pooled image feature and the shared
8-channel head input), which does not depend on the classes and is nearly all of the work; then,
for each class k and sample b, the controller turns ``[image feature of b, text feature of k]`` into
the 153 parameters of a tiny point-wise head (8 → 8 → 8 → 1, ReLU between layers) that runs on the
head input (:mod:`universal.nets.heads`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from universal.catalog import DEFAULT_KIND, Catalog, ClassInfo, ClassKey
from universal.errors import UniversalError
from universal.nets.heads import HEAD_CHANNELS, HEAD_PARAMS, init_head_generator, run_heads
from universal.nets.registry import DEFAULT_BACKBONE, BackboneRecord, backbone_record, build_backbone
from universal.nets.text import EMBEDDING_DIM

CONDITION_DIM = 256  # image feature and projected text feature, each


@dataclass(frozen=True)
class InputSpec:
    """The input a model expects: orientation, voxel spacing (mm), HU window mapped to 0..1, and the
    sliding-window size (voxels)."""

    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    intensity_range: tuple[float, float] = (-175.0, 250.0)
    window_size: tuple[int, int, int] = (96, 96, 96)

    def to_record(self) -> dict:
        return {
            "orientation": self.orientation,
            "spacing": list(self.spacing),
            "intensity_range": list(self.intensity_range),
            "window_size": list(self.window_size),
        }

    @classmethod
    def from_record(cls, record: dict) -> InputSpec:
        return cls(
            orientation=str(record["orientation"]),
            spacing=tuple(float(s) for s in record["spacing"]),
            intensity_range=tuple(float(v) for v in record["intensity_range"]),
            window_size=tuple(int(s) for s in record["window_size"]),
        )


class UniversalModel(nn.Module):
    """CLIP-driven universal segmentation network.

    Args:
        backbone: ``"unet"`` or ``"swinunetr"``.
        catalog: the classes, in output order (default: the 32 released classes).
        class_embeddings: (K, 512) text embeddings of the catalogue's prompts; zeros when omitted
            (a checkpoint then fills them).
        width: backbone width (U-Net 32, Swin UNETR 48 in the released models).
        use_checkpoint: activation checkpointing in the backbone (Swin UNETR), for training.

    ``model(x)`` maps (B, 1, D, H, W) intensities in 0..1 to logits (B, K, D, H, W);
    ``model(x, classes=["liver", 2])`` computes only those classes, in that order.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        catalog: Catalog | None = None,
        class_embeddings: torch.Tensor | None = None,
        width: int | None = None,
        use_checkpoint: bool = False,
        input_spec: InputSpec | None = None,
    ):
        super().__init__()
        self.backbone_name = backbone
        self.width = width or backbone_record(backbone).width
        self.backbone = build_backbone(backbone, self.width, use_checkpoint=use_checkpoint)
        self.catalog = catalog or Catalog.default()
        self.input_spec = input_spec or InputSpec()
        self.provenance: dict = {}  # where the weights came from; saved with the model
        self.source_format = "new"  # the layout the weights were read from; not saved

        if class_embeddings is None:
            class_embeddings = torch.zeros(len(self.catalog), EMBEDDING_DIM)
        if tuple(class_embeddings.shape) != (len(self.catalog), EMBEDDING_DIM):
            raise ValueError(
                f"class_embeddings must be ({len(self.catalog)}, {EMBEDDING_DIM}) for a catalogue of "
                f"{len(self.catalog)} classes, got {tuple(class_embeddings.shape)}"
            )
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())

        feature_channels = self.backbone.feature_channels
        bottleneck_channels = self.backbone.bottleneck_channels
        self.feature_head = nn.Sequential(
            group_norm(feature_channels), nn.ReLU(), nn.Conv3d(feature_channels, HEAD_CHANNELS, 1)
        )
        self.image_pool = nn.Sequential(
            group_norm(bottleneck_channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Conv3d(bottleneck_channels, CONDITION_DIM, 1),
        )
        self.text_to_vision = nn.Linear(EMBEDDING_DIM, CONDITION_DIM)
        self.controller = nn.Conv3d(2 * CONDITION_DIM, HEAD_PARAMS, 1)
        init_head_generator(self.controller)
        init_text_projection(self.text_to_vision, self.class_embeddings)

    # -- classes ------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.catalog)

    @property
    def record(self) -> BackboneRecord:
        """The backbone's facts (:mod:`universal.nets.registry`)."""
        return backbone_record(self.backbone_name)

    @property
    def size_divisor(self) -> int:
        """Window sides must be multiples of this."""
        return self.record.size_divisor

    @property
    def title(self) -> str:
        return self.record.title

    def class_channels(self, classes: Iterable[ClassKey] | None) -> list[int]:
        """0-based output channels of the given classes (all when ``None``)."""
        if classes is None:
            return list(range(self.num_classes))
        if isinstance(classes, int | str):
            classes = [classes]
        return [class_id - 1 for class_id in self.catalog.ids(classes)]

    def add_class(
        self,
        name: str,
        prompt: str | None = None,
        embedding: torch.Tensor | Sequence[float] | None = None,
        *,
        kind: str = DEFAULT_KIND,
        parents: Iterable[str] = (),
        color: tuple[int, int, int] | None = None,
        synonyms: Iterable[str] = (),
        text_encoder=None,
    ) -> ClassInfo:
        """Append a class with its own output channel; existing classes compute exactly as before.

        The class is named by ``prompt`` (default: the released template around ``name``). Its
        embedding is ``embedding`` (512 values) or, when omitted, the prompt's CLIP embedding from
        ``text_encoder`` (default: :class:`universal.nets.text.TextEncoder` with locally resolved weights).
        """
        catalog = self.catalog.add(name, prompt, kind=kind, parents=parents, color=color, synonyms=synonyms)
        info = catalog[len(catalog)]
        if embedding is None:
            from universal.nets.text import TextEncoder

            embedding = (text_encoder or TextEncoder()).encode([info.prompt])[0]
        embedding = torch.as_tensor(embedding, dtype=torch.float32).flatten()
        if embedding.numel() != EMBEDDING_DIM:
            raise ValueError(f"a class embedding has {EMBEDDING_DIM} values, got {embedding.numel()}")
        if not bool(torch.isfinite(embedding).all()):
            raise UniversalError("a class embedding holds finite numbers only; this one has NaN or infinite values "
                                 "(float32 holds magnitudes up to 3.4e38)")
        self.class_embeddings = torch.cat([self.class_embeddings, embedding.to(self.class_embeddings)[None]])
        self.catalog = catalog
        return info

    # -- forward ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, classes: Iterable[ClassKey] | None = None) -> torch.Tensor:
        """(B, 1, D, H, W) → logits (B, K, D, H, W) for all classes or those named."""
        self.check_window(x.shape)
        return self.heads(*self.trunk(x), self.class_channels(classes))

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a window computes before the classes: (B, 1, D, H, W) → (image feature (B, 256), head
        input (B, 8, D, H, W))."""
        bottleneck, features = self.backbone(x)
        return self.image_pool(bottleneck).flatten(1), self.feature_head(features)

    @property
    def trunk_modules(self) -> list[nn.Module]:
        """The modules :meth:`trunk` runs."""
        return [self.backbone, self.image_pool, self.feature_head]

    def trunk_fingerprint(self) -> tuple[tuple[int, int], ...]:
        """(storage address, version counter) of every parameter and buffer of the trunk: it changes
        when any of them is replaced or updated in place (optimiser steps, ``load_state_dict``,
        ``.to()``), so a compiled or converted trunk knows when it is stale."""
        modules = self.trunk_modules
        tensors = itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in modules)
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def check_window(self, shape: Sequence[int]) -> None:
        """Raise ValueError unless ``shape`` is (B, 1, D, H, W) with sizes this backbone accepts."""
        divisor, smallest = self.record.size_divisor, self.record.min_size
        if len(shape) != 5 or shape[1] != 1:
            raise ValueError(f"input must be (B, 1, D, H, W), got {tuple(shape)}")
        if any(size % divisor or size < smallest for size in shape[2:]):
            raise ValueError(
                f"{self.title} windows must be multiples of {divisor} and at least {smallest} along D, H, W; "
                f"got {tuple(shape[2:])}"
            )

    def heads(self, image: torch.Tensor, head_input: torch.Tensor, channels: Sequence[int],
              run=run_heads) -> torch.Tensor:
        """Logits (B, K, D, H, W) of output ``channels`` from the trunk's two outputs; ``run`` applies
        the generated heads (:func:`~universal.nets.heads.run_heads`, or a compiled form)."""
        return run(head_input, self.head_parameters(image, channels))

    def head_parameters(self, image: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        """(B, K, 153): generated head parameters for each sample's image feature (B, 256) and class.

        The controller sees [image feature, text feature] (512 values); its image half is applied once
        per sample and its text half once per class, each class on its own, so that a class's
        parameters never depend on which other classes are computed (adding a class leaves the
        others bit-identical).
        """
        index = torch.as_tensor(channels, dtype=torch.long, device=self.class_embeddings.device)
        text = F.relu(rowwise_linear(self.class_embeddings[index], self.text_to_vision))  # (K, 256)
        weight = self.controller.weight.flatten(1)  # (153, 512)
        from_image = F.linear(image, weight[:, :CONDITION_DIM], self.controller.bias)  # (B, 153)
        from_text = rowwise_linear(text, weight[:, CONDITION_DIM:])  # (K, 153)
        return from_image[:, None] + from_text[None]


def init_text_projection(projection: nn.Linear, embeddings: torch.Tensor) -> None:
    """Centre the text projection on the mean of ``embeddings`` (K, 512), rescaled so that its outputs
    keep their size. CLIP embeddings of organ prompts share most of their length (pairwise cosine
    0.91-0.99; right and left kidney 0.99), so uncentred projections of two classes start almost
    equal and a model trained from scratch is slow to tell them apart (centred: 0.76). No-op for
    all-zero embeddings (a checkpoint fills them); released weights replace all of this."""
    mean = embeddings.mean(0)
    spread = (embeddings - mean).norm(dim=1).mean()
    if len(embeddings) < 2 or spread == 0:
        return
    with torch.no_grad():
        projection.weight.mul_(embeddings.norm(dim=1).mean() / spread)
        projection.bias.copy_(-projection.weight @ mean)


def rowwise_linear(x: torch.Tensor, layer: nn.Linear | torch.Tensor) -> torch.Tensor:
    """``F.linear`` of (K, in) rows, each row reduced on its own: the result of a row does not depend
    on K (a matrix product may change its summation order with the number of rows)."""
    weight, bias = (layer.weight, layer.bias) if isinstance(layer, nn.Linear) else (layer, None)
    out = (x[:, None, :] * weight[None]).sum(-1)
    return out if bias is None else out + bias


def group_norm(channels: int) -> nn.GroupNorm:
    """16 groups as released; fewer for widths that 16 does not divide (small models for tests)."""
    return nn.GroupNorm(math.gcd(16, channels), channels)
