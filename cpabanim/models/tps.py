"""Thin-plate-spline motion (TPSMM's motion model: the ``motion: tps`` ablation baseline) and random TPS warps
for the equivariance loss.

Both use T(x) = A x~ + sum_j w_j U(|x - c_j|), U(r) = r^2 log(r^2 + 1e-9), on (x, y) in [-1, 1], and both are
TPSMM's exactly (docs/faithfulness.md): the keypoint TPS solves TPSMM's regularised system, the random TPS draws
one radial weight per control point shared by x and y.
"""

from __future__ import annotations

import torch


def _radial(points: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """points (..., P, 2), controls (..., C, 2) -> U(r) (..., P, C)."""
    dist2 = ((points[..., :, None, :] - controls[..., None, :, :]) ** 2).sum(-1)
    return dist2 * torch.log(dist2 + 1e-9)


def tps_apply(
    points: torch.Tensor, controls: torch.Tensor, affine: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Evaluate a TPS. points (T, P, 2), controls (T, C, 2), affine (T, 2, 3), weights (T, C, 2) -> (T, P, 2)."""
    linear = points @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]
    return linear + _radial(points, controls) @ weights


# TPSMM adds 0.01 I to the whole (C+3) x (C+3) system, affine block included: a smoothing TPS, not an
# interpolating one (the keypoints are only approximately matched). The TPS baseline is TPSMM's only with it.
TPSMM_REGULARISATION = 0.01


def tps_system(control_points: torch.Tensor, regularisation: float = TPSMM_REGULARISATION) -> torch.Tensor:
    """TPSMM's system matrix [[K, P], [P^T, 0]] + regularisation * I for control points (T, C, 2) -> (T, C+3, C+3).

    K_ij = U(|c_i - c_j|) (C x C), P = [c, 1] (C x 3).
    """
    t, c, _ = control_points.shape
    kernel = _radial(control_points, control_points)  # (T, C, C)
    p = torch.cat([control_points, torch.ones_like(control_points[..., :1])], dim=-1)  # (T, C, 3)
    top = torch.cat([kernel, p], dim=-1)
    bottom = torch.cat([p.transpose(1, 2), p.new_zeros(t, 3, 3)], dim=-1)
    system = torch.cat([top, bottom], dim=1)
    return system + regularisation * torch.eye(c + 3, dtype=p.dtype, device=p.device)


def tps_fit(
    source_points: torch.Tensor, target_points: torch.Tensor, regularisation: float = TPSMM_REGULARISATION
) -> tuple[torch.Tensor, torch.Tensor]:
    """TPSMM's keypoint TPS: solve (system + reg I) [w; a] = [target; 0] (TPSMM inverts; we solve: grids within 4e-6).

    source_points, target_points (T, C, 2) -> affine (T, 2, 3), weights (T, C, 2). Differentiable in both.
    With ``regularisation=0`` the TPS interpolates (T(source_i) = target_i exactly).
    """
    t, c, _ = source_points.shape
    system = tps_system(source_points, regularisation)
    rhs = torch.cat([target_points, target_points.new_zeros(t, 3, 2)], dim=1)  # (T, C+3, 2)
    solution = torch.linalg.solve(system, rhs)
    weights, affine_rows = solution[:, :c], solution[:, c:]  # affine_rows (T, 3, 2): rows x, y, 1
    return affine_rows.transpose(1, 2), weights


class TPSMotion(torch.nn.Module):
    """Keypoints -> N partial TPS sampling grids (driving -> source), TPSMM's motion model.

    Unlike CPAB, TPS is closed-form and differentiable w.r.t. the keypoints (TPSMM trains through it).
    """

    def forward(
        self, kp_source: torch.Tensor, kp_driving: torch.Tensor, num_groups: int, size: tuple[int, int]
    ) -> torch.Tensor:
        """kp (B, G*5, 2) -> grids (B, G, H, W, 2) in [-1, 1] mapping driving coordinates to source ones."""
        from cpabanim.models.blocks import make_coordinate_grid

        b = kp_source.shape[0]
        src = kp_source.reshape(b * num_groups, -1, 2).float()
        drv = kp_driving.reshape(b * num_groups, -1, 2).float()
        with torch.autocast(kp_source.device.type, enabled=False):  # the (K+3) solve needs full precision
            affine, weights = tps_fit(drv, src)
            grid = make_coordinate_grid(size[0], size[1], kp_source.device).view(1, -1, 2)
            warped = tps_apply(grid.expand(b * num_groups, -1, -1), drv, affine, weights)
        return warped.view(b, num_groups, size[0], size[1], 2)


class RandomTPS:
    """A random TPS per sample (TPSMM's equivariance transform): affine [I|0] + N(0, sigma_affine^2), and
    ``points_tps`` x ``points_tps`` control points on [-1, 1]^2 with N(0, sigma_tps^2) radial weights.

    As TPSMM, each control point has ONE radial weight, added to x and y alike (``weights`` (B, C, 2) holds it
    twice): the radial part moves points along the diagonal only.
    """

    def __init__(
        self,
        batch: int,
        sigma_affine: float,
        sigma_tps: float,
        points_tps: int,
        device=None,
        generator: torch.Generator | None = None,
    ):
        from cpabanim.models.blocks import make_coordinate_grid

        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.affine = (noise + torch.eye(2, 3)).to(device)
        self.controls = make_coordinate_grid(points_tps, points_tps).view(1, -1, 2).expand(batch, -1, -1).to(device)
        radial = torch.randn(batch, points_tps**2, 1, generator=generator) * sigma_tps  # (B, C, 1), shared by x, y
        self.weights = radial.expand(-1, -1, 2).to(device)

    def warp_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, P, 2) -> (B, P, 2)."""
        return tps_apply(
            points, self.controls.to(points.dtype), self.affine.to(points.dtype), self.weights.to(points.dtype)
        )

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Sample frame (B, C, H, W) at T(grid) with reflection padding."""
        from cpabanim.models.blocks import make_coordinate_grid

        b, _, h, w = frame.shape
        grid = make_coordinate_grid(h, w, frame.device, frame.dtype).view(1, -1, 2).expand(b, -1, -1)
        warped = self.warp_points(grid).view(b, h, w, 2)
        return torch.nn.functional.grid_sample(frame, warped, padding_mode="reflection", align_corners=True)
