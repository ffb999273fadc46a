"""Gradients: autograd gradcheck through the discrete scheme, exact forward-sensitivity Jacobian == autograd."""

from __future__ import annotations

import pytest
import torch

from cpabanim.cpab import CPAB, Tessellation


@pytest.fixture(scope="module")
def cpab44():
    return CPAB(Tessellation((4, 4))).double()


def _points_away_from_edges(n: int, seed: int) -> torch.Tensor:
    """(n, 2) points >= 0.05 (in square units) from every square side and diagonal of a 4x4 tessellation."""
    gen = torch.Generator().manual_seed(seed)
    pts = []
    while len(pts) < n:
        p = torch.rand(2, generator=gen, dtype=torch.float64) * 0.8 + 0.1
        u, w = (p * 4) % 1
        if min(u, w, 1 - u, 1 - w, abs(u - w), abs(1 - u - w)) > 0.05:
            pts.append(p)
    return torch.stack(pts)


def test_gradcheck_theta_and_points(cpab44):
    theta = (cpab44.sample(2, scale=0.1, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    pts = _points_away_from_edges(5, seed=2).expand(2, 5, 2).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(cpab44.transform, (pts, theta), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("nc", [(4, 4), (6, 6)])
def test_exact_jacobian_equals_autograd(nc):
    cpab = CPAB(Tessellation(nc)).double()
    theta = cpab.sample(3, scale=0.25, generator=torch.Generator().manual_seed(3))
    pts = torch.rand(3, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y, J, Jx = cpab.transform(pts, theta, return_jacobian=True)
    assert torch.equal(y, cpab.transform(pts, theta))
    J_auto = torch.autograd.functional.jacobian(lambda th: cpab.transform(pts, th), theta)  # (3,6,2,3,d)
    J_auto = torch.stack([J_auto[t, :, :, t] for t in range(3)])
    assert (J - J_auto).abs().max() <= 1e-12 * max(1.0, J_auto.abs().max().item())
    Jx_auto = torch.autograd.functional.jacobian(lambda p: cpab.transform(p, theta), pts)  # (3,6,2,3,6,2)
    Jx_auto = torch.stack([torch.stack([Jx_auto[t, k, :, t, k] for k in range(6)]) for t in range(3)])
    assert (Jx - Jx_auto).abs().max() <= 1e-12
    # and both agree with central finite differences (relative), away from step-cell switches
    eps = 1e-6
    k = 5
    e = torch.zeros_like(theta)
    e[:, k] = eps
    fd = (cpab.transform(pts, theta + e) - cpab.transform(pts, theta - e)) / (2 * eps)
    assert ((fd - J[..., k]).abs().max() / J[..., k].abs().max()) <= 1e-5


def test_velocity_gradient_is_basis(cpab44):
    theta = torch.zeros(1, 58, dtype=torch.float64, requires_grad=True)
    A = cpab44.theta_to_A(theta)
    (g,) = torch.autograd.grad(A.sum(), theta)
    assert torch.allclose(g[0], cpab44.B.sum(0))
