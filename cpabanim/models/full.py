"""AnimationModel: every network of CPABMM (or its TPS ablation) behind ``reconstruct`` and ``animate``.

model = AnimationModel(ModelConfig(motion="tps", num_cpab=1))   # or ModelConfig.from_mapping(params["model"])
out = model.reconstruct(source, driving)           # source, driving (B, 3, H, W) in [0, 1]

Animating a photo with a video (one loop for the pipeline and the demo) is
:func:`cpabanim.animation.animate.animate_video`; :meth:`AnimationModel.animation_keypoints` is what each mode drives
the generator with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cpabanim.config.typed import ModelConfig
from cpabanim.models.avd import AVDNetwork
from cpabanim.models.bg_motion import BGMotionPredictor
from cpabanim.models.blocks import convex_hull_area
from cpabanim.models.dense_motion import DenseMotionNetwork
from cpabanim.models.inpainting import InpaintingNetwork
from cpabanim.models.keypoint_detector import POINTS_PER_GROUP, KPDetector
from cpabanim.models.tps import TPSMotion

ANIMATION_MODES = ("relative", "standard", "avd")


def motion_model(config: ModelConfig, num_groups: int) -> tuple[nn.Module, int]:
    """(the keypoints -> sampling grids module, number of transforms the dense motion network weighs)."""
    if config.motion == "cpab":
        from cpabanim.models.cpab_motion import CPABMotion

        motion = CPABMotion(
            config.partial_tessellation,
            config.global_tessellation,
            config.fit_method,
            config.adam_iters,
            integrator=config.integrator,
            kp_gradient=config.kp_gradient,
        )
        return motion, num_groups + 2  # background + N partial + 1 global
    if config.motion == "tps":
        return TPSMotion(), num_groups + 1  # background + K TPS, as TPSMM
    raise ValueError(f"model.motion must be 'cpab' or 'tps', got {config.motion!r}")


class AnimationModel(nn.Module):
    """Keypoint detector + background predictor + motion model + dense motion + inpainting (+ AVD).

    ``config``: the ``model`` section (None: the schema's defaults). ``self.config`` keeps it and
    ``self.params`` its plain dict, which checkpoints record as ``model_params``.
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        if isinstance(config, Mapping):  # the params dict of older callers: say what to write instead
            raise TypeError("AnimationModel takes a ModelConfig: AnimationModel(ModelConfig.from_mapping(params))")
        c = ModelConfig() if config is None else config
        self.config = c
        self.params = c.to_dict()
        self.num_groups = int(c.num_cpab)
        self.num_kp = self.num_groups * POINTS_PER_GROUP
        channels = int(c.num_channels)
        self.kp_detector = KPDetector(self.num_groups, channels, c.backbone)
        self.bg_predictor = BGMotionPredictor(channels, c.backbone) if c.bg else None
        self.motion, num_transforms = motion_model(c, self.num_groups)
        gen, dm = c.generator, c.dense_motion
        self.dense_motion = DenseMotionNetwork(
            self.num_kp,
            num_transforms,
            dm.block_expansion,
            dm.max_features,
            dm.num_blocks,
            dm.scale_factor,
            num_occlusions=gen.num_down_blocks + 1,
            kp_variance=c.kp_variance,
            num_channels=channels,
        )
        self.generator = InpaintingNetwork(channels, gen.block_expansion, gen.max_features, gen.num_down_blocks)
        self.avd = AVDNetwork(self.num_kp, c.avd.id_bottle_size, c.avd.pose_bottle_size)

    def motion_grids(self, kp_source: torch.Tensor, kp_driving: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, 2) x 2 -> (B, T-1, h, w, 2): the partial (+ global) grids of the motion model."""
        return self.motion(kp_source, kp_driving, self.num_groups, size)

    def generate(
        self,
        source: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        bg_param: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Dense motion + inpainting from given keypoints; everything the losses and visualisation need."""
        scale = self.dense_motion.scale_factor
        size = (int(round(source.shape[2] * scale)), int(round(source.shape[3] * scale)))
        grids = self.motion_grids(kp_source, kp_driving, size)
        dense = self.dense_motion(source, kp_source, kp_driving, grids, bg_param, dropout_p, generator)
        out = self.generator(source, dense)
        out.update(
            {
                "kp_source": kp_source,
                "kp_driving": kp_driving,
                "bg_param": bg_param,
                "occlusion_map": dense["occlusion_map"],
                "contribution_maps": dense["contribution_maps"],
                "deformation": dense["deformation"],
                "deformed_source": dense["deformed_source"],
            }
        )
        return out

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        use_bg: bool = True,
        dropout_p: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Training forward: keypoints of both frames, background affine when enabled, generation."""
        kp_source = self.kp_detector(source)
        kp_driving = self.kp_detector(driving)
        bg_param = self.bg_predictor(source, driving) if (self.bg_predictor is not None and use_bg) else None
        return self.generate(source, kp_source, kp_driving, bg_param, dropout_p, generator)

    @torch.no_grad()
    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, Any]:
        """source, driving (B, 3, H, W) in [0, 1] -> dict(prediction (B, 3, H, W) in [0, 1], kp_source, kp_driving,
        occlusion_map (finest, (B, 1, H, W)), occlusion_maps (all), deformed, ...). Uses the background affine."""
        was_training = self.training
        self.eval()
        try:
            out = self(source, driving, use_bg=True)
        finally:
            self.train(was_training)
        out["occlusion_maps"] = out["occlusion_map"]
        out["occlusion_map"] = out["occlusion_map"][-1]
        return out

    def animation_keypoints(
        self, kp_source: torch.Tensor, kp_driving: torch.Tensor, kp_first: torch.Tensor, mode: str
    ) -> torch.Tensor:
        """The keypoints the generator is driven with in ``mode`` (TPSMM's demo computes the same).

        kp_source (1, K, 2), kp_driving (n, K, 2), kp_first (1, K, 2) = the first (or best) driving frame's ->
        (n, K, 2). relative: kp_S + (kp_D,t - kp_D,0) * sqrt(area(hull kp_S) / area(hull kp_D,0));
        standard: kp_D,t; avd: AVD(kp_S, kp_D,t).
        """
        kp_src = kp_source.expand(kp_driving.shape[0], -1, -1)
        if mode == "relative":
            ratio = convex_hull_area(kp_source[0]) / convex_hull_area(kp_first[0])
            scale = float(torch.sqrt(ratio)) if torch.isfinite(ratio) and ratio > 0 else 1.0
            return kp_src + (kp_driving - kp_first) * scale
        if mode == "avd":
            return self.avd(kp_src, kp_driving)
        if mode == "standard":
            return kp_driving
        raise ValueError(f"animation mode must be one of {ANIMATION_MODES}, got {mode!r}")
