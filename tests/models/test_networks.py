"""Shapes of every network, identity motion for identical keypoints, motion / fit_method switches, animation."""

from __future__ import annotations

import pytest
import torch

from cpabanim.animation.animate import animate_video
from cpabanim.config.typed import ModelConfig
from cpabanim.models.avd import AVDNetwork
from cpabanim.models.bg_motion import BGMotionPredictor
from cpabanim.models.blocks import Hourglass, make_coordinate_grid
from cpabanim.models.dense_motion import DenseMotionNetwork, dropout_softmax
from cpabanim.models.full import AnimationModel
from cpabanim.models.inpainting import InpaintingNetwork
from cpabanim.models.keypoint_detector import KPDetector
from cpabanim.models.tps import RandomTPS, TPSMotion, tps_apply, tps_fit

TINY = {
    "num_cpab": 2,
    "backbone": "small",
    "generator": {"block_expansion": 8, "max_features": 32, "num_down_blocks": 3},
    "dense_motion": {"block_expansion": 8, "max_features": 32, "num_blocks": 3, "scale_factor": 0.5},
    "avd": {"id_bottle_size": 8, "pose_bottle_size": 8},
}


def test_keypoint_detector_and_bg_shapes():
    image = torch.rand(2, 3, 64, 64)
    kp = KPDetector(3, backbone_kind="small")(image)
    assert kp.shape == (2, 15, 2) and kp.abs().max() <= 1
    bg = BGMotionPredictor(backbone_kind="small")(image, image)
    # identity-initialised fc: the background affine starts as the identity for any input
    torch.testing.assert_close(bg, torch.eye(3).expand(2, 3, 3))


def test_resnet18_backbone_is_the_papers():
    detector = KPDetector(1, backbone_kind="resnet18")
    assert detector.backbone.__class__.__name__ == "ResNet"
    assert detector(torch.rand(1, 3, 64, 64)).shape == (1, 5, 2)


def test_hourglass_levels_match_declared_channels():
    net = Hourglass(block_expansion=8, in_features=5, num_blocks=3, max_features=32)
    levels = net(torch.rand(1, 5, 32, 32))
    assert [lvl.shape[1] for lvl in levels] == net.out_channels
    assert [lvl.shape[-1] for lvl in levels] == [8, 16, 32]
    assert net.out_channels[-1] == 8 + 5


def test_dense_motion_and_inpainting_shapes():
    dense = DenseMotionNetwork(
        num_kp=10,
        num_transforms=4,
        block_expansion=8,
        max_features=32,
        num_blocks=3,
        scale_factor=0.25,
        num_occlusions=4,
    )
    source = torch.rand(2, 3, 64, 64)
    kp = torch.rand(2, 10, 2) * 2 - 1
    grids = make_coordinate_grid(16, 16).expand(2, 3, 16, 16, 2)
    out = dense(source, kp, kp, grids)
    assert out["deformation"].shape == (2, 16, 16, 2)
    assert out["contribution_maps"].shape == (2, 4, 16, 16)
    assert [o.shape[-1] for o in out["occlusion_map"]] == [8, 16, 32, 64]
    gen = InpaintingNetwork(3, 8, 32, 3)
    result = gen(source, out)
    assert result["prediction"].shape == source.shape
    assert 0 <= result["prediction"].min() and result["prediction"].max() <= 1
    assert [m.shape[1] for m in result["warped_encoder_maps"]] == [32, 32, 16, 8]


def test_dropout_softmax_never_drops_background_and_sums_to_at_most_one():
    logits = torch.randn(4, 5, 3, 3)
    maps = dropout_softmax(logits, 1.0)  # every transform but the background dropped
    torch.testing.assert_close(maps[:, 0], torch.ones(4, 3, 3), atol=1e-3, rtol=0)  # the 1e-6 in the denominator
    maps = dropout_softmax(logits, 0.5, torch.Generator().manual_seed(0))
    assert (maps.sum(1) <= 1 + 1e-6).all()


