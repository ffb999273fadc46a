"""Type-II tessellations of [0,1]^2 (and 1-D tessellations of [0,1]), their constraints and null-space basis.

The construction is libcpab's (docs/cpab.md): 4 triangles per square ordered (top, right, bottom, left), cell
index ``4*(j + i*nx) + t``; continuity (C1), "valid outside" (C2, iff not zero_boundary), zero boundary (C3) and
volume preservation (C4) rows stacked in ``L`` **in libcpab's order, with libcpab's vertex values**; ``B`` =
orthonormal null-space basis of ``L`` from scipy's SVD (singular values <= 1e-6), as libcpab computes it.

A null-space basis is unique only up to a rotation, and Adam (the paper's keypoint fit) is not rotation
invariant, so the rows are built in the same order from the same floats: ``B`` is then libcpab's basis itself
(tests/cpab/test_reference_libs.py checks L and B against libcpab 0.1.3), and a CPABMM theta means the same
here. The LM fit is rotation invariant (its ridge is ||theta||^2 = ||B theta||^2) and does not care.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

SVD_TOLERANCE = 1e-6


def null_space(L: np.ndarray, tol: float = SVD_TOLERANCE) -> np.ndarray:
    """Orthonormal basis (n, d) of {x : L x = 0}, as libcpab computes it: the rows of V^T of scipy's full SVD
    whose singular value is <= tol, plus the rows beyond the number of singular values.

    The null space has repeated zero singular values, so its basis is whatever rotation LAPACK returns: the same
    routine (scipy's gesdd) on the same ``L`` (rows in libcpab's order, docs/cpab.md) gives libcpab's basis.
    """
    import scipy.linalg

    _, s, vh = scipy.linalg.svd(L)
    null = np.concatenate([s <= tol, np.ones(vh.shape[0] - s.shape[0], dtype=bool)])
    return np.ascontiguousarray(vh[null].T)


def _square_triangles(nx: int, ny: int) -> np.ndarray:
    """(4*nx*ny, 3, 3) homogeneous triangle vertices (centre, corner, corner; each (x, y, 1)) in cell-index order.

    Coordinates come from ``np.linspace`` and centres are midpoints, as libcpab computes them, so that the
    constraint rows (and hence the SVD basis) are bit-identical to libcpab's.
    """
    xs, ys = np.linspace(0.0, 1.0, nx + 1), np.linspace(0.0, 1.0, ny + 1)
    tris = np.zeros((4 * nx * ny, 3, 3))
    for i in range(ny):
        for j in range(nx):
            ul, ur = (xs[j], ys[i], 1.0), (xs[j + 1], ys[i], 1.0)
            ll, lr = (xs[j], ys[i + 1], 1.0), (xs[j + 1], ys[i + 1], 1.0)
            c = ((xs[j] + xs[j + 1]) / 2, (ys[i] + ys[i + 1]) / 2, 1.0)
            base = 4 * (j + i * nx)
            tris[base + 0] = (c, ul, ur)  # top
            tris[base + 1] = (c, ur, lr)  # right
            tris[base + 2] = (c, lr, ll)  # bottom
            tris[base + 3] = (c, ll, ul)  # left
    return tris


def _vertex_set(tri: np.ndarray) -> set[tuple[float, ...]]:
    """The vertices of one triangle as a set of (x, y, 1) tuples."""
    return {tuple(v) for v in tri.tolist()}


def _shared(tri_a: np.ndarray, tri_b: np.ndarray) -> list[tuple[float, ...]]:
    """Vertices common to two triangles, in libcpab's order: the iteration order of the Python set built by
    intersecting a's vertex set with b's vertices taken in b's order (the order fixes the row order of L)."""
    return list(_vertex_set(tri_a).intersection(tuple(v) for v in tri_b.tolist()))


def _continuity_pairs(tris: np.ndarray) -> list[tuple[int, int, list[tuple[float, ...]]]]:
    """(C1) every pair of triangles sharing an edge, once, first seen in (i, j) row-major order: (i, j, 2 vertices)."""
    pairs: list[tuple[int, int, list]] = []
    seen: set[tuple[int, int]] = set()
    for i in range(len(tris)):
        for j in range(len(tris)):
            if i == j or (j, i) in seen:
                continue
            common = _shared(tris[i], tris[j])
            if len(common) == 2:
                pairs.append((i, j, common))
                seen.add((i, j))
    return pairs


