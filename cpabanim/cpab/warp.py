"""Dense warps: identity grids in grid_sample coordinates and CPAB sampling grids."""

from __future__ import annotations

from typing import Sequence

import torch


def identity_grid(size: Sequence[int], dtype=None, device=None) -> torch.Tensor:
    """(H, W, 2) grid of (x, y) in [-1,1] matching ``grid_sample(..., align_corners=True)``."""
    H, W = int(size[0]), int(size[1])
    ys = torch.linspace(-1.0, 1.0, H, dtype=dtype, device=device)
    xs = torch.linspace(-1.0, 1.0, W, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def to_unit(u: torch.Tensor) -> torch.Tensor:
    """[-1,1] image coordinates -> [0,1] CPAB domain."""
    return (u + 1) / 2


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """[0,1] CPAB domain -> [-1,1] image coordinates."""
    return 2 * x - 1


@torch.no_grad()
def warp_grid(cpab, theta: torch.Tensor, size: Sequence[int] = (64, 64), method: str = "faithful") -> torch.Tensor:
    """(T, d) theta -> (T, H, W, 2) sampling grid 2 T((u+1)/2) - 1 over the identity grid u (no autograd)."""
    theta = theta.detach()
    grid = identity_grid(size, dtype=theta.dtype, device=theta.device)
    pts = to_unit(grid).reshape(1, -1, 2)
    out = cpab.transform(pts, theta, method=method)
    return from_unit(out).view(theta.shape[0], grid.shape[0], grid.shape[1], 2)
