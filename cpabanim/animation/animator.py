"""The "animator" protocol the reconstruct and animate stages run, and the identity test double.

Anything with ``reconstruct`` and ``animate`` is an animator: the trained
:class:`cpabanim.models.full.AnimationModel`, or :class:`IdentityAnimator` (prediction = driving), which gives
L1 = AKD = AED = 0 on reconstruction and so proves the metric extractors end to end.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from cpabanim.errors import MissingWeightsError

log = logging.getLogger(__name__)

ANIMATION_MODES = ("relative", "standard", "avd")


@runtime_checkable
class Animator(Protocol):
    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """source, driving: (B, 3, H, W) in [0, 1] -> {"prediction": (B, 3, H, W) in [0, 1], ...}."""

    def animate(self, source: torch.Tensor, driving_video: torch.Tensor, mode: str = "relative") -> torch.Tensor:
        """source (1, 3, H, W), driving_video (T, 3, H, W) -> (T, 3, H, W) in [0, 1]."""


class IdentityAnimator:
    """prediction = driving: the perfect reconstruction (and a motion-only "animation")."""

    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": driving.clone()}

    def animate(self, source: torch.Tensor, driving_video: torch.Tensor, mode: str = "relative") -> torch.Tensor:
        return driving_video.clone()



def load_animator(kind: str, checkpoint: str | Path, device: torch.device) -> tuple[Animator, dict[str, Any]]:
    """``kind`` "identity" -> :class:`IdentityAnimator`; "checkpoint" -> the trained model, in eval mode.

    Returns the animator and a description (for logs, MLflow tags and the outputs' index.json).
    """
    if kind == "identity":
        return IdentityAnimator(), {"animator": "identity"}
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MissingWeightsError(
            f"checkpoint {checkpoint} not found: run `cpabanim train` first, or set "
            "reconstruct.checkpoint to a trained model (reconstruct.animator=identity for a sanity run)"
        )
    from cpabanim.models.checkpoint import load_checkpoint

    model, extra = load_checkpoint(checkpoint, map_location=device)
    model = model.to(device).eval()
    info = {"animator": "checkpoint", "checkpoint": str(checkpoint)}
    for key in ("epoch", "step"):
        if isinstance(extra, dict) and key in extra:
            info[key] = extra[key]
    return model, info