@pytest.mark.parametrize("motion", ["cpab"])
def test_identity_motion_for_identical_keypoints(motion):
    """source == driving: same keypoints -> every motion grid is the identity -> the dense flow is the identity.

    Not for ``motion: tps``: TPSMM's TPS is regularised (0.01 I on its whole system, affine block included), so
    identical keypoints do not give the identity -- far from it when an untrained detector's keypoints cluster
    (tests/models/test_tpsmm_faithful.py checks that system against TPSMM's equations instead)."""
    model = AnimationModel(ModelConfig.from_mapping({**TINY, "motion": motion})).eval()
    frame = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        kp = model.kp_detector(frame)
        grids = model.motion_grids(kp, kp, (32, 32))
        identity = make_coordinate_grid(32, 32)
        assert grids.shape == (2, 2 + (motion == "cpab"), 32, 32, 2)
        torch.testing.assert_close(grids, identity.expand_as(grids), atol=1e-4, rtol=0)
        out = model.generate(frame, kp, kp, None)
    torch.testing.assert_close(out["deformation"], identity.expand(2, 32, 32, 2), atol=1e-4, rtol=0)


def test_tps_fit_interpolates_and_random_tps_is_near_identity():
    src = torch.rand(3, 5, 2) * 2 - 1
    dst = src + 0.1 * torch.randn(3, 5, 2)
    affine, weights = tps_fit(src, dst, regularisation=0.0)  # unregularised: an interpolating TPS
    torch.testing.assert_close(tps_apply(src, src, affine, weights), dst, atol=1e-4, rtol=0)
    grids = TPSMotion()(dst.reshape(1, 15, 2), src.reshape(1, 15, 2), 3, (8, 8))
    assert grids.shape == (1, 3, 8, 8, 2)
    warp = RandomTPS(2, 0.0, 0.0, 5)
    points = torch.rand(2, 7, 2)
    torch.testing.assert_close(warp.warp_points(points), points)


@pytest.mark.parametrize("motion,fit_method", [("cpab", "lm"), ("cpab", "adam"), ("tps", "lm")])
def test_switches_reconstruct_and_backward(motion, fit_method):
    model = AnimationModel(
        ModelConfig.from_mapping({**TINY, "motion": motion, "fit_method": fit_method, "adam_iters": 5})
    )
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    out = model(source, driving, dropout_p=0.3, generator=torch.Generator().manual_seed(0))
    out["prediction"].mean().backward()
    grad = model.kp_detector.backbone.fc.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # through the heatmaps (and the TPS for motion=tps)
    rec = model.reconstruct(source, driving)
    assert rec["prediction"].shape == (2, 3, 64, 64)
    assert rec["occlusion_map"].shape == (2, 1, 64, 64)
    assert rec["kp_source"].shape == rec["kp_driving"].shape == (2, 10, 2)


def test_cpab_fit_methods_agree_on_a_small_motion():
    """lm (ours) and adam (paper) fit the same keypoints; both grids move the source keypoints alike."""
    kp_source = torch.rand(1, 10, 2) * 1.2 - 0.6
    kp_driving = kp_source + 0.03 * torch.randn(1, 10, 2)
    grids = {}
    for method in ("lm", "adam"):
        model = AnimationModel(ModelConfig.from_mapping({**TINY, "fit_method": method, "adam_iters": 100}))
        grids[method] = model.motion_grids(kp_source, kp_driving, (32, 32))
    assert (grids["lm"] - grids["adam"]).abs().mean() < 0.02


@pytest.mark.parametrize("mode", ["relative", "standard", "avd"])
def test_animate_modes(mode):
    model = AnimationModel(ModelConfig.from_mapping({**TINY, "motion": "tps"}))
    video = animate_video(model, torch.rand(1, 3, 64, 64), torch.rand(5, 3, 64, 64), mode=mode, batch_size=2)
    assert video.shape == (5, 3, 64, 64)
    assert model.training  # mode restored


def test_relative_animation_of_the_source_itself_reproduces_standard():
    """Driving video starting at the source frame: relative keypoints == driving keypoints (scale 1)."""
    model = AnimationModel(ModelConfig.from_mapping({**TINY, "motion": "tps"})).eval()
    source = torch.rand(1, 3, 64, 64)
    video = torch.cat([source, torch.rand(2, 3, 64, 64)])
    torch.testing.assert_close(
        animate_video(model, source, video, "relative"), animate_video(model, source, video, "standard")
    )


def test_avd_shapes():
    net = AVDNetwork(10, 8, 8)
    assert net(torch.rand(4, 10, 2), torch.rand(4, 10, 2)).shape == (4, 10, 2)


def test_bad_motion_is_rejected():
    with pytest.raises(ValueError, match="motion"):
        AnimationModel(ModelConfig.from_mapping({**TINY, "motion": "spline"}))
