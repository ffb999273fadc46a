"""Cell index functions Idx(x): branch-free, sync-free versions of libcpab's ``findcellidx`` (cpab.md §1.3)."""

from __future__ import annotations

import torch


def find_cell(points: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """Type-II cell index of points, identical to libcpab's findcellidx2D (also outside [0,1]^2).

    Args:
        points: (..., 2) float, (x, y) in the CPAB domain (any real value).
        nx, ny: number of squares per row / column.
    Returns:
        (...) int64 index ``4*(j + i*nx) + t`` with t = 0 top, 1 right, 2 bottom, 3 left.

    Outside the domain a point belongs to the boundary triangle that faces it: take the nearest boundary square
    on each axis and split the plane by that square's two diagonals. No boolean-mask indexing: no host sync.
    """
    X = points[..., 0] * nx
    Y = points[..., 1] * ny
    j = torch.floor(X).clamp(0, nx - 1)
    i = torch.floor(Y).clamp(0, ny - 1)
    u = X - j  # deliberately not clamped: outside the domain u, w leave [0, 1]
    w = Y - i
    below_diag = u < w  # bottom or left
    below_anti = (1 - u) < w  # bottom or right
    t = torch.where(below_diag, torch.where(below_anti, 2, 3), torch.where(below_anti, 1, 0))
    return (4 * (j + i * nx)).long() + t


def find_cell_1d(points: torch.Tensor, nc: int) -> torch.Tensor:
    """(..., 1) -> (...) int64 interval index floor(x*nc) clamped to [0, nc-1] (libcpab's findcellidx1D)."""
    return torch.floor(points[..., 0] * nc).clamp(0, nc - 1).long()
