"""CPAB transformations in pure PyTorch (CPU/CUDA, float32/float64, batched, differentiable; docs/cpab.md).

    tess = Tessellation(nc=(4, 4))                 # d = 58 (type-II, valid outside, no zero boundary)
    cpab = CPAB(tess)                              # nn.Module; .to(device, dtype)
    y = cpab.transform(points, theta)              # (T, N, 2) in [0,1]^2, libcpab's 50-step scheme
    theta = cpab.fit(p, q)                         # fast LM fit; cpab.fit(p, q, method="adam") = paper's Eq. 6
    theta = fit_lm_implicit(cpab, p, q)            # the same fit, differentiable w.r.t. p and q (implicit fn thm)
    grid = cpab.warp_grid(theta, (64, 64))         # (T, 64, 64, 2) for grid_sample(align_corners=True)

Contract: a transformation is ``theta`` (T, d) in the tessellation's null-space basis; points are (x, y) in
[0, 1]^2 (``to_unit``/``from_unit`` convert grid_sample's [-1, 1]); everything is batched over T, differentiable
w.r.t. theta and the points, computed in theta's dtype on theta's device, and the transform and warp paths make
no host synchronisation. Nothing here knows about images, networks or the params: the motion model
(``cpabanim.models.cpab_motion``) builds on it.

    tessellation  type-II tessellations, their constraints and null-space basis
    cellindex     the cell of a point (branch-free)
    expm          matrix exponentials of the cells' affine maps
    integrate     integration of the velocity field: ``integrate_steps`` (libcpab's scheme), ``integrate_freifeld``,
                  ``integrate_rk4`` (reference), ``velocity``
    transformer   ``CPAB``, the nn.Module tying them together (transform, Jacobians, dense grids, fits)
    fit           keypoints -> theta (``fit_lm``, ``fit_adam``, ``fit_midpoint``); ``implicit``: the LM fit with
                  gradients to the keypoints
    warp          identity grids and CPAB sampling grids
    compat        libcpab / difw point layouts and theta mapping between bases
"""

from cpabanim.cpab.cellindex import find_cell, find_cell_1d
from cpabanim.cpab.compat import from_libcpab_points, map_theta, to_libcpab_points
from cpabanim.cpab.expm import affine_step_tables, expm_taylor
from cpabanim.cpab.fit import fit_adam, fit_lm, fit_midpoint, keypoint_residual
from cpabanim.cpab.implicit import ImplicitLMFit, fit_lm_implicit
from cpabanim.cpab.integrate import integrate_freifeld, integrate_rk4, integrate_steps, velocity
from cpabanim.cpab.tessellation import Tessellation, Tessellation1D
from cpabanim.cpab.transformer import CPAB
from cpabanim.cpab.warp import from_unit, identity_grid, to_unit, warp_grid

__all__ = [
    "CPAB",
    "Tessellation",
    "Tessellation1D",
    "find_cell",
    "find_cell_1d",
    "expm_taylor",
    "affine_step_tables",
    "integrate_steps",
    "integrate_rk4",
    "integrate_freifeld",
    "velocity",
    "fit_adam",
    "fit_lm",
    "fit_lm_implicit",
    "ImplicitLMFit",
    "fit_midpoint",
    "keypoint_residual",
    "identity_grid",
    "warp_grid",
    "to_unit",
    "from_unit",
    "map_theta",
    "to_libcpab_points",
    "from_libcpab_points",
]
