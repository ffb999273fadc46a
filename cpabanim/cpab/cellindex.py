"""Cell index functions Idx(x): branch-free, sync-free versions of libcpab's ``findcellidx`` (docs/cpab.md)."""

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
    return cell_index_xy(points[..., 0], points[..., 1], nx, ny).long()


def cell_index_xy(xs: torch.Tensor, ys: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """``find_cell`` on separate coordinate tensors, returned as an exact float index (cheaper inside loops)."""
    X = xs * nx
    Y = ys * ny
    j = torch.floor(X).clamp_(0, nx - 1)
    i = torch.floor(Y).clamp_(0, ny - 1)
    u = X - j  # deliberately not clamped: outside the domain u, w leave [0, 1]
    w = Y - i
    below_diag = (u < w).to(X.dtype)  # bottom or left
    below_anti = ((1 - u) < w).to(X.dtype)  # bottom or right
    # (diag, anti): (0,0) top 0, (0,1) right 1, (1,1) bottom 2, (1,0) left 3
    t = below_diag * (3 - 2 * below_anti) + below_anti
    return (j + i * nx) * 4 + t


def find_cell_1d(points: torch.Tensor, nc: int) -> torch.Tensor:
    """(..., 1) -> (...) int64 interval index floor(x*nc) clamped to [0, nc-1] (libcpab's findcellidx1D)."""
    return torch.floor(points[..., 0] * nc).clamp(0, nc - 1).long()
