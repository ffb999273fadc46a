"""The CPAB nn.Module: theta -> affine maps -> velocity field -> transformation (+ Jacobians, dense grids, fits)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from cpabanim.cpab import integrate as _int
from cpabanim.cpab.tessellation import Tessellation, Tessellation1D

Method = Literal["faithful", "fast", "freifeld", "rk4"]


class CPAB(nn.Module):
    """CPAB transformations on a tessellation of [0,1]^n (n = 1 or 2), batched over T transforms.

    The float64 basis is built by numpy and kept as a float64 buffer ``B`` (D, d): ``.to(device)`` moves it,
    ``.to(dtype)`` casts it. Computations run in theta's dtype (float32 or float64).

    Args:
        tess: a ``Tessellation`` (2-D) or ``Tessellation1D``.
        nsteps: steps of the faithful integrator (libcpab: 50).
        fast_nsteps: steps of ``method="fast"`` (20: max error ~1e-4 of the domain at talking-head motion,
            docs/cpab.md; 2.5x cheaper than 50).
        fit_lambda: default ridge weight of the LM fit; None = ``cpabanim.cpab.fit.DEFAULT_LAMBDA_PARTIAL`` for
            tessellations up to 4x4 (the partial fits on 5 keypoints), ``DEFAULT_LAMBDA_GLOBAL`` for finer ones
            (the 6x6 global fit), docs/cpab.md; the model's motion (cpabanim/models/cpab_motion.py) uses the same
    """

    def __init__(
        self,
        tess: Tessellation | Tessellation1D,
        nsteps: int = 50,
        fast_nsteps: int = 20,
        fit_lambda: float | None = None,
    ):
        super().__init__()
        from cpabanim.cpab.fit import DEFAULT_LAMBDA_GLOBAL, DEFAULT_LAMBDA_PARTIAL

        if fit_lambda is None:
            fit_lambda = DEFAULT_LAMBDA_PARTIAL if tess.nC <= 64 else DEFAULT_LAMBDA_GLOBAL
        self.fit_lambda = float(fit_lambda)
        self.tess = tess
        self.nsteps = int(nsteps)
        self.fast_nsteps = int(fast_nsteps)
        # float64 so that a float64 computation gets the exact basis; theta's dtype is used for the compute.
        # Not saved: the basis is rebuilt from the tessellation, so a checkpoint never brings back another one
        # (docs/faithfulness.md: the basis has to be libcpab's for the Adam fit).
        self.register_buffer("B", torch.tensor(tess.B, dtype=torch.float64), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the basis stopped being saved carry it (possibly an older, rotated one)
        state_dict.pop(prefix + "B", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        """d = dim theta."""
        return self.tess.d

    @property
    def ndim(self) -> int:
        return self.tess.ndim

    @property
    def nc(self) -> tuple[int, ...]:
        return self.tess.nc

    def theta_to_A(self, theta: torch.Tensor) -> torch.Tensor:
        """(T, d) -> (T, nC, n, n+1) per-cell affine maps, vec(A) = B theta."""
        n = self.ndim
        return (theta @ self.B.to(theta.dtype).T).view(theta.shape[0], self.tess.nC, n, n + 1)

    def basis_cells(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(nC, P, d) rows of B per cell: d vec(A_c) / d theta."""
        B = self.B if dtype is None else self.B.to(dtype)
        return B.view(self.tess.nC, -1, self.dim)

    def identity(self, n: int = 1, epsilon: float = 0.0) -> torch.Tensor:
        """(n, d) theta of the (near-)identity transform."""
        return torch.full((n, self.dim), float(epsilon), dtype=self.B.dtype, device=self.B.device)

    def sample(
        self, n: int, length_scale: float = 0.1, variance: float = 1.0, scale: float = 1.0, generator=None
    ) -> torch.Tensor:
        """(n, d) prior samples in the buffer's dtype (float64 unless the module was cast) of the squared-exponential
        prior over cell centroids (Sigma_theta = B^T Sigma_A B), multiplied by ``scale`` (0.25 gives a mean
        displacement of ~0.11 of the domain on 4x4)."""
        theta = self.tess.sample(n, length_scale, variance, scale, generator=generator)
        return theta.to(device=self.B.device, dtype=self.B.dtype)

    # ------------------------------------------------------------------ fields and transforms
    def velocity(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Velocity v_theta(points): points (T, N, n) or (N, n) -> (T, N, n)."""
        return _int.velocity(points.to(theta.dtype), self.theta_to_A(theta), self.nc)

    def transform(
        self,
        points: torch.Tensor,
        theta: torch.Tensor,
        method: Method = "faithful",
        return_jacobian: bool = False,
        nsteps: int | None = None,
    ):
        """T_theta(points).

        Args:
            points: (T, N, n) or (N, n) (shared, broadcast) in the CPAB domain [0,1]^n.
            theta: (T, d).
            method: ``"faithful"`` libcpab's scheme (``nsteps``, default 50); ``"fast"`` the same scheme with
                ``fast_nsteps`` (20); ``"freifeld"`` check-and-fallback (10 steps, 5 midpoint substeps at crossings);
                ``"rk4"`` reference RK4 (``nsteps`` default 2000).
            return_jacobian: also return the exact Jacobian of the discrete map w.r.t. theta (T, N, n, d) and
                w.r.t. the points (T, N, n, n), by forward sensitivity (faithful / fast only).
        Returns:
            (T, N, n), or (y, J_theta, J_points). Differentiable by autograd w.r.t. theta and points.
        """
        points = points.to(theta.dtype)
        A = self.theta_to_A(theta)
        if method in ("faithful", "fast"):
            steps = nsteps or (self.nsteps if method == "faithful" else self.fast_nsteps)
            cells = self.basis_cells(theta.dtype) if return_jacobian else None
            return _int.integrate_steps(points, A, self.nc, steps, basis_cells=cells)
        if return_jacobian:
            raise ValueError(f"return_jacobian is only available for methods 'faithful' and 'fast', not {method!r}")
        if method == "freifeld":
            return _int.integrate_freifeld(points, A, self.nc, nsteps or 10)
        if method == "rk4":
            return _int.integrate_rk4(points, A, self.nc, nsteps or 2000)
        raise ValueError(f"unknown method {method!r}: choose faithful, fast, freifeld or rk4")

    def forward(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.transform(points, theta)

    def warp_grid(
        self,
        theta: torch.Tensor,
        size: Sequence[int] = (64, 64),
        method: Method = "faithful",
        differentiable: bool = False,
    ) -> torch.Tensor:
        """Dense sampling grid (T, H, W, 2) in [-1,1] for ``F.grid_sample(..., align_corners=True)``: maps the
        identity grid u to 2 T((u+1)/2) - 1 (2-D only). Runs under no_grad on detached theta unless
        ``differentiable=True`` (then autograd through the integration, exact for the discrete map)."""
        from cpabanim.cpab.warp import warp_grid

        return warp_grid(self, theta, size, method=method, differentiable=differentiable)

    def fit(self, points: torch.Tensor, targets: torch.Tensor, method: str = "lm", **kwargs):
        """Find theta (T, d) with T_theta(points) ~= targets (both (T, K, n) in [0,1]^n).

        ``method="lm"`` (default): midpoint-linearised ridge initialisation + batched Levenberg-Marquardt with the
        exact Jacobian (see ``cpabanim.cpab.fit.fit_lm`` for ``iters``...; ``lam`` defaults to ``self.fit_lambda``).
        ``method="adam"``: the paper's Eq. 6 (``cpabanim.cpab.fit.fit_adam``). With ``return_residual=True`` returns
        ``(theta, residual)``, residual (T,) = per-transform RMS of the coordinate errors T(p) - q in domain
        ([0,1]) units.
        """
        from cpabanim.cpab import fit as _fit

        if method == "lm":
            kwargs.setdefault("lam", self.fit_lambda)
            return _fit.fit_lm(self, points, targets, **kwargs)
        if method == "adam":
            return _fit.fit_adam(self, points, targets, **kwargs)
        raise ValueError(f"unknown fit method {method!r}: choose 'lm' or 'adam'")

    def extra_repr(self) -> str:
        return f"{self.tess!r}, nsteps={self.nsteps}"
