"""Sync-free matrix exponentials of affine matrices (docs/cpab.md).

``expm_taylor`` = degree-10 Taylor series plus masked scaling and squaring: static shapes, no host sync (unlike
``torch.linalg.matrix_exp`` on CUDA), autograd-differentiable. ``affine_step_tables`` returns the per-cell step
matrices E_c = expm(h [A_c; 0]) and, for the exact discrete Jacobian, their derivative w.r.t. vec(A_c) computed
with the block-triangular trick expm([[X, D], [0, X]]) = [[e^X, L(X, D)], [0, e^X]] using the SAME scaling as
E_c, so that the derivative is the exact derivative of the computed E_c (not only of the true exponential).
"""

from __future__ import annotations

import torch

TAYLOR_DEGREE = 10
MAX_SQUARINGS = 10  # ||h A||_1 up to 0.5 * 2^10 = 512 is handled at full accuracy


def _can_read_values(t: torch.Tensor) -> bool:
    """Whether a loop length may depend on ``t``'s values: on the CPU, where reading them costs nothing, but not
    on accelerators (a host sync) nor while torch.export or torch.compile traces (a graph cannot depend on data)."""
    tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
    return t.device.type == "cpu" and t.numel() > 0 and not tracing


def _squarings_needed(s: torch.Tensor, max_squarings: int) -> int:
    """Loop length of the masked squarings: the actual maximum where it can be read, else the static one."""
    return int(s.max()) if _can_read_values(s) else max_squarings


def squarings_for(X: torch.Tensor, max_squarings: int = MAX_SQUARINGS) -> torch.Tensor:
    """(..., n, n) -> (...) number s of squarings so that ||X / 2^s||_1 <= 0.5 (clamped to [0, max])."""
    norm = X.abs().sum(-2).amax(-1)
    s = torch.ceil(torch.log2(norm.clamp_min(1e-30) / 0.5))
    return s.clamp(0, max_squarings)


def expm_taylor(
    X: torch.Tensor, s: torch.Tensor | None = None, degree: int = TAYLOR_DEGREE, max_squarings: int = MAX_SQUARINGS
) -> torch.Tensor:
    """Matrix exponential of (..., n, n) by Taylor(degree) on X / 2^s, then s masked squarings.

    Args:
        X: (..., n, n) float.
        s: (...) number of squarings (float or int); computed from ||X||_1 when None.
    Returns:
        (..., n, n) exp(X).
    """
    if s is None:
        s = squarings_for(X, max_squarings)
    s = s.to(X.dtype)
    Y = X * torch.exp2(-s)[..., None, None]
    eye = torch.eye(X.shape[-1], dtype=X.dtype, device=X.device)
    E = eye + Y / degree  # Horner: I + Y(I + Y/2(I + ... (I + Y/degree)))
    for k in range(degree - 1, 0, -1):
        E = eye + (Y @ E) / k
    for r in range(_squarings_needed(s, max_squarings)):
        E = torch.where((s > r)[..., None, None], (E @ E), E)
    return E


def augment(A: torch.Tensor) -> torch.Tensor:
    """(..., n, n+1) affine -> (..., n+1, n+1) with a zero last row."""
    n = A.shape[-2]
    zeros = A.new_zeros(*A.shape[:-2], 1, n + 1)
    return torch.cat([A, zeros], dim=-2)


