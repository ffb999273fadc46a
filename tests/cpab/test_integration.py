"""Velocity continuity, matrix exponentials, accuracy and order of the fixed-step scheme, diffeomorphism, group."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from cpabanim.cpab import CPAB, Tessellation, identity_grid
from cpabanim.cpab.expm import affine_step_tables, augment, expm_affine_closed, expm_taylor


@pytest.fixture(scope="module")
def cpab44():
    return CPAB(Tessellation((4, 4))).double()


def _grid(n: int) -> torch.Tensor:
    return ((identity_grid((n, n), dtype=torch.float64) + 1) / 2).reshape(1, -1, 2)


@pytest.mark.parametrize("nc", [(4, 4), (6, 6)])
def test_velocity_continuous_across_shared_edges(nc):
    tess = Tessellation(nc)
    cpab = CPAB(tess).double()
    A = cpab.theta_to_A(torch.randn(1, cpab.dim, dtype=torch.float64))[0]  # (nC, 2, 3)
    keys = [[tuple(np.round(v * 1000).astype(int)) for v in tri] for tri in tess.triangles]
    owners: dict = {}
    for c, k in enumerate(keys):
        for a, b in ((0, 1), (0, 2), (1, 2)):
            owners.setdefault(tuple(sorted((k[a], k[b]))), []).append((c, a, b))
    s = torch.linspace(0, 1, 7, dtype=torch.float64)
    worst, shared = 0.0, 0
    for pair in owners.values():
        if len(pair) != 2:
            continue
        shared += 1
        (c1, a, b), (c2, _, _) = pair
        u1, u2 = (torch.tensor(tess.triangles[c1][i]) for i in (a, b))
        pts = u1[None] + s[:, None] * (u2 - u1)[None]
        pts_h = torch.cat([pts, torch.ones(7, 1, dtype=torch.float64)], 1)
        worst = max(worst, ((A[c1] - A[c2]) @ pts_h.T).abs().max().item())
    assert shared == 4 * nc[0] * nc[1] + (nc[0] - 1) * nc[1] + nc[0] * (nc[1] - 1)
    assert worst <= 1e-12


def test_velocity_continuous_across_outside_extension_lines(cpab44):
    """Outside the domain the field uses the facing boundary triangle; it stays continuous where that switches."""
    theta = torch.randn(1, 58, dtype=torch.float64)
    eps = 1e-9
    lines = []
    for k in range(1, 4):
        c = k / 4
        for far in (-0.3, -0.05, 1.05, 1.3):
            lines += [((far, c - eps), (far, c + eps)), ((c - eps, far), (c + eps, far))]
    for corner in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):  # diagonals through the corners
        for r in (0.05, 0.2):
            dx, dy = (corner[0] - 0.5) * 2 * r, (corner[1] - 0.5) * 2 * r
            base = (corner[0] + dx, corner[1] + dy)
            sx, sy = (eps, -eps) if corner[0] == corner[1] else (eps, eps)  # normal to the diagonal
            lines.append(((base[0] + sx, base[1] + sy), (base[0] - sx, base[1] - sy)))
    a = torch.tensor([p for p, _ in lines], dtype=torch.float64)
    b = torch.tensor([q for _, q in lines], dtype=torch.float64)
    va, vb = cpab44.velocity(a, theta), cpab44.velocity(b, theta)
    assert (cpab44.tess.find_cell(a) != cpab44.tess.find_cell(b)).all()  # we really straddle a switch
    assert (va - vb).abs().max() < 1e-7


def test_expm_against_scipy():
    cases = [
        [[1, 1], [0, 1]],
        [[0, 0], [0, 0]],
        [[0, -2], [2, 0]],
        [[1, 2], [2, 4]],
        [[0, 1], [0, 0]],
        [[1e-9, 0], [0, -1e-9]],
        [[0.3, -0.7], [1.1, 0.2]],
    ]
    M = torch.tensor(cases, dtype=torch.float64)
    expected = torch.tensor(np.stack([scipy.linalg.expm(np.array(c, dtype=float)) for c in cases]))
    assert (expm_affine_closed(M) - expected).abs().max() <= 1e-11
    rel = (expm_taylor(M) - expected).abs().amax((-2, -1)) / expected.abs().amax((-2, -1))
    assert rel.max() <= 1e-9  # degree-10 truncation (<= 1.2e-11 at ||X||_1 <= 0.5) amplified by 2^s squarings
    # float32 Taylor with scaling & squaring on affine 3x3 at h <= 0.1, including large matrices
    A = torch.randn(200, 2, 3, dtype=torch.float64) * torch.logspace(-2, 1, 200, dtype=torch.float64)[:, None, None]
    for h in (0.02, 0.1):
        X = augment(A) * h
        ref = torch.tensor(np.stack([scipy.linalg.expm(x) for x in X.numpy()]))[:, :2]
        got = affine_step_tables(A.float(), h).double()
        assert ((got - ref).abs().amax((-2, -1)) / ref.abs().amax((-2, -1))).max() <= 1e-6


def test_identity_group_and_time_scaling(cpab44):
    theta = cpab44.sample(4, scale=0.5, generator=torch.Generator().manual_seed(4))
    x = torch.rand(4, 300, 2, dtype=torch.float64)
    # n steps of theta == two passes of n/2 steps of theta/2 (same step tables up to rounding)
    full = cpab44.transform(x, theta, nsteps=50)
    half = cpab44.transform(cpab44.transform(x, theta / 2, nsteps=25), theta / 2, nsteps=25)
    assert (full - half).abs().max() <= 1e-12
    rk = cpab44.transform(x, theta, method="rk4", nsteps=400)
    rk_half = cpab44.transform(
        cpab44.transform(x, theta / 2, method="rk4", nsteps=200), theta / 2, method="rk4", nsteps=200
    )
    assert (rk - rk_half).abs().max() <= 1e-12


def test_convergence_to_reference_is_second_order(cpab44):
    theta = cpab44.sample(4, scale=0.25, generator=torch.Generator().manual_seed(7))
    x = _grid(24)
    ref = cpab44.transform(x, theta, method="rk4", nsteps=1000)
    errs = {n: (cpab44.transform(x, theta, nsteps=n) - ref).abs().max().item() for n in (10, 20, 40, 50)}
    assert errs[50] <= 1e-4
    for n in (10, 20):
        assert 2.5 <= errs[n] / errs[2 * n] <= 6.0, errs  # order ~2 (cell-crossing error O(dt^2))
    assert (cpab44.transform(x, theta, method="freifeld") - ref).abs().max() <= 3e-5
    assert (cpab44.transform(x, theta, method="fast") - ref).abs().max() <= 6e-4


def test_inverse_error_order(cpab44):
    theta = cpab44.sample(8, scale=0.25, generator=torch.Generator().manual_seed(8))
    x = torch.rand(8, 1000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    err = {
        n: (cpab44.transform(cpab44.transform(x, theta, nsteps=n), -theta, nsteps=n) - x).abs().max().item()
        for n in (10, 20, 50)
    }
    assert err[50] < 1e-4
    assert 2.5 <= err[10] / err[20] <= 6.0, err


@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_positive_jacobian_determinant(cpab44, scale):
    theta = cpab44.sample(3, scale=scale, generator=torch.Generator().manual_seed(11))
    n = 97
    grid = _grid(n)
    y = cpab44.transform(grid, theta).view(3, n, n, 2)
    h = 2.0 / (n - 1) / 2  # spacing in the [0,1] domain
    dx = (y[:, 1:-1, 2:] - y[:, 1:-1, :-2]) / (2 * h)
    dy = (y[:, 2:, 1:-1] - y[:, :-2, 1:-1]) / (2 * h)
    det = dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]
    assert det.min() > 0
    # analytic per-trajectory determinant of the discrete map (det of the forward-sensitivity dT/dx), on a subset
    sub = grid.view(n, n, 2)[1:-1:6, 1:-1:6].reshape(1, -1, 2)
    _, _, Jx = cpab44.transform(sub, theta, return_jacobian=True)
    det_exact = torch.linalg.det(Jx)
    det_fd = det[:, ::6, ::6].reshape(3, -1)
    assert (det_exact > 0).all()
    assert ((det_exact - det_fd).abs() / det_exact).median() < 1e-2
