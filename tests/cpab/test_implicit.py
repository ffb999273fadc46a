"""Implicit differentiation of the LM keypoint fit (Gauss-Newton IFT) and the differentiable dense grid.

Finite differences of the discrete CPAB map are only meaningful away from "step-cell switches" (a perturbation
that moves one integration step's start point across a cell edge makes the discrete map jump by O(h^2)), so the
finite-difference tests keep the keypoints away from the cell edges and the motion small, and check that two
step sizes agree before trusting them as the truth.
"""

from __future__ import annotations

import pytest
import torch

from cpabanim.cpab import CPAB, Tessellation, fit_lm, fit_lm_implicit
from cpabanim.cpab.warp import identity_grid, to_unit, warp_grid


def _points_away_from_edges(T: int, K: int, n: int, seed: int, margin: float = 0.12) -> torch.Tensor:
    """(T, K, 2) float64 points in [0.1, 0.9]^2, >= margin (square units) from every side and diagonal of an
    n x n tessellation's squares."""
    gen = torch.Generator().manual_seed(seed)
    pts = []
    while len(pts) < T * K:
        p = torch.rand(2, generator=gen, dtype=torch.float64) * 0.8 + 0.1
        u, w = (p * n) % 1
        if min(u, w, 1 - u, 1 - w, abs(u - w), abs(1 - u - w)) > margin:
            pts.append(p)
    return torch.stack(pts).view(T, K, 2)


@pytest.fixture(scope="module")
def exact_regime():
    """Where Gauss-Newton is the exact derivative: realisable motion, J of full column rank (2x2 tessellation,
    d = 20, 24 keypoints = 48 equations; with 12 keypoints some directions are unobserved and the gap below
    shows up, ~1e-3), lam -> 0, LM run to convergence (15 iterations reach a 1e-10 residual)."""
    cpab = CPAB(Tessellation((2, 2))).double()
    p = _points_away_from_edges(2, 24, 2, seed=0, margin=0.05)
    theta_true = cpab.sample(2, scale=0.05, generator=torch.Generator().manual_seed(1))
    q = cpab.transform(p, theta_true, method="fast")
    return cpab, p, q, dict(lam=1e-10, iters=15, method="fast")


def test_forward_is_the_lm_fit():
    cpab = CPAB(Tessellation((4, 4)))
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(6, 5, 2, generator=gen) * 0.8 + 0.1
    q = p + 0.05 * torch.randn(6, 5, 2, generator=gen)
    theta = fit_lm_implicit(cpab, p.requires_grad_(True), q, method="fast")
    assert theta.requires_grad
    assert torch.equal(theta.detach(), fit_lm(cpab, p.detach(), q, lam=cpab.fit_lambda, method="fast"))


def test_gradcheck_float64(exact_regime):
    cpab, p, q, kw = exact_regime
    p, q = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    # fast_mode: a random projection of the full Jacobian (the full check costs 2 fits per input element)
    assert torch.autograd.gradcheck(
        lambda a, b: fit_lm_implicit(cpab, a, b, **kw), (p, q), eps=1e-6, atol=1e-5, rtol=1e-5, fast_mode=True
    )


def test_matches_finite_differences_of_the_converged_fit(exact_regime):
    """Directional derivatives of the actual (converged) fit vs the implicit backward, tight tolerance."""
    cpab, p, q, kw = exact_regime
    _, res = fit_lm(cpab, p, q, return_residual=True, **kw)
    assert res.max() < 1e-9  # the fit interpolates: the Gauss-Newton terms dropped are ~0
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(2, cpab.dim, generator=gen, dtype=torch.float64)
    dp, dq = (torch.randn(p.shape, generator=gen, dtype=torch.float64) for _ in range(2))
    pg, qg = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    gp, gq = torch.autograd.grad((fit_lm_implicit(cpab, pg, qg, **kw) * w).sum(), (pg, qg))
    analytic = (gp * dp).sum() + (gq * dq).sum()

    def fd(eps):
        f = lambda s: (fit_lm(cpab, p + s * dp, q + s * dq, **kw) * w).sum()  # noqa: E731
        return (f(eps) - f(-eps)) / (2 * eps)

    fd6, fd5 = fd(1e-6), fd(1e-5)
    assert abs(fd6 - fd5) <= 1e-5 * abs(fd6)  # smooth here (O(eps^2) apart): the finite differences are the truth
    assert abs(analytic - fd6) <= 1e-6 * abs(fd6)