def affine_step_tables(A: torch.Tensor, h: float, derivative: bool = False):
    """Per-cell step matrices of the fixed-step integrator.

    Args:
        A: (..., n, n+1) cell affine maps (velocity v = A x~).
        h: time step.
        derivative: also return dE/dvec(A).
    Returns:
        E: (..., n, n+1) top rows of expm(h [A; 0]).
        dE: (..., n*(n+1), n*(n+1)) with dE[..., p, q] = d vec(E)_p / d vec(A)_q (only when derivative=True).

    The derivative is the exact derivative of the computed E (same Taylor degree and the same number of
    squarings): it is the block-triangular identity expm([[X, D], [0, X]]) = [[e^X, L(X, D)], [0, e^X]] run
    through the same Horner scheme and squarings, with the e^X blocks shared by all P directions D.
    """
    X = augment(A) * h
    s = squarings_for(X)
    n = A.shape[-2]
    if not derivative:
        return expm_taylor(X, s)[..., :n, :]
    m = n + 1
    P = n * m
    degree = TAYLOR_DEGREE
    E = expm_taylor(X, s)
    scale = torch.exp2(-s.to(X.dtype))
    Y = X * scale[..., None, None]
    # Frechet derivative of the Taylor polynomial sum_k Y^k / k! in direction D = e_i e_j^T:
    #   L_ij = sum_{a+b <= degree-1} Y^a e_i e_j^T Y^b / (a+b+1)! = sum_a (Y^a)[:, i] (x) Q_a[j, :],
    #   Q_a = sum_b Y^b / (a+b+1)!  -> one small batched contraction for all P directions at once.
    powers = [torch.eye(m, dtype=X.dtype, device=X.device).expand_as(Y)]
    for _ in range(degree - 1):
        powers.append(powers[-1] @ Y)
    Pw = torch.stack(powers, dim=-3)  # (..., degree, m, m)
    ab = torch.arange(degree, device=X.device, dtype=X.dtype)
    k = ab[:, None] + ab[None, :] + 1  # coef[a, b] = 1/(a+b+1)! for a+b <= degree-1 (built on device: no copy)
    coef = torch.where(k <= degree, torch.exp(-torch.lgamma(k + 1)), torch.zeros_like(k))
    Q = torch.einsum("ab,...bjc->...ajc", coef, Pw)
    L = torch.einsum("...ari,...ajc->...ijrc", Pw[..., :, :, :n], Q)  # (..., n, m, m, m) = dE/dY_ij
    L = L * (h * scale)[..., None, None, None, None]  # dY / dA = h / 2^s
    L = L.reshape(*L.shape[:-4], P, m, m)
    if bool((s > 0).any()) if _can_read_values(s) else True:
        # scaling and squaring: E_{r+1} = E_r^2  =>  L_{r+1} = E_r L_r + L_r E_r (masked, per cell)
        Er = expm_taylor(Y, torch.zeros_like(s))  # exp(Y) before squaring
        for r in range(_squarings_needed(s, MAX_SQUARINGS)):
            mask = (s > r)[..., None, None]
            L = torch.where(mask.unsqueeze(-1), Er.unsqueeze(-3) @ L + L @ Er.unsqueeze(-3), L)
            Er = torch.where(mask, Er @ Er, Er)
    dE = L[..., :n, :].reshape(*L.shape[:-3], P, P)  # (..., q, p)
    return E[..., :n, :], dE.transpose(-1, -2)


def expm_affine_closed(M: torch.Tensor, h: float = 1.0) -> torch.Tensor:
    """Reference e^{hM} of (..., 2, 2) by Cayley-Hamilton (float64 tests only; docs/cpab.md)."""
    mu = (M[..., 0, 0] + M[..., 1, 1]) / 2
    N = M - mu[..., None, None] * torch.eye(2, dtype=M.dtype, device=M.device)
    delta = mu**2 - torch.linalg.det(M)
    z = h * h * delta
    r = torch.sqrt(delta.abs())
    small = z.abs() < 1e-8
    hr = h * r
    C = torch.where(delta > 0, torch.cosh(hr), torch.cos(hr))
    S = torch.where(delta > 0, torch.sinh(hr), torch.sin(hr)) / torch.where(small, torch.ones_like(hr), hr)
    C = torch.where(small, 1 + z / 2 + z * z / 24, C)
    S = torch.where(small, 1 + z / 6 + z * z / 120, S)
    eye = torch.eye(2, dtype=M.dtype, device=M.device)
    return torch.exp(h * mu)[..., None, None] * (C[..., None, None] * eye + h * S[..., None, None] * N)


__all__ = ["expm_taylor", "affine_step_tables", "augment", "squarings_for", "expm_affine_closed"]
