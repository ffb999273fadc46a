"""``model.kp_gradient``: detach (the paper) vs implicit (the LM fit differentiated by the implicit function
theorem, the dense grid through the integration): the reconstruction loss reaches the keypoint detector through
the CPAB motion only with implicit, and the forward values do not change."""

from __future__ import annotations

import pytest
import torch

from cpabanim.config.typed import ModelConfig
from cpabanim.models.cpab_motion import CPABMotion
from cpabanim.models.full import AnimationModel

TINY = {
    "num_cpab": 2,
    "backbone": "small",
    "generator": {"block_expansion": 8, "max_features": 32, "num_down_blocks": 3},
    "dense_motion": {"block_expansion": 8, "max_features": 32, "num_blocks": 3, "scale_factor": 0.5},
    "avd": {"id_bottle_size": 8, "pose_bottle_size": 8},
}


def _keypoints(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    kp_source = torch.rand(2, 10, 2, generator=gen) * 1.4 - 0.7
    return kp_source, kp_source + 0.05 * torch.randn(2, 10, 2, generator=gen)


def test_motion_grids_carry_gradients_only_with_implicit():
    kp_s, kp_d = _keypoints(0)
    grids = {}
    for mode in ("detach", "implicit"):
        motion = CPABMotion(kp_gradient=mode, integrator="fast")
        s, d = kp_s.clone().requires_grad_(True), kp_d.clone().requires_grad_(True)
        grids[mode] = motion(s, d, 2, (16, 16))
        if mode == "detach":
            assert not grids[mode].requires_grad
        else:
            gs, gd = torch.autograd.grad(grids[mode].pow(2).sum(), (s, d))
            assert gs.abs().sum() > 0 and gd.abs().sum() > 0
    torch.testing.assert_close(grids["implicit"].detach(), grids["detach"], rtol=0, atol=0)  # same forward


def test_implicit_needs_the_lm_fit():
    with pytest.raises(ValueError, match="fit_method=lm"):
        CPABMotion(fit_method="adam", kp_gradient="implicit")
    with pytest.raises(ValueError, match="kp_gradient"):
        CPABMotion(kp_gradient="unrolled")


def _cpab_path_grad(kp_gradient: str) -> torch.Tensor:
    """Gradient of a reconstruction loss on the keypoint detector's final layer through the CPAB path alone: the
    heatmap path (the other way the generator reaches the keypoints) is cut by detaching its inputs."""
    torch.manual_seed(0)
    model = AnimationModel(ModelConfig.from_mapping({**TINY, "kp_gradient": kp_gradient, "integrator": "fast"}))
    heatmaps = model.dense_motion.heatmaps
    model.dense_motion.heatmaps = lambda s, d, size: heatmaps(s.detach(), d.detach(), size)
    gen = torch.Generator().manual_seed(1)
    source, driving = torch.rand(2, 3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64, generator=gen)
    out = model(source, driving)
    (out["prediction"] - driving).abs().mean().backward()
    grad = model.kp_detector.backbone.fc.weight.grad
    return torch.zeros_like(model.kp_detector.backbone.fc.weight) if grad is None else grad


def test_reconstruction_loss_reaches_the_keypoint_detector_through_cpab_only_with_implicit():
    assert _cpab_path_grad("detach").abs().sum() == 0  # the paper: nothing through the fit
    grad = _cpab_path_grad("implicit")
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
