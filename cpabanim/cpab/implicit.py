"""Keypoint fits that pass gradients back to the keypoints: implicit differentiation of the LM fit.

The LM fit (``cpabanim.cpab.fit.fit_lm``) is an iterative solver run under ``no_grad``; backpropagating through
its iterations would be slow and would differentiate the iterations rather than the solution. Instead,
:func:`fit_lm_implicit` treats theta* as the minimiser of

    Phi(theta; p, q) = ||T_theta(p) - q||^2 + lam ||theta||^2

and differentiates the stationarity condition F = J^T r + lam theta = 0 (r = T_theta(p) - q, J = dT/dtheta,
J_p = dT/dp, both the exact Jacobians of the discrete map that the fit already uses, docs/cpab.md
"Integration"). Differentiating F gives

    (J^T J + lam I + sum_i r_i d2T_i/dtheta2) dtheta = J^T (dq - J_p dp) - (dJ/dp)^T r dp.

**Approximation: Gauss-Newton.** We drop the two terms that are multiplied by the residual r (the curvature of
T in theta and the p-derivative of J) and use

    dtheta = (J^T J + lam I)^-1 J^T (dq - J_p dp).

This is exact when the fit interpolates (r = 0) with J of full column rank (more keypoint coordinates than
parameters, realisable motion, lam -> 0), which the tests check against finite differences of the converged
fit. In CPABMM's partial fits (5 keypoints, 10 equations, d = 58) the problem is underdetermined: the ridge
leaves r = O(lam) and the dropped term is O(lam) too, comparable to lam I in the null space of J. There the
Gauss-Newton derivative is still exact to O(lam) for what the keypoints see (J dtheta, the motion of the fitted
keypoints), while its null-space part is the minimum-norm choice rather than the exact curvature-corrected one
(docs/model.md, "Keypoints that learn through the CPAB fit", gives the measured gap). It is also evaluated at
the returned theta, which after the default 3 LM iterations is near, not at, the optimum.

The backward is batched (no loop over transforms) and uses the cheaper of two equal forms:
(J^T J + lam I)^-1 J^T = J^T (J J^T + lam I)^-1, so the solve is (2K x 2K) when 2K < d (partial fits: 10 x 10)
and (d x d) otherwise.
"""

from __future__ import annotations

import torch

from cpabanim.cpab.fit import fit_lm


def _ridge_keypoint_solve(J: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """u = J (J^T J + lam I)^-1 g, batched.

    Args:
        J: (T, M, d) Jacobian of the M = K*n keypoint coordinates w.r.t. theta.
        g: (T, d) incoming gradient dL/dtheta.
    Returns:
        (T, M): the keypoint-space vector that dq and dp contract with (dL/dq = u, dL/dp = -J_p^T u).

    Solved in float64: the systems are tiny (10 x 10 for a partial fit) and lam = 1e-4 makes them
    ill-conditioned enough (cond ~ |J|^2 / lam) that a float32 Cholesky could fail or lose digits.
    """
    dtype = J.dtype
    J, g = J.double(), g.double()
    T, M, d = J.shape
    Jg = (J @ g.unsqueeze(-1)).squeeze(-1)  # (T, M)
    if M < d:  # J (J^T J + lam I)^-1 = (J J^T + lam I)^-1 J: an M x M system
        H = J @ J.transpose(1, 2) + lam * torch.eye(M, dtype=J.dtype, device=J.device)
        u = torch.linalg.solve(H, Jg)
    else:
        H = J.transpose(1, 2) @ J + lam * torch.eye(d, dtype=J.dtype, device=J.device)
        u = (J @ torch.linalg.solve(H, g).unsqueeze(-1)).squeeze(-1)
    return u.to(dtype)


class ImplicitLMFit(torch.autograd.Function):
    """theta* = LM fit of (points, targets); backward by the Gauss-Newton implicit function theorem.

    ``apply(points, targets, cpab, lam, iters, mu0, method)``: points, targets (T, K, n) -> theta (T, d).
    """

    @staticmethod
    def forward(ctx, points, targets, cpab, lam: float, iters: int, mu0: float, method: str):
        with torch.no_grad():
            theta = fit_lm(cpab, points, targets, lam=lam, iters=iters, mu0=mu0, method=method)
            # Jacobians at the returned theta (the fit's last ones are at the iterate before its last step)
            _, J, Jp = cpab.transform(points.detach(), theta, method=method, return_jacobian=True)
        ctx.save_for_backward(J, Jp)
        ctx.lam = float(lam)
        return theta

    @staticmethod
    def backward(ctx, grad_theta):
        J, Jp = ctx.saved_tensors  # (T, K, n, d), (T, K, n, n)
        T, K, n, d = J.shape
        u = _ridge_keypoint_solve(J.reshape(T, K * n, d), grad_theta, ctx.lam).view(T, K, n)
        grad_points = grad_targets = None
        if ctx.needs_input_grad[1]:
            grad_targets = u
        if ctx.needs_input_grad[0]:
            grad_points = -(Jp.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)  # per keypoint: -J_p^T u
        return grad_points, grad_targets, None, None, None, None, None


def fit_lm_implicit(
    cpab,
    points: torch.Tensor,
    targets: torch.Tensor,
    lam: float | None = None,
    iters: int = 3,
    mu0: float = 1e-3,
    method: str = "faithful",
) -> torch.Tensor:
    """The LM keypoint fit, differentiable w.r.t. points and targets by the implicit function theorem.

    Args:
        cpab: a ``CPAB`` module.
        points, targets: (T, K, n) in [0,1]^n, T_theta(points) ~= targets.
        lam: ridge weight (None: ``cpab.fit_lambda``); the backward uses the same lam as the fit.
        iters, mu0, method: as ``fit_lm`` (the forward is exactly ``fit_lm``).
    Returns:
        theta (T, d), equal to ``fit_lm``'s; gradients reach points and targets (Gauss-Newton IFT, module
        docstring), with one extra exact-Jacobian pass at the returned theta in the forward.
    """
    lam = cpab.fit_lambda if lam is None else float(lam)
    return ImplicitLMFit.apply(points, targets, cpab, lam, int(iters), float(mu0), method)
