"""Inpainting generator (TPSMM's, unchanged in CPABMM, docs/model.md): encode the source, warp every encoder
level with the dense flow, mask with the matching occlusion map, decode; blend with the warped source."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cpabanim.models.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d


def warp(features: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Backward-warp features (B, C, H, W) with a flow (B, h, w, 2), resized bilinearly to (H, W) if needed."""
    h, w = features.shape[2:]
    if deformation.shape[1:3] != (h, w):
        deformation = F.interpolate(
            deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=True
        ).permute(0, 2, 3, 1)
    return F.grid_sample(features, deformation.to(features.dtype), align_corners=True)


def occlude(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """features (B, C, H, W) x visibility mask (B, 1, h, w) resized to (H, W)."""
    if mask.shape[2:] != features.shape[2:]:
        mask = F.interpolate(mask, size=features.shape[2:], mode="bilinear", align_corners=True)
    return features * mask


class InpaintingNetwork(nn.Module):
    """source (B, C, H, W) + dense motion -> prediction (B, C, H, W) in [0, 1] and the warped encoder maps."""

    def __init__(
        self, num_channels: int = 3, block_expansion: int = 64, max_features: int = 512, num_down_blocks: int = 3
    ):
        super().__init__()
        ch = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.num_down_blocks = num_down_blocks
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(DownBlock2d(ch[i], ch[i + 1]) for i in range(num_down_blocks))
        outs = [ch[num_down_blocks - i - 1] for i in range(num_down_blocks)]
        ins = [ch[num_down_blocks]] + [outs[i - 1] + ch[num_down_blocks - i] for i in range(1, num_down_blocks)]
        self.up_blocks = nn.ModuleList(UpBlock2d(ins[i], outs[i]) for i in range(num_down_blocks))
        self.resblocks = nn.ModuleList(ResBlock2d(ins[i // 2]) for i in range(2 * num_down_blocks))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder levels, finest first: [E_0 (be @ H), E_1, ..., E_nd]."""
        maps = [self.first(image)]
        for block in self.down_blocks:
            maps.append(block(maps[-1]))
        return maps

    def get_encode(self, driving: torch.Tensor, occlusion_map: list[torch.Tensor]) -> list[torch.Tensor]:
        """Detached driving encoder levels, finest first, each masked with its (detached) occlusion map."""
        with torch.no_grad():
            maps = self.encode(driving)
        n = len(maps)
        return [occlude(m.detach(), occlusion_map[n - 1 - i].detach()) for i, m in enumerate(maps)]

    def forward(self, source: torch.Tensor, dense_motion: dict) -> dict[str, torch.Tensor]:
        deformation = dense_motion["deformation"]
        occlusion = dense_motion["occlusion_map"]
        encoder = self.encode(source)
        out = occlude(warp(encoder[-1], deformation), occlusion[0])
        # Side outputs for the warp loss: from detached features and masks, so that only the flow learns there.
        warped_maps = [occlude(warp(encoder[-1].detach(), deformation), occlusion[0].detach())]
        encode_i = out
        for i in range(self.num_down_blocks):
            out = self.resblocks[2 * i + 1](self.resblocks[2 * i](out))
            out = self.up_blocks[i](out)
            level = encoder[-(i + 2)]
            encode_i = occlude(warp(level, deformation), occlusion[i + 1])
            warped_maps.append(occlude(warp(level.detach(), deformation), occlusion[i + 1].detach()))
            if i < self.num_down_blocks - 1:
                out = torch.cat([out, encode_i], dim=1)
        deformed = warp(source, deformation)
        visible = occlusion[-1]
        out = out * (1 - visible) + encode_i
        out = torch.sigmoid(self.final(out))
        prediction = out * (1 - visible) + deformed * visible
        return {"prediction": prediction, "deformed": deformed, "warped_encoder_maps": warped_maps}
