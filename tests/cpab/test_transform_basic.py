"""CPAB module basics: identity, inverse, warp grid, Adam fit."""

from __future__ import annotations

import pytest
import torch

from cpabanim.cpab import CPAB, Tessellation, identity_grid


@pytest.fixture(scope="module")
def cpab44():
    return CPAB(Tessellation((4, 4))).double()


def test_identity(cpab44):
    p = torch.rand(3, 50, 2, dtype=torch.float64) * 1.4 - 0.2
    assert torch.equal(cpab44.transform(p, torch.zeros(3, 58, dtype=torch.float64)), p)
    near = cpab44.transform(p, torch.full((3, 58), 1e-6, dtype=torch.float64))
    assert (near - p).abs().max() <= 1e-5


def test_inverse_on_dense_grid(cpab44):
    theta = cpab44.sample(8, scale=0.25, generator=torch.Generator().manual_seed(3))
    grid = (identity_grid((40, 40), dtype=torch.float64).reshape(1, -1, 2) + 1) / 2
    y = cpab44.transform(grid, theta)
    assert (y - grid).abs().mean() > 0.03  # the transforms move points
    back = cpab44.transform(y, -theta)
    assert (back - grid).abs().max() < 1e-4


def test_shapes_dtype_and_module_to():
    cpab = CPAB(Tessellation((4, 4)))
    assert cpab.B.dtype == torch.float64 and cpab.dim == 58  # exact basis; computations use theta's dtype
    theta = cpab.sample(2, scale=0.25).float()
    A = cpab.theta_to_A(theta)
    assert A.shape == (2, 64, 2, 3)
    pts = torch.rand(2, 7, 2)
    assert cpab.velocity(pts, theta).shape == (2, 7, 2)
    assert cpab.transform(pts, theta).dtype == torch.float32
    assert cpab.float().B.dtype == torch.float32


def test_warp_grid_matches_transform(cpab44):
    theta = cpab44.sample(2, scale=0.25)
    grid = cpab44.warp_grid(theta, size=(5, 7))
    assert grid.shape == (2, 5, 7, 2)
    u = identity_grid((5, 7), dtype=torch.float64)
    expected = 2 * cpab44.transform(((u + 1) / 2).reshape(1, -1, 2), theta) - 1
    assert torch.allclose(grid.reshape(2, -1, 2), expected)
    assert torch.allclose(cpab44.warp_grid(torch.zeros(1, 58, dtype=torch.float64), (5, 7))[0], u, atol=1e-15)
    assert not grid.requires_grad


def test_grid_sample_convention(cpab44):
    """A pure translation field moves image content as grid_sample(align_corners=True) expects."""
    # theta with constant velocity (0.1, 0): project the raw A onto the basis
    A = torch.zeros(64, 2, 3, dtype=torch.float64)
    A[:, 0, 2] = 0.1
    theta = (A.reshape(1, -1) @ cpab44.B).reshape(1, -1)
    grid = cpab44.warp_grid(theta, (9, 9))
    assert torch.allclose(
        grid[..., 0] - identity_grid((9, 9), dtype=torch.float64)[..., 0], torch.tensor(0.2, dtype=torch.float64)
    )


def test_fit_adam_runs_paper_settings(cpab44):
    theta_true = cpab44.sample(4, scale=0.25, generator=torch.Generator().manual_seed(5))
    p = 0.1 + 0.8 * torch.rand(4, 5, 2, dtype=torch.float64)
    q = cpab44.transform(p, theta_true)
    theta, res = cpab44.fit(p, q, method="adam", iters=100, return_residual=True)
    assert theta.shape == (4, 58) and not theta.requires_grad
    assert res.shape == (4,)
    assert res.max() < 0.3 * (q - p).norm(dim=-1).mean()


def test_basis_is_rebuilt_not_saved_and_an_old_saved_basis_is_ignored():
    holder = torch.nn.Module()
    holder.partial = CPAB(Tessellation((4, 4)))
    assert "partial.B" not in holder.state_dict()  # rebuilt from the tessellation, never saved
    built = holder.partial.B.clone()
    rotation, _ = torch.linalg.qr(torch.randn(58, 58, dtype=torch.float64))
    older = {"partial.B": built @ rotation}  # what checkpoints written before this change carry
    holder.load_state_dict(older, strict=True)  # loads: the stale basis is neither used nor refused
    assert torch.equal(holder.partial.B, built)


def test_the_integrate_submodule_is_not_shadowed():
    import types

    import cpabanim.cpab
    from cpabanim.cpab import integrate, integrate_steps

    assert isinstance(integrate, types.ModuleType) and integrate.__name__ == "cpabanim.cpab.integrate"
    assert cpabanim.cpab.integrate is integrate and integrate.integrate_steps is integrate_steps
