"""Keypoints -> CPAB sampling grids (paper.md §1.4): N partial 4x4 CPABs on 5 keypoints each + 1 global 6x6 CPAB
on all keypoints, each fitted driving -> source so that the grid is a backward-warping grid for the source.

Faithful to the released code: the keypoints are DETACHED before the fit (the generator losses reach the
keypoint detector only through the heatmaps, equivariance and the semantic loss) and theta is detached before
the dense grid (paper.md §7.5: the code's backward through theta is wasted work, the outputs are the same).
``fit_method="lm"`` is our fast Levenberg-Marquardt inference; ``"adam"`` is the paper's per-call Adam fit
(lr 1e-2, theta_0 = 1e-6, batch Frobenius loss) with ``adam_iters`` partial / 1.5x global iterations.
``integrator``: "faithful" = libcpab's 50-step scheme (as the paper ran), "fast" = 20 steps (max error ~1e-4 of
the domain at talking-head motion, cpab.md §2.3; about 2x cheaper), used for the fit and the dense grid alike.
"""

from __future__ import annotations

import torch
from torch import nn

FIT_METHODS = ("lm", "adam")
# LM ridge weights of cpab.md §4.3 (the global transform sees 10x more points on a finer tessellation)
DEFAULT_LAMBDA_PARTIAL = 1e-4
DEFAULT_LAMBDA_GLOBAL = 3e-4


class CPABMotion(nn.Module):
    """CPAB motion model; ``forward`` gives (B, N+1, H, W, 2): N partial grids then the global grid."""

    def __init__(self, partial_tessellation=(4, 4), global_tessellation=(6, 6), fit_method: str = "lm",
                 adam_iters: int = 100, use_global: bool = True, integrator: str = "faithful"):
        super().__init__()
        from cpabanim.cpab import CPAB, Tessellation

        if fit_method not in FIT_METHODS:
            raise ValueError(f"fit_method must be one of {FIT_METHODS}, got {fit_method!r}")
        self.fit_method = fit_method
        self.adam_iters = int(adam_iters)
        self.use_global = use_global
        self.integrator = integrator
        self.partial = CPAB(Tessellation(tuple(partial_tessellation)))
        self.global_ = CPAB(Tessellation(tuple(global_tessellation))) if use_global else None

    def _fit(self, cpab, points: torch.Tensor, targets: torch.Tensor, iters: int, lam: float) -> torch.Tensor:
        """points, targets (T, K, 2) in [0, 1] -> theta (T, d), detached."""
        from cpabanim.cpab.fit import fit_adam, fit_lm

        points, targets = points.float(), targets.float()
        # The fit needs autograd inside (Adam) even when the outer model runs under no_grad (paper.md §7.6), and
        # full precision even under AMP (bf16 matmuls would wreck the LM normal equations and the integration).
        with torch.enable_grad(), torch.autocast(points.device.type, enabled=False):
            if self.fit_method == "adam":
                theta = fit_adam(cpab, points, targets, iters=iters, method=self.integrator)
            else:
                theta = fit_lm(cpab, points, targets, lam=lam, method=self.integrator)
        return theta.detach()

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor, num_groups: int,
                size: tuple[int, int]) -> torch.Tensor:
        """kp (B, G*5, 2) in [-1, 1] -> grids (B, G + use_global, H, W, 2) in [-1, 1]."""
        b, k, _ = kp_source.shape
        points = (kp_driving.detach() + 1) / 2
        targets = (kp_source.detach() + 1) / 2
        theta = self._fit(self.partial, points.reshape(b * num_groups, k // num_groups, 2),
                          targets.reshape(b * num_groups, k // num_groups, 2), self.adam_iters, DEFAULT_LAMBDA_PARTIAL)
        with torch.autocast(kp_source.device.type, enabled=False):
            return self._grids(theta, points, targets, b, num_groups, size)  # float32 even under AMP

    def _grids(self, theta, points, targets, b, num_groups, size):
        grids = [self.partial.warp_grid(theta, size=size, method=self.integrator)
                 .view(b, num_groups, size[0], size[1], 2)]
        if self.global_ is not None:
            theta_g = self._fit(self.global_, points, targets, int(round(1.5 * self.adam_iters)), DEFAULT_LAMBDA_GLOBAL)
            grids.append(self.global_.warp_grid(theta_g, size=size, method=self.integrator)
                         .view(b, 1, size[0], size[1], 2))
        return torch.cat(grids, dim=1)
