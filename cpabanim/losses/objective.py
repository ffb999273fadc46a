"""The generator objective (docs/model.md): L = L_perc + L_eq + L_warp + L_bg + w_KS L_KS + w_struc L_struc.

Each term is returned separately (for logging); the trainer sums them. The weights and switches are the
``loss`` section (:class:`cpabanim.config.typed.LossConfig`); a term whose weight is 0 is not computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cpabanim.config.typed import LossConfig
from cpabanim.losses.perceptual import PerceptualPyramidLoss
from cpabanim.losses.semantic import KeypointSemanticLoss
from cpabanim.models.tps import RandomTPS


class GeneratorObjective(nn.Module):
    """Holds the frozen loss networks; ``forward(model, batch, generated, use_bg)`` -> {name: weighted scalar}."""

    def __init__(self, config: LossConfig | None = None, weights_dir=None):
        super().__init__()
        if isinstance(config, Mapping):  # the params dict of older callers: say what to write instead
            raise TypeError(
                "GeneratorObjective takes a LossConfig: GeneratorObjective(LossConfig.from_mapping(params))"
            )
        c = LossConfig() if config is None else config
        self.config = c
        # lists, as the schema's representation: what the perceptual loss was always given
        self.perceptual = PerceptualPyramidLoss(c.perceptual, list(c.scales), list(c.perceptual_weights), weights_dir)
        self.semantic = KeypointSemanticLoss(blur_sigma=c.semantic_blur) if c.semantic == "masks" else None
        self.structure = None
        if c.structure == "dino":
            from cpabanim.losses.structure import StructureLoss
            from cpabanim.weights import find_weights

            path = find_weights("dino_vitb8", weights_dir, alternative="--set loss.structure=off")
            self.structure = StructureLoss(path)

    @property
    def needs_masks(self) -> bool:
        return self.semantic is not None

    def forward(
        self,
        model,
        batch: dict[str, Any],
        generated: dict[str, Any],
        use_bg: bool,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        c = self.config
        source, driving = batch["source"], batch["driving"]
        prediction = generated["prediction"]
        losses: dict[str, torch.Tensor] = {"perceptual": self.perceptual(prediction, driving)}
        if c.equivariance > 0:
            transform = RandomTPS(
                driving.shape[0], c.sigma_affine, c.sigma_tps, c.points_tps, device=driving.device, generator=generator
            )
            transformed = transform.transform_frame(driving)
            kp_transformed = model.kp_detector(transformed)
            losses["equivariance"] = (
                c.equivariance * (generated["kp_driving"] - transform.warp_points(kp_transformed)).abs().mean()
            )
        if c.warp > 0:
            encoded = model.generator.get_encode(driving, generated["occlusion_map"])
            warped = generated["warped_encoder_maps"]
            value = prediction.new_zeros(())
            for i, enc in enumerate(encoded):
                value = value + (enc - warped[-i - 1]).abs().mean()
            losses["warp"] = c.warp * value
        if c.bg > 0 and use_bg and model.bg_predictor is not None:
            forward_bg = generated["bg_param"]
            backward_bg = model.bg_predictor(driving, source)
            eye = torch.eye(3, dtype=forward_bg.dtype, device=forward_bg.device)
            losses["bg"] = c.bg * (forward_bg @ backward_bg - eye).abs().mean()
        if self.semantic is not None:
            if "source_mask" not in batch:
                from cpabanim.errors import ConfigError

                raise ConfigError("loss.semantic=masks needs region masks: run `cpabanim masks` first")
            losses["semantic"] = c.semantic_weight * self.semantic(
                generated["kp_source"], generated["kp_driving"], batch["source_mask"], batch["driving_mask"]
            )
        if self.structure is not None:
            losses["structure"] = c.structure_weight * self.structure(prediction, driving)
        return losses
