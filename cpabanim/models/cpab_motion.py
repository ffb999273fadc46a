"""Keypoints -> CPAB sampling grids (docs/model.md): N partial 4x4 CPABs on 5 keypoints each + 1 global 6x6 CPAB
on all keypoints, each fitted driving -> source so that the grid is a backward-warping grid for the source.

Faithful to the released code: the keypoints are DETACHED before the fit (the generator losses reach the
keypoint detector only through the heatmaps, equivariance and the semantic loss) and theta is detached before
the dense grid (docs/model.md: the code's backward through theta is wasted work, the outputs are the same).
``fit_method="lm"`` is our fast Levenberg-Marquardt inference; ``"adam"`` is the paper's per-call Adam fit
(lr 1e-2, theta_0 = 1e-6, one Frobenius norm per call) with ``adam_iters`` partial / 1.5x global iterations.

Which transforms share one Frobenius norm follows the released code (docs/faithfulness.md): its training step
fits the whole batch in one call (all B x N partial transforms coupled, and the B global ones), while its
reconstruction and demo run one frame per call (a frame's N partial transforms coupled, each global alone).
So in train mode the batch is coupled and in eval mode (``reconstruct``, ``animate``) every frame is fitted on
its own, by :func:`fit_adam_grouped`'s decoupled loss, equal to a loop over frames in one batched call.
``integrator``: "faithful" = libcpab's 50-step scheme (as the paper ran), "fast" = 20 steps (max error ~1e-4 of
the domain at talking-head motion, docs/cpab.md; about 2x cheaper), used for the fit and the dense grid alike.

``kp_gradient="implicit"`` (ours, beyond the paper) keeps both paths: the LM fit is differentiated w.r.t. the
keypoints by the implicit function theorem (Gauss-Newton, :mod:`cpabanim.cpab.implicit`) and the dense grid
w.r.t. theta through the integration, so the reconstruction loss reaches the keypoint detector through the CPAB
motion as TPSMM's differentiable TPS solve lets it (docs/model.md, "Keypoints that learn through the CPAB fit").
The forward values are the same as with "detach".
"""

from __future__ import annotations

import torch
from torch import nn

# LM ridge weights of docs/cpab.md (the global transform sees 10x more points on a finer tessellation): their
# one home is the fit
from cpabanim.cpab.fit import DEFAULT_LAMBDA_GLOBAL, DEFAULT_LAMBDA_PARTIAL

FIT_METHODS = ("lm", "adam")
KP_GRADIENTS = ("detach", "implicit")


