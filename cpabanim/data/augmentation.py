"""Augmentations of a (source, driving[, masks]) pair, applied identically to both frames (TPSMM's set).

Random horizontal flip and time flip (swap source and driving) on every dataset; colour jitter
(brightness/contrast/saturation/hue, torchvision's ``ColorJitter`` parameters) on real-video datasets;
MGif's random resize + crop. Randomness comes from torch's global generator, which the trainer seeds
(and ``DataLoader`` seeds per worker), so a run is reproducible.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF


def _jitter_value(value: Any) -> float | None:
    return None if value in (None, 0, 0.0) else value


def augment_pair(
    frames: torch.Tensor, masks: torch.Tensor | None, params: dict[str, Any] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment a frame pair and its region masks consistently.

    Args:
        frames: float32 (2, 3, H, W) in [0, 1], (source, driving).
        masks: int64 (2, H, W) region labels, or None.
        params: ``{"horizontal_flip": bool, "time_flip": bool, "jitter": {brightness, contrast, saturation, hue},
            "resize_ratio": [lo, hi] | None}``; None or {} = no augmentation.
    Returns:
        the augmented (2, 3, H, W) frames and (2, H, W) masks.
    """
    if not params:
        return frames, masks
    if params.get("time_flip") and torch.rand(()) < 0.5:
        frames = frames.flip(0)
        masks = masks.flip(0) if masks is not None else None
    if params.get("horizontal_flip") and torch.rand(()) < 0.5:
        frames = frames.flip(-1)
        masks = masks.flip(-1) if masks is not None else None
    ratio = params.get("resize_ratio")
    if ratio:
        frames, masks = _random_resize_crop(frames, masks, float(ratio[0]), float(ratio[1]))
    jitter = params.get("jitter") or {}
    if any(_jitter_value(jitter.get(k)) for k in ("brightness", "contrast", "saturation", "hue")):
        frames = _colour_jitter(frames, jitter)
    return frames, masks


def _colour_jitter(frames: torch.Tensor, jitter: dict[str, float]) -> torch.Tensor:
    """One draw of ColorJitter's parameters, applied to both frames (same colour change for the pair)."""
    colour = T.ColorJitter(
        brightness=jitter.get("brightness") or 0, contrast=jitter.get("contrast") or 0,
        saturation=jitter.get("saturation") or 0, hue=jitter.get("hue") or 0,
    )
    order, brightness, contrast, saturation, hue = T.ColorJitter.get_params(
        colour.brightness, colour.contrast, colour.saturation, colour.hue
    )
    for index in order.tolist():
        if index == 0 and brightness is not None:
            frames = TF.adjust_brightness(frames, brightness)
        elif index == 1 and contrast is not None:
            frames = TF.adjust_contrast(frames, contrast)
        elif index == 2 and saturation is not None:
            frames = TF.adjust_saturation(frames, saturation)
        elif index == 3 and hue is not None:
            frames = TF.adjust_hue(frames, hue)
    return frames.clamp(0, 1)


def _random_resize_crop(
    frames: torch.Tensor, masks: torch.Tensor | None, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize by a random ratio in [low, high], then crop (or zero-pad) back to (H, W) at a random place."""
    height, width = frames.shape[-2:]
    ratio = float(torch.empty(()).uniform_(low, high))
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=ratio < 1)
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=(new_h, new_w), mode="nearest")[:, 0].long()
    pad_h, pad_w = max(0, height - new_h), max(0, width - new_w)
    if pad_h or pad_w:
        frames = F.pad(frames, (0, pad_w, 0, pad_h))
        masks = F.pad(masks, (0, pad_w, 0, pad_h)) if masks is not None else None
    top = int(torch.randint(0, frames.shape[-2] - height + 1, ()))
    left = int(torch.randint(0, frames.shape[-1] - width + 1, ()))
    frames = frames[..., top : top + height, left : left + width]
    masks = masks[..., top : top + height, left : left + width] if masks is not None else None
    return frames.contiguous(), masks.contiguous() if masks is not None else None
