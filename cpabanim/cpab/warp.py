"""Dense warps: identity grids in grid_sample coordinates and CPAB sampling grids."""

from __future__ import annotations

from typing import Sequence

import torch


def identity_grid(size: Sequence[int], dtype=None, device=None) -> torch.Tensor:
    """(H, W, 2) grid of (x, y) in [-1, 1], x along the width, matching ``grid_sample(..., align_corners=True)``
    (pixel centres of the first and last row / column at -1 and 1). The one identity grid of the package: the
    networks' ``make_coordinate_grid`` (cpabanim/models/blocks.py) is this one."""
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


def warp_grid(
    cpab, theta: torch.Tensor, size: Sequence[int] = (64, 64), method: str = "faithful", differentiable: bool = False
) -> torch.Tensor:
    """(T, d) theta -> (T, H, W, 2) sampling grid 2 T((u+1)/2) - 1 over the identity grid u.

    ``differentiable=False`` (CPABMM's detached theta): runs under no_grad, so no graph is built for a backward
    that would carry nothing. ``differentiable=True``: autograd through the integration steps, the exact
    derivative of the discrete map w.r.t. theta (docs/cpab.md "Integration"); reverse mode, because a grid has
    many more points than theta has parameters (the forward-sensitivity Jacobian would cost d x the steps).
    """
    if not differentiable:
        theta = theta.detach()
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        grid = identity_grid(size, dtype=theta.dtype, device=theta.device)
        pts = to_unit(grid).reshape(1, -1, 2)
        out = cpab.transform(pts, theta, method=method)
        return from_unit(out).view(theta.shape[0], grid.shape[0], grid.shape[1], 2)
