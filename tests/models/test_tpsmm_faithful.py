"""TPSMM faithfulness of the TPS motion, the equivariance random TPS and the AVD network (docs/faithfulness.md).

The references below are written from TPSMM's published equations and layer lists (never its code): the
keypoint TPS solves [[K, P], [P^T, 0]] + 0.01 I, K_ij = r_ij^2 log(r_ij^2 + 1e-9), P = [c, 1], by inversion; the
random TPS has one radial weight per control point for both coordinates; the AVD MLPs are Linear-BN-ReLU x 3
and a plain Linear, the decoder reading [pose, identity].
"""

from __future__ import annotations

import torch
from torch import nn

from cpabanim.models.avd import AVDNetwork
from cpabanim.models.blocks import make_coordinate_grid
from cpabanim.models.tps import RandomTPS, TPSMotion, tps_system


def tpsmm_grid(kp_driving: torch.Tensor, kp_source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TPSMM's driving -> source TPS grid from its equations, in float64. kp (B, G, 5, 2) -> (B, G, H, W, 2)."""
    kp_d, kp_s = kp_driving.double(), kp_source.double()
    b, g, n, _ = kp_d.shape
    r2 = ((kp_d[:, :, :, None] - kp_d[:, :, None, :]) ** 2).sum(-1)
    k = r2 * torch.log(r2 + 1e-9)
    p = torch.cat([kp_d, torch.ones(b, g, n, 1, dtype=torch.float64)], -1)
    system = torch.cat(
        [torch.cat([k, p], -1), torch.cat([p.transpose(2, 3), torch.zeros(b, g, 3, 3, dtype=torch.float64)], -1)], 2
    )
    system = system + 0.01 * torch.eye(n + 3, dtype=torch.float64)
    rhs = torch.cat([kp_s, torch.zeros(b, g, 3, 2, dtype=torch.float64)], 2)
    param = torch.inverse(system) @ rhs  # (B, G, n+3, 2)
    radial_w, affine = param[:, :, :n], param[:, :, n:]  # affine rows: x, y, 1
    x = make_coordinate_grid(*size, dtype=torch.float64).view(-1, 2)  # (P, 2)
    x_h = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], -1)
    r2x = ((x[None, None, :, None] - kp_d[:, :, None]) ** 2).sum(-1)  # (B, G, P, n)
    out = x_h @ affine + (r2x * torch.log(r2x + 1e-9)) @ radial_w
    return out.view(b, g, size[0], size[1], 2)


def _keypoints(b: int, g: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    kp_s = torch.rand(b, g, 5, 2, generator=gen) * 1.6 - 0.8
    kp_d = kp_s + 0.1 * torch.randn(b, g, 5, 2, generator=gen)
    # a near-collinear group (where an unregularised TPS and TPSMM's differ the most)
    kp_d[0, 0] = torch.stack([torch.linspace(-0.5, 0.5, 5), 0.2 + 1e-3 * torch.randn(5, generator=gen)], -1)
    return kp_s, kp_d


def test_tps_system_is_tpsmm_regularised_matrix():
    ctrl = torch.rand(2, 5, 2, dtype=torch.float64) * 2 - 1
    system = tps_system(ctrl)
    r2 = ((ctrl[:, :, None] - ctrl[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(system[:, :5, :5], r2 * torch.log(r2 + 1e-9) + 0.01 * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(system[:, 5:, 5:], 0.01 * torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(system[:, :5, 5:7], ctrl)


def test_tps_motion_grids_equal_tpsmm_to_1e5():
    kp_s, kp_d = _keypoints(2, 3, seed=0)
    ours = TPSMotion()(kp_s.reshape(2, 15, 2), kp_d.reshape(2, 15, 2), 3, (32, 32))
    reference = tpsmm_grid(kp_d, kp_s, (32, 32))
    assert (ours.double() - reference).abs().max() < 1e-5
    # the test has teeth: an almost unregularised TPS (our old 1e-6 ridge) gives clearly different grids
    from cpabanim.models import tps

    weak = tps.tps_fit(kp_d.reshape(6, 5, 2), kp_s.reshape(6, 5, 2), regularisation=1e-6)
    grid = make_coordinate_grid(32, 32).view(1, -1, 2).expand(6, -1, -1)
    old = tps.tps_apply(grid, kp_d.reshape(6, 5, 2), *weak).view(2, 3, 32, 32, 2)
    assert (old.double() - reference).abs().mean() > 1e-2


def test_random_tps_shares_one_radial_weight_between_x_and_y():
    warp = RandomTPS(4, sigma_affine=0.0, sigma_tps=0.05, points_tps=5, generator=torch.Generator().manual_seed(0))
    assert warp.weights.shape == (4, 25, 2)
    torch.testing.assert_close(warp.weights[..., 0], warp.weights[..., 1], rtol=0, atol=0)
    points = torch.rand(4, 100, 2) * 2 - 1
    moved = warp.warp_points(points) - points  # identity affine: only the radial part moves the points
    torch.testing.assert_close(moved[..., 0], moved[..., 1])
    assert moved.abs().max() > 1e-3
    # TPSMM's equation with a (B, 1, 25) parameter: T(x) = A x~ + (sum_j w_j U(|x - c_j|)) (1, 1)
    ctrl = make_coordinate_grid(5, 5).view(-1, 2)
    r2 = ((points[:, :, None] - ctrl[None, None]) ** 2).sum(-1)
    radial = (r2 * torch.log(r2 + 1e-9) * warp.weights[:, None, :, 0]).sum(-1, keepdim=True)
    torch.testing.assert_close(moved, radial.expand(-1, -1, 2))


def test_random_tps_draws_affine_noise_of_the_given_scale():
    warp = RandomTPS(4000, sigma_affine=0.05, sigma_tps=0.005, points_tps=5, generator=torch.Generator().manual_seed(1))
    assert abs(float((warp.affine - torch.eye(2, 3)).std()) - 0.05) < 2e-3
    assert abs(float(warp.weights[..., 0].std()) - 0.005) < 2e-4


def _tpsmm_avd_layers(num_kp: int, id_size: int, pose_size: int) -> nn.Module:
    """TPSMM's AVD layer list, written from its published structure, with its module names."""

    def mlp(sizes):
        layers = []
        for i in range(3):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(sizes[3], sizes[4]))

    net = nn.Module()
    net.id_encoder = mlp([2 * num_kp, 256, 512, 1024, id_size])
    net.pose_encoder = mlp([2 * num_kp, 256, 512, 1024, pose_size])
    net.decoder = mlp([pose_size + id_size, 1024, 512, 256, 2 * num_kp])
    return net


def test_avd_has_tpsmm_layer_structure_and_output():
    ours = AVDNetwork(50, 128, 128)
    reference = _tpsmm_avd_layers(50, 128, 128)
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert len(ours_state) == 69
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in ref_state.items()}
    reference.load_state_dict(ours_state)
    ours.eval(), reference.eval()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics first
        for net in (ours, reference):
            for m in net.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2)
        reference.load_state_dict(ours.state_dict())
        kp_s, kp_d = torch.rand(4, 50, 2) * 2 - 1, torch.rand(4, 50, 2) * 2 - 1
        pose, ident = reference.pose_encoder(kp_d.view(4, -1)), reference.id_encoder(kp_s.view(4, -1))
        expected = reference.decoder(torch.cat([pose, ident], 1)).view(4, 50, 2)
        torch.testing.assert_close(ours(kp_s, kp_d), expected, rtol=0, atol=1e-6)
