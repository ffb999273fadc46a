"""Tessellation: dimensions, constraints, orthonormal basis, basis projector vs libcpab, prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpabanim.cpab import Tessellation, Tessellation1D


@pytest.mark.parametrize(
    "nc, zero_boundary, volume_preservation, d",
    [
        ((3, 3), False, False, 34),
        ((4, 4), False, False, 58),
        ((5, 5), False, False, 90),
        ((6, 6), False, False, 130),
        ((4, 6), False, False, 86),
        ((4, 4), True, False, 62),
        ((6, 6), True, False, 142),
        ((4, 4), False, True, 15),
    ],
)
def test_dimension_table(nc, zero_boundary, volume_preservation, d):
    tess = Tessellation(nc, zero_boundary=zero_boundary, volume_preservation=volume_preservation)
    assert tess.d == d
    assert tess.nC == 4 * nc[0] * nc[1] and tess.D == 6 * tess.nC
    if not zero_boundary and not volume_preservation:  # closed form (docs/cpab.md)
        nx, ny = nc
        assert d == 2 * ((nx + 1) * (ny + 1) + nx * ny) - 4 * (nx + ny - 2)


@pytest.mark.parametrize("nc", [(4, 4), (6, 6)])
def test_basis_is_orthonormal_null_space(nc):
    tess = Tessellation(nc)
    assert np.abs(tess.L @ tess.B).max() <= 1e-12
    assert np.abs(tess.B.T @ tess.B - np.eye(tess.d)).max() <= 1e-12
    # rows: continuity (4 per shared edge) + valid-outside (8 per adjacent boundary pair), docs/cpab.md
    nx, ny = nc
    shared_edges = 4 * nx * ny + (nx - 1) * ny + nx * (ny - 1)
    assert tess.L.shape == (4 * shared_edges + 8 * ((nx - 1) + (ny - 1)), tess.D)


@pytest.mark.parametrize("nc, zero_boundary", [((4, 4), False), ((6, 6), False), ((4, 4), True)])
def test_projector_equals_libcpab(nc, zero_boundary):
    from libcpab import Cpab

    lib = Cpab(list(nc), device="cpu", zero_boundary=zero_boundary)
    B_lib = np.asarray(lib.params.basis, dtype=np.float64)
    tess = Tessellation(nc, zero_boundary=zero_boundary)
    assert B_lib.shape == tess.B.shape
    assert np.abs(tess.projector() - B_lib @ B_lib.T).max() <= 1e-10


def test_1d_tessellation():
    tess = Tessellation1D(5)
    assert tess.d == 6 and tess.nC == 5
    assert Tessellation1D(5, zero_boundary=True).d == 4
    assert np.abs(tess.L @ tess.B).max() <= 1e-12


def test_prior_covariance_and_samples():
    tess = Tessellation((4, 4))
    cov = tess.prior_covariance(length_scale=0.1, variance=1.0)
    assert cov.shape == (58, 58)
    assert np.allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    theta = tess.sample(4000, generator=torch.Generator().manual_seed(1))
    emp = np.cov(theta.numpy().T)
    assert np.abs(emp - cov).max() / np.abs(cov).max() < 0.1
