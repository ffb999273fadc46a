"""Background motion predictor: ResNet-18 on concat(source, driving) -> 3x3 affine (identity at init)."""

from __future__ import annotations

import torch
from torch import nn

from cpabanim.models.blocks import backbone


class BGMotionPredictor(nn.Module):
    """(source, driving) (B, 3, H, W) each -> A_bg (B, 3, 3) with last row [0, 0, 1].

    The fc is zero-weighted with an identity bias so that training starts from "no background motion".
    """

    def __init__(self, num_channels: int = 3, backbone_kind: str = "resnet18"):
        super().__init__()
        self.backbone = backbone(backbone_kind, num_channels * 2, 6)
        nn.init.zeros_(self.backbone.fc.weight)
        with torch.no_grad():
            self.backbone.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        batch = source.shape[0]
        affine = self.backbone(torch.cat([source, driving], dim=1)).view(batch, 2, 3)
        last_row = affine.new_tensor([0.0, 0.0, 1.0]).expand(batch, 1, 3)
        return torch.cat([affine, last_row], dim=1)


def affine_grid(affine: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Apply (B, 3, 3) projective-normalised affines to an (H, W, 2) grid -> (B, H, W, 2)."""
    homog = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)  # (H, W, 3)
    out = torch.einsum("bij,hwj->bhwi", affine, homog)
    return out[..., :2] / out[..., 2:3]
