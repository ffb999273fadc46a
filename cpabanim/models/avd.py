"""AVD network (animation via disentanglement, re-written from the paper's description, paper.md §1.7):
an identity code from the source keypoints and a pose code from the driving keypoints decode into keypoints
with the source's shape and the driving pose."""

from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers += [nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """kp_source (B, K, 2), kp_driving (B, K, 2) -> kp (B, K, 2) with source identity and driving pose."""

    def __init__(self, num_kp: int, id_bottle_size: int = 128, pose_bottle_size: int = 128):
        super().__init__()
        n = num_kp * 2
        self.id_encoder = _mlp([n, 256, 512, 1024, id_bottle_size], last_activation=True)
        self.pose_encoder = _mlp([n, 256, 512, 1024, pose_bottle_size], last_activation=True)
        self.decoder = _mlp([id_bottle_size + pose_bottle_size, 1024, 512, 256, n], last_activation=False)

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        b, k, _ = kp_source.shape
        code = torch.cat([self.id_encoder(kp_source.reshape(b, -1)), self.pose_encoder(kp_driving.reshape(b, -1))], 1)
        return self.decoder(code).view(b, k, 2)