def _explicit_gauss_newton(cpab, p, q, theta, lam, w):
    """dL/dp, dL/dq for L = <w, theta> from the d x d normal equations written out (independent of the module's
    push-through solve): dtheta = (J^T J + lam I)^-1 J^T (dq - J_p dp)."""
    _, J, Jp = cpab.transform(p, theta, return_jacobian=True)
    T, K, n, d = J.shape
    Jf = J.reshape(T, K * n, d)
    H = Jf.transpose(1, 2) @ Jf + lam * torch.eye(d, dtype=J.dtype)
    v = torch.linalg.solve(H, w)  # (T, d)
    gq = (Jf @ v.unsqueeze(-1)).view(T, K, n)
    gp = -torch.einsum("tkij,tki->tkj", Jp, gq)
    return gp, gq


@pytest.mark.parametrize("nc,K,lam", [((4, 4), 5, 1e-4), ((6, 6), 10, 3e-4), ((2, 2), 12, 1e-4)])
def test_backward_is_the_gauss_newton_formula(nc, K, lam):
    """CPABMM's partial (2K = 10 < d = 58) and global fits use the (2K x 2K) form; 2x2 with 12 keypoints
    (24 > 20) the (d x d) form. Both equal the written-out formula, on inconsistent keypoints too."""
    cpab = CPAB(Tessellation(nc)).double()
    gen = torch.Generator().manual_seed(7)
    p = torch.rand(3, K, 2, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    q = p + 0.07 * torch.randn(3, K, 2, generator=gen, dtype=torch.float64)
    w = torch.randn(3, cpab.dim, generator=gen, dtype=torch.float64)
    pg, qg = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    theta = fit_lm_implicit(cpab, pg, qg, lam=lam)
    gp, gq = torch.autograd.grad((theta * w).sum(), (pg, qg))
    ep, eq = _explicit_gauss_newton(cpab, p, q, theta.detach(), lam, w)
    torch.testing.assert_close(gq, eq, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gp, ep, rtol=1e-8, atol=1e-10)
    assert gq.abs().sum() > 0 and gp.abs().sum() > 0


def test_gauss_newton_gap_on_an_underdetermined_partial_fit():
    """The measured price of Gauss-Newton where CPABMM uses it: 4x4 partial fit, 5 keypoints (10 equations,
    d = 58), default lam 1e-4, realisable talking-head-sized motion (prior scale 0.25), converged fit. The
    Jacobian d theta / d q against finite differences of the actual fit: 3 to 11 % apart (measured: 0.113, 0.084,
    0.027),
    not exact, because the ridge leaves a residual whose curvature term Gauss-Newton drops (implicit.py)."""
    cpab = CPAB(Tessellation((4, 4))).double()
    p = _points_away_from_edges(3, 5, 4, seed=11, margin=0.1)
    q = cpab.transform(p, cpab.sample(3, scale=0.25, generator=torch.Generator().manual_seed(12)), method="fast")
    kw = dict(lam=1e-4, iters=12, method="fast")  # converged: within 1e-10 of 60 iterations
    qg = q.clone().requires_grad_(True)
    theta = fit_lm_implicit(cpab, p, qg, **kw)
    rows = [torch.autograd.grad(theta[:, j].sum(), qg, retain_graph=True)[0].reshape(3, -1) for j in range(cpab.dim)]
    jac_gn = torch.stack(rows, 1)  # (T, d, 2K)

    def jac_fd(eps):
        cols = []
        for i in range(10):
            e = torch.zeros(3, 10, dtype=torch.float64)
            e[:, i] = eps
            e = e.view(3, 5, 2)
            cols.append((fit_lm(cpab, p, q + e, **kw) - fit_lm(cpab, p, q - e, **kw)) / (2 * eps))
        return torch.stack(cols, -1)

    fd6, fd5 = jac_fd(1e-6), jac_fd(1e-5)
    norm = fd6.norm(dim=(1, 2))
    # the finite differences are trustworthy here: two step sizes agree to well below the GN gap measured below
    # (1.4e-3 on an AMD EPYC, under 1e-3 on the Intel machines of earlier rounds; the gap is >= 2.7e-2)
    assert ((fd6 - fd5).norm(dim=(1, 2)) / norm).max() < 5e-3
    rel = (jac_gn - fd6).norm(dim=(1, 2)) / norm
    assert rel.max() < 0.15, rel
    assert rel.min() > 1e-3  # and honestly not exact


def test_differentiable_grid_gradient_is_the_exact_jacobian():
    """Autograd through the integration steps = the forward-sensitivity Jacobian of the same discrete map."""
    cpab = CPAB(Tessellation((4, 4))).double()
    theta = cpab.sample(2, scale=0.25, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    grid = warp_grid(cpab, theta, (9, 11), method="fast", differentiable=True)
    assert grid.shape == (2, 9, 11, 2) and grid.requires_grad
    g = torch.randn(grid.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    (grad,) = torch.autograd.grad((grid * g).sum(), theta)
    pts = to_unit(identity_grid((9, 11), dtype=torch.float64)).reshape(1, -1, 2)
    y, J, _ = cpab.transform(pts, theta.detach(), method="fast", return_jacobian=True)
    torch.testing.assert_close(grid.detach(), (2 * y - 1).view(2, 9, 11, 2), rtol=0, atol=1e-14)
    expected = 2 * torch.einsum("tnid,tni->td", J, g.view(2, -1, 2))  # grid = 2 T - 1
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    # the default stays CPABMM's: no graph, same values
    plain = warp_grid(cpab, theta, (9, 11), method="fast")
    assert not plain.requires_grad and torch.equal(plain, grid.detach())


def test_keypoints_to_grid_chain_against_finite_differences():
    """The chain CPABMotion runs with kp_gradient=implicit, in float64: keypoints -> implicit LM fit (defaults:
    lam 1e-4, 3 iterations) -> differentiable dense grid; one directional derivative of a grid loss w.r.t. the
    source keypoints against finite differences of the whole forward (stable to 1e-8 across eps 1e-5..1e-7).
    Gauss-Newton drops the curvature term (cpabanim/cpab/implicit.py), so it is approximate: measured 12.16 vs
    9.92 (23 % high) on these inconsistent keypoints (noise 0.03), 10 % at noise 0.01, and the same with a
    converged 12-iteration fit, so the gap is Gauss-Newton's, not the 3 iterations'."""
    cpab = CPAB(Tessellation((4, 4))).double()
    gen = torch.Generator().manual_seed(21)
    p = _points_away_from_edges(2, 5, 4, seed=22, margin=0.1)
    q = p + 0.03 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, 12, 12, 2, generator=gen, dtype=torch.float64)
    direction = torch.randn(q.shape, generator=gen, dtype=torch.float64)

    def loss(targets):
        theta = fit_lm_implicit(cpab, p, targets, method="fast")
        return (warp_grid(cpab, theta, (12, 12), method="fast", differentiable=True) * weights).sum()

    qg = q.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(qg), qg)
    analytic = (grad * direction).sum()
    eps = 1e-6
    fd = (loss(q + eps * direction) - loss(q - eps * direction)) / (2 * eps)
    assert torch.sign(analytic) == torch.sign(fd)
    assert abs(analytic - fd) <= 0.3 * abs(fd), (analytic, fd)
