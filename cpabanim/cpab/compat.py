"""Adapters to libcpab / difw conventions: point layouts and theta mapping between bases.

A null-space basis is unique only up to a rotation, so theta from another implementation must be mapped:
theta_to = B_to^T B_from theta_from (exact: both bases span the same space). Our 2-D basis is libcpab's own
(same constraint rows in the same order, same SVD: docs/cpab.md), so for libcpab the map is the identity; it is
still needed for difw and for bases built by other code.
"""

from __future__ import annotations

import numpy as np
import torch


def map_theta(theta: torch.Tensor, basis_from, basis_to) -> torch.Tensor:
    """(T, d) theta in ``basis_from`` (D, d) -> the same velocity field's theta in ``basis_to`` (D, d)."""
    B_from = torch.as_tensor(np.asarray(basis_from), dtype=torch.float64, device=theta.device)
    B_to = torch.as_tensor(np.asarray(basis_to), dtype=torch.float64, device=theta.device)
    return (theta.double() @ B_from.T @ B_to).to(theta.dtype)


def from_libcpab_points(points: torch.Tensor) -> torch.Tensor:
    """libcpab layout (n, N) or (T, n, N) -> ours (N, n) or (T, N, n)."""
    return points.transpose(-1, -2).contiguous()


def to_libcpab_points(points: torch.Tensor) -> torch.Tensor:
    """Ours (N, n) or (T, N, n) -> libcpab layout (n, N) or (T, n, N)."""
    return points.transpose(-1, -2).contiguous()
