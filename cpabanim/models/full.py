"""AnimationModel: every network of CPABMM (or its TPS ablation) behind ``reconstruct`` and ``animate``.

    model = AnimationModel(params["model"])
    out = model.reconstruct(source, driving)           # source, driving (B, 3, H, W) in [0, 1]
    video = model.animate(source, driving_video, mode="relative")   # (1, 3, H, W), (T, 3, H, W) -> (T, 3, H, W)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cpabanim.models.avd import AVDNetwork
from cpabanim.models.bg_motion import BGMotionPredictor
from cpabanim.models.blocks import convex_hull_area
from cpabanim.models.dense_motion import DenseMotionNetwork
from cpabanim.models.inpainting import InpaintingNetwork
from cpabanim.models.keypoint_detector import POINTS_PER_GROUP, KPDetector
from cpabanim.models.tps import TPSMotion

ANIMATION_MODES = ("relative", "standard", "avd")

def _merged(params: dict[str, Any] | None) -> dict[str, Any]:
    """The model section over the built-in defaults of the schema (its one home), as a plain dict."""
    from cpabanim.config.mappings import deep_merge
    from cpabanim.config.schema import defaults

    return deep_merge(defaults()["model"], params or {})


class AnimationModel(nn.Module):
    """Keypoint detector + background predictor + motion model + dense motion + inpainting (+ AVD)."""

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__()
        p = _merged(params)
        self.params = p
        self.num_groups = int(p["num_cpab"])
        self.num_kp = self.num_groups * POINTS_PER_GROUP
        channels = int(p["num_channels"])
        self.kp_detector = KPDetector(self.num_groups, channels, p["backbone"])
        self.bg_predictor = BGMotionPredictor(channels, p["backbone"]) if p["bg"] else None
        if p["motion"] == "cpab":
            from cpabanim.models.cpab_motion import CPABMotion

            self.motion = CPABMotion(p["partial_tessellation"], p["global_tessellation"], p["fit_method"],
                                     p["adam_iters"], integrator=p["integrator"],
                                     kp_gradient=p["kp_gradient"])
            num_transforms = self.num_groups + 2  # background + N partial + 1 global
        elif p["motion"] == "tps":
            self.motion = TPSMotion()
            num_transforms = self.num_groups + 1  # background + K TPS, as TPSMM
        else:
            raise ValueError(f"model.motion must be 'cpab' or 'tps', got {p['motion']!r}")
        gen = p["generator"]
        dm = p["dense_motion"]
        self.dense_motion = DenseMotionNetwork(
            self.num_kp, num_transforms, dm["block_expansion"], dm["max_features"], dm["num_blocks"],
            dm["scale_factor"], num_occlusions=gen["num_down_blocks"] + 1, kp_variance=p["kp_variance"],
            num_channels=channels)
        self.generator = InpaintingNetwork(channels, gen["block_expansion"], gen["max_features"],
                                           gen["num_down_blocks"])
        self.avd = AVDNetwork(self.num_kp, p["avd"]["id_bottle_size"], p["avd"]["pose_bottle_size"])

    def motion_grids(self, kp_source: torch.Tensor, kp_driving: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, 2) x 2 -> (B, T-1, h, w, 2): the partial (+ global) grids of the motion model."""
        return self.motion(kp_source, kp_driving, self.num_groups, size)

    def generate(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                 bg_param: torch.Tensor | None = None, dropout_p: float = 0.0,
                 generator: torch.Generator | None = None) -> dict[str, Any]:
        """Dense motion + inpainting from given keypoints; everything the losses and visualisation need."""
        scale = self.dense_motion.scale_factor
        size = (int(round(source.shape[2] * scale)), int(round(source.shape[3] * scale)))
        grids = self.motion_grids(kp_source, kp_driving, size)
        dense = self.dense_motion(source, kp_source, kp_driving, grids, bg_param, dropout_p, generator)
        out = self.generator(source, dense)
        out.update({"kp_source": kp_source, "kp_driving": kp_driving, "bg_param": bg_param,
                    "occlusion_map": dense["occlusion_map"], "contribution_maps": dense["contribution_maps"],
                    "deformation": dense["deformation"], "deformed_source": dense["deformed_source"]})
        return out

    def forward(self, source: torch.Tensor, driving: torch.Tensor, use_bg: bool = True, dropout_p: float = 0.0,
                generator: torch.Generator | None = None) -> dict[str, Any]:
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

    @torch.no_grad()
    def animate(self, source: torch.Tensor, driving_video: torch.Tensor, mode: str = "relative",
                batch_size: int = 8) -> torch.Tensor:
        """source (1, 3, H, W), driving_video (T, 3, H, W) in [0, 1] -> (T, 3, H, W).

        relative: kp = kp_S + (kp_D,t - kp_D,0) * sqrt(area(hull kp_S) / area(hull kp_D,0)) (docs/model.md);
        standard: the driving keypoints as they are; avd: the AVD network's keypoints. No background affine.
        """
        if mode not in ANIMATION_MODES:
            raise ValueError(f"animation mode must be one of {ANIMATION_MODES}, got {mode!r}")
        was_training = self.training
        self.eval()
        try:
            kp_source = self.kp_detector(source)
            kp_first = self.kp_detector(driving_video[:1])
            frames = []
            for start in range(0, driving_video.shape[0], batch_size):
                chunk = driving_video[start:start + batch_size]
                n = chunk.shape[0]
                kp_driving = self.animation_keypoints(kp_source, self.kp_detector(chunk), kp_first, mode)
                out = self.generate(source.expand(n, -1, -1, -1), kp_source.expand(n, -1, -1), kp_driving, None)
                frames.append(out["prediction"])
            return torch.cat(frames, dim=0)
        finally:
            self.train(was_training)

    def animation_keypoints(self, kp_source: torch.Tensor, kp_driving: torch.Tensor, kp_first: torch.Tensor,
                            mode: str) -> torch.Tensor:
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
