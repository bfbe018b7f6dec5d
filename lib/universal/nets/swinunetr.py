"""The Swin UNETR backbone of the released Swin model: MONAI's SwinUNETR without its output layer.

The released weights were trained with the patch-merging slice order of MONAI ≤ 1.4, which MONAI
1.5 changed; :class:`ReleasedPatchMerging` fixes that order so the backbone computes the same thing
whatever MONAI version is installed.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMergingV2, SwinUNETR

# (d, h, w) start offsets of the eight stride-2 slices, in the order the released weights expect.
# (0,1,0) and (0,0,1) appear twice and (1,1,0), (0,1,1) not at all: that is what the model learned.
RELEASED_MERGE_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class ReleasedPatchMerging(PatchMergingV2):
    """Patch merging (B, D, H, W, C) → (B, ⌈D/2⌉, ⌈H/2⌉, ⌈W/2⌉, 2C) with the released slice order."""

    offsets = RELEASED_MERGE_OFFSETS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, d, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in self.offsets], dim=-1)
        return self.reduction(self.norm(x))


class SwinUNETRBackbone(SwinUNETR):
    """Swin UNETR returning ``(bottleneck, features)``.

    With ``feature_size`` f (48 in the released model) and input (B, 1, D, H, W), D, H, W divisible
    by 32 (:meth:`~universal.nets.model.UniversalModel.check_window` checks windows before they reach
    the backbone): ``bottleneck`` is (B, 16f, D/32, H/32, W/32) and ``features`` (B, f, D, H, W).
    """

    def __init__(self, in_channels: int = 1, feature_size: int = 48, use_checkpoint: bool = False):
        with warnings.catch_warnings():  # img_size is only checked, and deprecated in MONAI 1.3+
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(
                img_size=(96, 96, 96),
                in_channels=in_channels,
                out_channels=1,
                feature_size=feature_size,
                norm_name="instance",
                normalize=True,
                use_checkpoint=use_checkpoint,
                spatial_dims=3,
                downsample=ReleasedPatchMerging,
            )
        del self.out
        self.bottleneck_channels = 16 * feature_size
        self.feature_channels = feature_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stages = self.swinViT(x, self.normalize)
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(stages[0])
        enc2 = self.encoder3(stages[1])
        enc3 = self.encoder4(stages[2])
        bottleneck = self.encoder10(stages[4])
        up = self.decoder5(bottleneck, stages[3])
        up = self.decoder4(up, enc3)
        up = self.decoder3(up, enc2)
        up = self.decoder2(up, enc1)
        features = self.decoder1(up, enc0)
        return bottleneck, features
