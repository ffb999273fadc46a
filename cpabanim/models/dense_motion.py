"""Dense motion network (docs/model.md, Eq. 7): N+2 sampling grids (background affine, N partial CPABs, one
global CPAB; or background + N TPS for ``motion: tps``) -> deformed sources + keypoint heatmaps -> hourglass ->
softmax contribution maps (with transform dropout) -> dense flow, plus multi-resolution occlusion masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cpabanim.models.bg_motion import affine_grid
from cpabanim.models.blocks import AntiAliasInterpolation2d, Hourglass, UpBlock2d, kp2gaussian, make_coordinate_grid


def dropout_softmax(logits: torch.Tensor, drop_p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Masked softmax over dim 1 (B, K, H, W): transform k >= 1 is kept with probability 1 - p, per sample.

    This is the *effective* behaviour of TPSMM/CPABMM's ``dropout_softmax``: their ``X[:, 1:] /= (1 - P)``
    rescale runs after exp() and cancels in the normalisation, so it is not reproduced (docs/model.md).
    The background transform (k = 0) is never dropped, so the denominator is never empty.
    """
    b, k = logits.shape[:2]
    keep = torch.bernoulli(torch.full((b, k), 1 - drop_p), generator=generator).to(logits)
    keep[:, 0] = 1
    exp = torch.exp(logits - logits.max(dim=1, keepdim=True).values) * keep[:, :, None, None]
    return exp / (exp.sum(dim=1, keepdim=True) + 1e-6)


class DenseMotionNetwork(nn.Module):
    """Predicts the dense backward flow (B, h, w, 2) and ``num_occlusions`` visibility masks.

    ``num_kp`` keypoints, ``num_transforms`` grids (background first), working resolution ``scale_factor``.
    Occlusion masks come from the last hourglass levels and extra up-blocks up to full resolution.
    """

    def __init__(
        self,
        num_kp: int,
        num_transforms: int,
        block_expansion: int,
        max_features: int,
        num_blocks: int,
        scale_factor: float,
        num_occlusions: int = 4,
        kp_variance: float = 0.01,
        num_channels: int = 3,
    ):
        super().__init__()
        self.num_kp = num_kp
        self.num_transforms = num_transforms
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        in_features = (num_kp + 1) + num_channels * num_transforms
        self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features)
        last = self.hourglass.out_channels[-1]
        self.maps = nn.Conv2d(last, num_transforms, kernel_size=7, padding=3)
        self.up_nums = int(round(math.log2(1 / scale_factor)))
        from_hourglass = num_occlusions - self.up_nums
        if from_hourglass < 1 or from_hourglass > num_blocks:
            raise ValueError(
                f"dense motion: {num_occlusions} occlusion masks at scale {scale_factor} need "
                f"{from_hourglass} hourglass levels (1..num_blocks={num_blocks})"
            )
        channels = [last // 2**i for i in range(self.up_nums)]
        self.up = nn.ModuleList(UpBlock2d(c, c // 2) for c in channels)
        self.occlusion = nn.ModuleList(
            [nn.Conv2d(self.hourglass.out_channels[i - from_hourglass], 1, 7, padding=3) for i in range(from_hourglass)]
            + [nn.Conv2d(c // 2, 1, 7, padding=3) for c in channels]
        )
        self.from_hourglass = from_hourglass

    def heatmaps(self, kp_source: torch.Tensor, kp_driving: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """G(kp_driving) - G(kp_source) with a zero (background) channel first: (B, K+1, h, w).

        Keypoints are NOT detached here: this is the generator losses' path to the keypoint detector.
        """
        heat = kp2gaussian(kp_driving, size, self.kp_variance) - kp2gaussian(kp_source, size, self.kp_variance)
        return torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)

    def forward(
        self,
        source: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        motion_grids: torch.Tensor,
        bg_param: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """source (B, C, H, W); kp (B, K, 2); motion_grids (B, T-1, h, w, 2); bg_param (B, 3, 3) or None.

        Returns deformation (B, h, w, 2), contribution_maps (B, T, h, w), deformed_source (B, T, C, h, w),
        occlusion_map: list of (B, 1, ., .) coarse to fine (the last at full resolution).
        """
        small = self.down(source)
        b, c, h, w = small.shape
        identity = make_coordinate_grid(h, w, source.device, source.dtype)
        if bg_param is None:
            bg_grid = identity.expand(b, h, w, 2)
        else:
            bg_grid = affine_grid(bg_param.to(source.dtype), identity)
        grids = torch.cat([bg_grid[:, None], motion_grids.to(source.dtype)], dim=1)  # (B, T, h, w, 2)
        t = grids.shape[1]
        repeated = small[:, None].expand(b, t, c, h, w).reshape(b * t, c, h, w)
        deformed = F.grid_sample(repeated, grids.reshape(b * t, h, w, 2), align_corners=True).view(b, t, c, h, w)
        net_in = torch.cat([self.heatmaps(kp_source, kp_driving, (h, w)), deformed.reshape(b, t * c, h, w)], dim=1)
        levels = self.hourglass(net_in)
        logits = self.maps(levels[-1])
        if dropout_p > 0 and self.training:
            maps = dropout_softmax(logits, dropout_p, generator)
        else:
            maps = F.softmax(logits, dim=1)
        deformation = (maps[..., None] * grids.permute(0, 1, 2, 3, 4)).sum(dim=1)  # Eq. 7: (B, h, w, 2)
        occlusion = [
            torch.sigmoid(self.occlusion[i](levels[i - self.from_hourglass])) for i in range(self.from_hourglass)
        ]
        feature = levels[-1]
        for i, block in enumerate(self.up):
            feature = block(feature)
            occlusion.append(torch.sigmoid(self.occlusion[self.from_hourglass + i](feature)))
        return {
            "deformation": deformation,
            "contribution_maps": maps,
            "deformed_source": deformed,
            "occlusion_map": occlusion,
        }
