"""Type-II tessellations of [0,1]^2 (and 1-D tessellations of [0,1]), their constraints and null-space basis.

The construction is libcpab's (cpab.md §1.2–1.6): 4 triangles per square ordered (top, right, bottom, left),
cell index ``4*(j + i*nx) + t``; continuity (C1), "valid outside" (C2, iff not zero_boundary), zero boundary
(C3) and volume preservation (C4) rows stacked in ``L``; ``B`` = orthonormal null-space basis of ``L`` from a
float64 numpy SVD (singular values <= 1e-6). ``B`` is unique only up to a rotation: only ``B B^T`` is
comparable between implementations, and theta means nothing without its ``B`` (map with ``B_ours^T B_other``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

SVD_TOLERANCE = 1e-6


def null_space(L: np.ndarray, tol: float = SVD_TOLERANCE) -> np.ndarray:
    """Orthonormal basis (n, d) of {x : L x = 0}, libcpab's ``null``: rows of V^T with sigma <= tol, padded."""
    _, s, vh = np.linalg.svd(L, full_matrices=True)
    rank = int((s > tol).sum())
    return np.ascontiguousarray(vh[rank:].T)


def _square_triangles(nx: int, ny: int) -> np.ndarray:
    """(4*nx*ny, 3, 2) triangle vertices (centre, corner, corner) in cell-index order."""
    hx, hy = 1.0 / nx, 1.0 / ny
    tris = np.zeros((4 * nx * ny, 3, 2))
    for i in range(ny):
        for j in range(nx):
            ul, ur = (j * hx, i * hy), ((j + 1) * hx, i * hy)
            ll, lr = (j * hx, (i + 1) * hy), ((j + 1) * hx, (i + 1) * hy)
            c = ((j + 0.5) * hx, (i + 0.5) * hy)
            base = 4 * (j + i * nx)
            tris[base + 0] = (c, ul, ur)  # top
            tris[base + 1] = (c, ur, lr)  # right
            tris[base + 2] = (c, lr, ll)  # bottom
            tris[base + 3] = (c, ll, ul)  # left
    return tris


def _equal_rows(c1: int, c2: int, u: Sequence[float], n_cells: int) -> list[np.ndarray]:
    """Rows of (A_c1 - A_c2) u~ = 0 for both output rows."""
    rows = []
    ut = np.array([u[0], u[1], 1.0])
    for r in range(2):
        row = np.zeros(6 * n_cells)
        row[6 * c1 + 3 * r : 6 * c1 + 3 * r + 3] = ut
        row[6 * c2 + 3 * r : 6 * c2 + 3 * r + 3] = -ut
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=32)
def _build_2d(nx: int, ny: int, zero_boundary: bool, volume_preservation: bool):
    tris = _square_triangles(nx, ny)
    n_cells = len(tris)
    rows: list[np.ndarray] = []
    # (C1) continuity on every shared edge: map each edge (pair of rounded vertex keys) to its triangles.
    keyed = [[tuple(np.round(v * 4 * nx * ny).astype(np.int64)) for v in tri] for tri in tris]
    edges: dict[tuple, list[int]] = {}
    for c, keys in enumerate(keyed):
        for a in range(3):
            for b in range(a + 1, 3):
                edges.setdefault(tuple(sorted((keys[a], keys[b]))), []).append(c)
    for c, keys in enumerate(keyed):  # iterate in cell order for a reproducible row order
        for a in range(3):
            for b in range(a + 1, 3):
                owners = edges[tuple(sorted((keys[a], keys[b])))]
                if len(owners) == 2 and owners[0] == c:
                    for v in (tris[c][a], tris[c][b]):
                        rows += _equal_rows(owners[0], owners[1], v, n_cells)
    if not zero_boundary:
        # (C2) adjacent boundary triangles agree on the whole line through their shared vertex normal to the side,
        # where the index function switches between their outside regions (v continuous on all of R^2).
        hx, hy = 1.0 / nx, 1.0 / ny
        for i in range(ny - 1):
            u = (0.0, (i + 1) * hy)
            c1, c2 = 4 * (0 + i * nx) + 3, 4 * (0 + (i + 1) * nx) + 3
            rows += _equal_rows(c1, c2, u, n_cells) + _equal_rows(c1, c2, (u[0] - 10, u[1]), n_cells)
            u = (1.0, (i + 1) * hy)
            c1, c2 = 4 * (nx - 1 + i * nx) + 1, 4 * (nx - 1 + (i + 1) * nx) + 1
            rows += _equal_rows(c1, c2, u, n_cells) + _equal_rows(c1, c2, (u[0] - 10, u[1]), n_cells)
        for j in range(nx - 1):
            u = ((j + 1) * hx, 0.0)
            c1, c2 = 4 * j + 0, 4 * (j + 1) + 0
            rows += _equal_rows(c1, c2, u, n_cells) + _equal_rows(c1, c2, (u[0], u[1] - 10), n_cells)
            u = ((j + 1) * hx, 1.0)
            c1, c2 = 4 * (j + (ny - 1) * nx) + 2, 4 * (j + 1 + (ny - 1) * nx) + 2
            rows += _equal_rows(c1, c2, u, n_cells) + _equal_rows(c1, c2, (u[0], u[1] - 10), n_cells)
    else:
        # (C3) libcpab's zero boundary: the normal velocity component vanishes at boundary vertices.
        for c, tri in enumerate(tris):
            for v in tri:
                ut = np.array([v[0], v[1], 1.0])
                for r, coord in ((0, v[0]), (1, v[1])):
                    if np.isclose(coord, 0.0) or np.isclose(coord, 1.0):
                        row = np.zeros(6 * n_cells)
                        row[6 * c + 3 * r : 6 * c + 3 * r + 3] = ut
                        rows.append(row)
    if volume_preservation:
        for c in range(n_cells):  # (C4) tr M_c = 0
            row = np.zeros(6 * n_cells)
            row[6 * c + 0] = 1.0
            row[6 * c + 4] = 1.0
            rows.append(row)
    L = np.stack(rows)
    B = null_space(L)
    B.setflags(write=False)
    L.setflags(write=False)
    tris.setflags(write=False)
    return tris, L, B