def fit_adam_grouped(
    cpab,
    points: torch.Tensor,
    targets: torch.Tensor,
    group_size: int,
    iters: int,
    method: str = "faithful",
    lr: float = 1e-2,
    theta0: float = 1e-6,
) -> torch.Tensor:
    """The paper's Adam fit (Eq. 6) run independently on consecutive groups of ``group_size`` transforms.

    points, targets (T, K, 2) in [0, 1], T a multiple of ``group_size`` -> theta (T, d), detached.
    The loss is the SUM over groups of each group's Frobenius norm ||(2 T(p) - 1) - (2 q - 1)||. Why this equals
    one Adam run per group: a group's parameters get exactly the gradient of its own norm (the other terms do
    not depend on them), and Adam's state and update are elementwise, with one shared step count. (A mean over
    groups would scale every gradient by 1/G, which Adam's eps turns into a different trajectory.)
    ``group_size = T`` is ``cpabanim.cpab.fit.fit_adam`` (one norm over the whole call).
    """
    t = points.shape[0]
    if group_size < 1 or t % group_size:
        raise ValueError(f"{t} transforms cannot be split into groups of {group_size}")
    points, targets = points.detach(), targets.detach()
    theta = torch.full((t, cpab.dim), theta0, dtype=points.dtype, device=points.device, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    with torch.enable_grad():
        for _ in range(iters):
            moved = cpab.transform(points, theta, method=method)
            residual = ((2 * moved - 1) - (2 * targets - 1)).reshape(t // group_size, -1)
            loss = torch.linalg.vector_norm(residual, dim=1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return theta.detach()


class CPABMotion(nn.Module):
    """CPAB motion model; ``forward`` gives (B, N+1, H, W, 2): N partial grids then the global grid."""

    def __init__(
        self,
        partial_tessellation=(4, 4),
        global_tessellation=(6, 6),
        fit_method: str = "lm",
        adam_iters: int = 100,
        use_global: bool = True,
        integrator: str = "faithful",
        kp_gradient: str = "detach",
    ):
        super().__init__()
        from cpabanim.cpab import CPAB, Tessellation

        if fit_method not in FIT_METHODS:
            raise ValueError(f"fit_method must be one of {FIT_METHODS}, got {fit_method!r}")
        if kp_gradient not in KP_GRADIENTS:
            raise ValueError(f"kp_gradient must be one of {KP_GRADIENTS}, got {kp_gradient!r}")
        if kp_gradient == "implicit" and fit_method != "lm":
            # the implicit gradient is that of the ridge least-squares optimum the LM fit solves; the paper's Adam
            # fit minimises another objective (one unsquared norm over coupled transforms) and stops early
            raise ValueError(
                "model.kp_gradient=implicit needs model.fit_method=lm (it differentiates the LM fit's "
                f"optimum), got fit_method={fit_method!r}"
            )
        self.fit_method = fit_method
        self.kp_gradient = kp_gradient
        self.adam_iters = int(adam_iters)
        self.use_global = use_global
        self.integrator = integrator
        self.partial = CPAB(Tessellation(tuple(partial_tessellation)))
        self.global_ = CPAB(Tessellation(tuple(global_tessellation))) if use_global else None

    def _fit(
        self, cpab, points: torch.Tensor, targets: torch.Tensor, iters: int, lam: float, per_frame: int
    ) -> torch.Tensor:
        """points, targets (T, K, 2) in [0, 1] -> theta (T, d), detached unless ``kp_gradient="implicit"``.

        ``per_frame``: transforms per frame (N partial, 1 global); Adam couples them per frame in eval mode and
        over the whole batch in train mode, as the released code does (module docstring). LM is per transform.
        """
        from cpabanim.cpab.fit import fit_lm
        from cpabanim.cpab.implicit import fit_lm_implicit

        points, targets = points.float(), targets.float()
        # The fit needs autograd inside (Adam) even when the outer model runs under no_grad (docs/model.md), and
        # full precision even under AMP (bf16 matmuls would wreck the LM normal equations and the integration).
        with torch.enable_grad(), torch.autocast(points.device.type, enabled=False):
            if self.fit_method == "adam":
                group = per_frame if not self.training else points.shape[0]
                theta = fit_adam_grouped(cpab, points, targets, group, iters, method=self.integrator)
            elif self.kp_gradient == "implicit":
                return fit_lm_implicit(cpab, points, targets, lam=lam, method=self.integrator)
            else:
                theta = fit_lm(cpab, points, targets, lam=lam, method=self.integrator)
        return theta.detach()

    def forward(
        self, kp_source: torch.Tensor, kp_driving: torch.Tensor, num_groups: int, size: tuple[int, int]
    ) -> torch.Tensor:
        """kp (B, G*5, 2) in [-1, 1] -> grids (B, G + use_global, H, W, 2) in [-1, 1]."""
        b, k, _ = kp_source.shape
        if self.kp_gradient == "detach":  # the released code's detach (module docstring)
            kp_source, kp_driving = kp_source.detach(), kp_driving.detach()
        points = (kp_driving + 1) / 2
        targets = (kp_source + 1) / 2
        theta = self._fit(
            self.partial,
            points.reshape(b * num_groups, k // num_groups, 2),
            targets.reshape(b * num_groups, k // num_groups, 2),
            self.adam_iters,
            DEFAULT_LAMBDA_PARTIAL,
            per_frame=num_groups,
        )
        with torch.autocast(kp_source.device.type, enabled=False):
            return self._grids(theta, points, targets, b, num_groups, size)  # float32 even under AMP

    def _grids(self, theta, points, targets, b, num_groups, size):
        differentiable = self.kp_gradient == "implicit"
        grids = [
            self.partial.warp_grid(theta, size=size, method=self.integrator, differentiable=differentiable).view(
                b, num_groups, size[0], size[1], 2
            )
        ]
        if self.global_ is not None:
            theta_g = self._fit(
                self.global_, points, targets, int(round(1.5 * self.adam_iters)), DEFAULT_LAMBDA_GLOBAL, per_frame=1
            )
            grids.append(
                self.global_.warp_grid(theta_g, size=size, method=self.integrator, differentiable=differentiable).view(
                    b, 1, size[0], size[1], 2
                )
            )
        return torch.cat(grids, dim=1)
