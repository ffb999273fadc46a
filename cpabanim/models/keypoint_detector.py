"""Keypoint detector: ResNet-18 (random init, as the paper) -> ``num_cpab`` groups of 5 keypoints in [-1, 1]."""

from __future__ import annotations

import torch
from torch import nn

from cpabanim.models.blocks import backbone

POINTS_PER_GROUP = 5


class KPDetector(nn.Module):
    """image (B, 3, H, W) -> keypoints (B, num_cpab * 5, 2), (x, y) in [-1, 1].

    Group n holds keypoints 5n .. 5n+4 (consecutive indices): it drives partial transform n.
    """

    def __init__(self, num_cpab: int, num_channels: int = 3, backbone_kind: str = "resnet18"):
        super().__init__()
        self.num_kp = num_cpab * POINTS_PER_GROUP
        self.backbone = backbone(backbone_kind, num_channels, self.num_kp * 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = torch.sigmoid(self.backbone(image))
        return (out * 2 - 1).view(image.shape[0], self.num_kp, 2)