@functools.lru_cache(maxsize=32)
def _build_1d(nc: int, zero_boundary: bool):
    edges = np.linspace(0.0, 1.0, nc + 1)
    rows = []
    for k in range(1, nc):  # continuity at interior vertices: a_c x + b_c = a_{c+1} x + b_{c+1}
        row = np.zeros(2 * nc)
        row[2 * (k - 1) : 2 * k] = (edges[k], 1.0)
        row[2 * k : 2 * k + 2] = (-edges[k], -1.0)
        rows.append(row)
    if zero_boundary:
        for c, x in ((0, 0.0), (nc - 1, 1.0)):
            row = np.zeros(2 * nc)
            row[2 * c : 2 * c + 2] = (x, 1.0)
            rows.append(row)
    L = np.stack(rows) if rows else np.zeros((0, 2 * nc))
    B = null_space(L) if len(rows) else np.eye(2 * nc)
    B.setflags(write=False)
    return edges, L, B


class _TessellationBase:
    ndim: int
    nc: tuple[int, ...]
    nC: int
    L: np.ndarray
    B: np.ndarray

    @property
    def D(self) -> int:
        """Number of raw affine parameters, nC * ndim * (ndim + 1)."""
        return self.B.shape[0]

    @property
    def d(self) -> int:
        """Dimension of theta (of the CPA velocity space)."""
        return self.B.shape[1]

    @property
    def basis(self) -> np.ndarray:
        """(D, d) float64 orthonormal null-space basis (read-only)."""
        return self.B

    def projector(self) -> np.ndarray:
        """(D, D) B B^T: the basis-independent object to compare between implementations."""
        return self.B @ self.B.T

    def prior_covariance_A(self, length_scale: float = 0.1, variance: float = 1.0) -> np.ndarray:
        """(D, D) squared-exponential covariance of vec(A) over cell centroids: K (x) I_p (cpab.md §1.8)."""
        cen = self.centroids()
        d2 = ((cen[:, None, :] - cen[None, :, :]) ** 2).sum(-1)
        K = variance * np.exp(-d2 / (2.0 * length_scale**2))
        return np.kron(K, np.eye(self.D // self.nC))

    def prior_covariance(self, length_scale: float = 0.1, variance: float = 1.0) -> np.ndarray:
        """(d, d) prior covariance of theta, Sigma_theta = B^T Sigma_A B."""
        return self.B.T @ self.prior_covariance_A(length_scale, variance) @ self.B

    def sample(
        self, n: int, length_scale: float = 0.1, variance: float = 1.0, scale: float = 1.0, generator=None
    ) -> torch.Tensor:
        """(n, d) float64 samples theta = scale * chol(Sigma_theta) z, z ~ N(0, I)."""
        chol = _prior_cholesky(self, length_scale, variance)
        z = torch.randn(n, self.d, dtype=torch.float64, generator=generator)
        return scale * z @ torch.from_numpy(chol).T

    def centroids(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@functools.lru_cache(maxsize=32)
def _prior_cholesky_cached(key, length_scale: float, variance: float, tess) -> np.ndarray:
    cov = tess.prior_covariance(length_scale, variance)
    return np.linalg.cholesky(cov + 1e-10 * np.trace(cov) / len(cov) * np.eye(len(cov)))


def _prior_cholesky(tess: _TessellationBase, length_scale: float, variance: float) -> np.ndarray:
    return _prior_cholesky_cached(tess._key, float(length_scale), float(variance), tess)


class Tessellation(_TessellationBase):
    """Type-II tessellation of [0,1]^2 with ``nc = (nx, ny)`` squares of 4 triangles each.

    Attributes: ``nc``, ``nC`` (number of triangles), ``D`` (= 6 nC), ``d`` (dim theta), ``L`` (constraints),
    ``B`` (float64 (D, d) orthonormal basis), ``triangles`` ((nC, 3, 2) vertices). d = 4n^2 - 4n + 10 for n x n
    without zero boundary (58 for 4x4, 130 for 6x6), 62 for 4x4 with zero boundary, 15 for 4x4 volume preserving.
    """

    ndim = 2

    def __init__(self, nc: Sequence[int] = (4, 4), zero_boundary: bool = False, volume_preservation: bool = False):
        if len(nc) != 2 or min(nc) < 1:
            raise ValueError(f"nc must be two positive integers (nx, ny), got {nc!r}")
        self.nc = (int(nc[0]), int(nc[1]))
        self.nx, self.ny = self.nc
        self.zero_boundary = bool(zero_boundary)
        self.volume_preservation = bool(volume_preservation)
        self.nC = 4 * self.nx * self.ny
        self.triangles, self.L, self.B = _build_2d(self.nx, self.ny, self.zero_boundary, self.volume_preservation)
        self._key = ("2d", self.nc, self.zero_boundary, self.volume_preservation)

    def centroids(self) -> np.ndarray:
        """(nC, 2) triangle centroids."""
        return self.triangles.mean(axis=1)

    def find_cell(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 2) -> (...) int64 cell index (libcpab's findcellidx, branch-free)."""
        from cpabanim.cpab.cellindex import find_cell

        return find_cell(points, self.nx, self.ny)

    def __repr__(self) -> str:
        return (
            f"Tessellation(nc={self.nc}, zero_boundary={self.zero_boundary}, "
            f"volume_preservation={self.volume_preservation}, d={self.d})"
        )


class Tessellation1D(_TessellationBase):
    """1-D tessellation of [0,1] into ``nc`` equal intervals; v(x) = a_c x + b_c, continuous (d = nc + 1)."""

    ndim = 1

    def __init__(self, nc: int | Sequence[int] = 5, zero_boundary: bool = False):
        n = int(nc[0]) if isinstance(nc, (tuple, list)) else int(nc)
        if n < 1:
            raise ValueError(f"nc must be a positive integer, got {nc!r}")
        self.nc = (n,)
        self.zero_boundary = bool(zero_boundary)
        self.volume_preservation = False
        self.nC = n
        self.edges, self.L, self.B = _build_1d(n, self.zero_boundary)
        self._key = ("1d", self.nc, self.zero_boundary)

    def centroids(self) -> np.ndarray:
        """(nC, 1) interval centres."""
        return ((self.edges[:-1] + self.edges[1:]) / 2)[:, None]

    def find_cell(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 1) -> (...) int64 interval index, clamped to [0, nc-1] (outside points use the end intervals)."""
        from cpabanim.cpab.cellindex import find_cell_1d

        return find_cell_1d(points, self.nc[0])

    def __repr__(self) -> str:
        return f"Tessellation1D(nc={self.nc[0]}, zero_boundary={self.zero_boundary}, d={self.d})"
