"""The "animator" protocol the reconstruct and animate stages run, the trained model behind it, and the identity
test double; and the one loader of a trained model for inference (the stages' and ``cpabanim demo``'s).

Anything with ``reconstruct`` and ``animate`` is an animator: :class:`ModelAnimator` (a trained
:class:`cpabanim.models.full.AnimationModel`, animated by the one loop of :mod:`cpabanim.animation.animate`), or
:class:`IdentityAnimator` (prediction = driving), which gives L1 = AKD = AED = 0 on reconstruction and so proves
the metric extractors end to end.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from cpabanim.config.paths import TRAIN_HINT
from cpabanim.errors import MissingWeightsError

log = logging.getLogger(__name__)


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


class ModelAnimator:
    """A trained model as an animator: its own ``reconstruct``, and :func:`~cpabanim.animation.animate.animate_video`
    (the loop the demo runs too) for ``animate``. ``model`` is there for the explanation pictures."""

    def __init__(self, model) -> None:
        self.model = model

    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, Any]:
        return self.model.reconstruct(source, driving)

    def animate(self, source: torch.Tensor, driving_video: torch.Tensor, mode: str = "relative") -> torch.Tensor:
        from cpabanim.animation.animate import animate_video

        return animate_video(self.model, source, driving_video, mode)


def load_model(checkpoint: str | Path, device: torch.device, missing: str = TRAIN_HINT):
    """-> (AnimationModel in eval mode on ``device``, the checkpoint's other entries: step, epoch, params, ...).

    A missing file is a :class:`MissingWeightsError` "checkpoint PATH not found: ``missing``" (what to do about it,
    in the caller's words); reading and checking the file is :func:`cpabanim.models.checkpoint.load_checkpoint`'s.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MissingWeightsError(f"checkpoint {checkpoint} not found: {missing}")
    from cpabanim.models.checkpoint import load_checkpoint

    model, extra = load_checkpoint(checkpoint, map_location=device)
    return model.to(device).eval(), extra


def load_animator(
    kind: str, checkpoint: str | Path, device: torch.device, section: str = "reconstruct"
) -> tuple[Animator, dict[str, Any]]:
    """``kind`` "identity" -> :class:`IdentityAnimator`; "checkpoint" -> the trained model, in eval mode.

    ``section``: the params section of the stage (``reconstruct`` | ``animate``), named in the error when the
    checkpoint is missing. Returns the animator and a description (for logs, MLflow tags and the outputs' index.json).
    """
    if kind == "identity":
        return IdentityAnimator(), {"animator": "identity"}
    checkpoint = Path(checkpoint)
    stages = "`cpabanim train`, then `cpabanim avd`," if section == "animate" else "`cpabanim train`"  # its input
    model, extra = load_model(
        checkpoint,
        device,
        missing=(
            f"run {stages} first, or set {section}.checkpoint to a trained model "
            f"({section}.animator=identity for a sanity run)"
        ),
    )
    info = {"animator": "checkpoint", "checkpoint": str(checkpoint)}
    for key in ("epoch", "step"):
        if isinstance(extra, dict) and key in extra:
            info[key] = extra[key]
    return ModelAnimator(model), info