def _outside_pairs(tris: np.ndarray, nx: int, ny: int) -> list[tuple[int, int, list[tuple[float, ...]]]]:
    """(C2) adjacent boundary triangles facing the same side (left column's left triangles, right column's right,
    top row's top, bottom row's bottom): they must agree on the line through their shared vertex normal to the
    side, where the cell index switches between their outside regions. The line is given by the shared vertex
    and an auxiliary vertex 10 units away along it (x - 10 for the left/right sides, y - 10 for top/bottom)."""

    def position(c: int) -> tuple[int, int, int]:  # (column, row, triangle) of cell index c
        return (c // 4) % nx, (c // 4) // nx, c % 4

    pairs: list[tuple[int, int, list]] = []
    seen: set[tuple[int, int]] = set()
    for i in range(len(tris)):
        for j in range(len(tris)):
            (ci, ri, ti), (cj, rj, tj) = position(i), position(j)
            vertical = (
                ti == tj and ci == cj and abs(ri - rj) == 1 and ((ci == 0 and ti == 3) or (ci == nx - 1 and ti == 1))
            )
            horizontal = (
                ti == tj and ri == rj and abs(ci - cj) == 1 and ((ri == 0 and ti == 0) or (ri == ny - 1 and ti == 2))
            )
            if not (vertical or horizontal) or (j, i) in seen:
                continue
            common = _shared(tris[i], tris[j])
            if len(common) != 1:
                continue
            aux = list(common[0])
            aux[0 if vertical else 1] -= 10.0
            pairs.append((i, j, [common[0], tuple(aux)]))
            seen.add((i, j))
    return pairs


def _equality_rows(c1: int, c2: int, vertices, n_cells: int, ndim: int = 2) -> list[np.ndarray]:
    """Rows of (A_c1 - A_c2) v~ = 0: for each vertex v~ (homogeneous), one row per output coordinate."""
    width = ndim * (ndim + 1)
    rows = []
    for v in vertices:
        for k in range(ndim):
            row = np.zeros(width * n_cells)
            row[width * c1 + k * (ndim + 1) : width * c1 + (k + 1) * (ndim + 1)] = v
            row[width * c2 + k * (ndim + 1) : width * c2 + (k + 1) * (ndim + 1)] = np.negative(v)
            rows.append(row)
    return rows


@functools.lru_cache(maxsize=32)
def _build_2d(nx: int, ny: int, zero_boundary: bool, volume_preservation: bool):
    """Constraint matrix L and basis B with libcpab's rows in libcpab's order: continuity pairs, then (valid
    outside) the auxiliary boundary pairs, then zero-boundary rows, then zero-trace rows."""
    tris = _square_triangles(nx, ny)
    n_cells = len(tris)
    pairs = _continuity_pairs(tris)
    if not zero_boundary:
        pairs += _outside_pairs(tris, nx, ny)
    rows: list[np.ndarray] = []
    for c1, c2, vertices in pairs:
        rows += _equality_rows(c1, c2, vertices, n_cells)
    if zero_boundary:
        # (C3) libcpab's zero boundary: the velocity component normal to the side vanishes at boundary vertices.
        for c, tri in enumerate(tris):
            for v in tri:
                for r, coord in ((0, v[0]), (1, v[1])):
                    if coord == 0.0 or coord == 1.0:
                        row = np.zeros(6 * n_cells)
                        row[6 * c + 3 * r : 6 * c + 3 * r + 3] = v
                        rows.append(row)
    if volume_preservation:
        for c in range(n_cells):  # (C4) tr A_c = 0
            row = np.zeros(6 * n_cells)
            row[6 * c + 0] = 1.0
            row[6 * c + 4] = 1.0
            rows.append(row)
    L = np.stack(rows)
    B = null_space(L)
    tris = np.ascontiguousarray(tris[..., :2])  # (nC, 3, 2) (x, y) vertices for the rest of the package
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
        """(D, D) squared-exponential covariance of vec(A) over cell centroids: K (x) I_p (docs/cpab.md)."""
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
