"""AVD network (animation via disentanglement, docs/model.md, TPSMM's layer structure): an identity code from the
source keypoints and a pose code from the driving keypoints decode into keypoints with the source's shape and
the driving pose.

Layer for layer TPSMM's (docs/faithfulness.md): each encoder is Linear-BN-ReLU x 3 then a plain Linear to its
bottleneck (no normalisation or activation on the code), the decoder is Linear-BN-ReLU x 3 then a plain Linear,
and the decoder reads [pose code, identity code] in that order. Module names match TPSMM's (``id_encoder``,
``pose_encoder``, ``decoder``; 69 state tensors for any size), so its weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU between consecutive ``sizes``, and a plain Linear last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 2):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """kp_source (B, K, 2), kp_driving (B, K, 2) -> kp (B, K, 2) with source identity and driving pose."""

    def __init__(self, num_kp: int, id_bottle_size: int = 128, pose_bottle_size: int = 128):
        super().__init__()
        n = num_kp * 2
        self.id_encoder = _mlp([n, 256, 512, 1024, id_bottle_size])
        self.pose_encoder = _mlp([n, 256, 512, 1024, pose_bottle_size])
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, n])

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        b, k, _ = kp_source.shape
        pose = self.pose_encoder(kp_driving.reshape(b, -1))  # (B, pose_bottle_size)
        identity = self.id_encoder(kp_source.reshape(b, -1))  # (B, id_bottle_size)
        return self.decoder(torch.cat([pose, identity], dim=1)).view(b, k, 2)
