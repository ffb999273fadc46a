"""Augmentations of a (source, driving[, masks]) pair, applied identically to both frames (TPSMM's set).

Random horizontal flip and time flip (swap source and driving) on every dataset; colour jitter
(brightness/contrast/saturation/hue, torchvision's ``ColorJitter`` parameters) on real-video datasets;
MGif's random resize + crop.

Kornia's style: :func:`sample_augmentation` draws every random parameter of one pair from an explicit
``torch.Generator`` into a :class:`PairAugmentation`, then :func:`apply_augmentation` applies it without any
randomness. The dataset gives each item its own generator seeded from (seed, epoch, index)
(``cpabanim.data.loader``), so the draws do not depend on the worker, the process count or a resume
(docs/model.md, "Determinism and resume").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class PairAugmentation:
    """The drawn parameters of one pair's augmentation (no randomness left).

    ``resized``: (h, w) after the random resize, or None; ``crop``: (top, left) of the (H, W) window cut
    from the resized (and zero-padded) frames; ``jitter_order``: the order of the four colour operations
    (0 brightness, 1 contrast, 2 saturation, 3 hue); a factor of None skips that operation.
    """

    time_flip: bool = False
    horizontal_flip: bool = False
    resized: tuple[int, int] | None = None
    crop: tuple[int, int] = (0, 0)
    jitter_order: tuple[int, ...] = ()
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None

    @property
    def has_jitter(self) -> bool:
        return any(getattr(self, key) is not None for key in JITTER_KEYS)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(()).uniform_(low, high, generator=generator))


def _coin(generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator) < 0.5)


def _jitter_range(key: str, value: Any) -> tuple[float, float] | None:
    """ColorJitter's range for one strength: factors 1 +- value (>= 0), hue shift +- value; None when off."""
    if value in (None, 0, 0.0):
        return None
    value = float(value)
    return (-value, value) if key == "hue" else (max(0.0, 1.0 - value), 1.0 + value)


def sample_augmentation(
    params: dict[str, Any] | None, size: tuple[int, int], generator: torch.Generator | None = None
) -> PairAugmentation:
    """Draw the augmentation of one pair of (H, W) = ``size`` frames.

    Args:
        params: ``{"horizontal_flip": bool, "time_flip": bool, "jitter": {brightness, contrast, saturation,
            hue}, "resize_ratio": [lo, hi] | None}`` (``data.augmentation``); None or {} = no augmentation.
        size: (H, W) of the frames.
        generator: where every draw comes from (None: torch's global generator).
    """
    if not params:
        return PairAugmentation()
    drawn: dict[str, Any] = {
        "time_flip": bool(params.get("time_flip")) and _coin(generator),
        "horizontal_flip": bool(params.get("horizontal_flip")) and _coin(generator),
    }
    ratio = params.get("resize_ratio")
    if ratio:
        height, width = size
        scale = _uniform(float(ratio[0]), float(ratio[1]), generator)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        top = int(torch.randint(0, max(new_h, height) - height + 1, (), generator=generator))
        left = int(torch.randint(0, max(new_w, width) - width + 1, (), generator=generator))
        drawn.update(resized=(new_h, new_w), crop=(top, left))
    jitter = params.get("jitter") or {}
    ranges = {key: _jitter_range(key, jitter.get(key)) for key in JITTER_KEYS}
    if any(ranges.values()):
        drawn["jitter_order"] = tuple(torch.randperm(4, generator=generator).tolist())
        for key, bounds in ranges.items():
            drawn[key] = _uniform(*bounds, generator) if bounds else None
    return PairAugmentation(**drawn)


def apply_augmentation(
    frames: torch.Tensor, masks: torch.Tensor | None, aug: PairAugmentation
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply drawn parameters to a pair.

    Args:
        frames: (2, 3, H, W) (source, driving), float32 in [0, 1] or uint8 (flips and crops keep the dtype;
            a resize or colour jitter turns uint8 into float32 in [0, 1]).
        masks: int64 (2, H, W) region labels, or None.
        aug: from :func:`sample_augmentation`.
    Returns:
        the (2, 3, H, W) frames and (2, H, W) masks, augmented identically.
    """
    if aug.time_flip:
        frames = frames.flip(0)
        masks = masks.flip(0) if masks is not None else None
    if aug.horizontal_flip:
        frames = frames.flip(-1)
        masks = masks.flip(-1) if masks is not None else None
    if aug.resized is not None:
        frames, masks = _resize_crop(_as_float(frames), masks, aug.resized, aug.crop)
    if aug.has_jitter:
        frames = _colour_jitter(_as_float(frames), aug)
    return frames, masks


def augment_pair(
    frames: torch.Tensor,
    masks: torch.Tensor | None,
    params: dict[str, Any] | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample then apply: frames (2, 3, H, W), masks (2, H, W) or None -> the same, augmented identically."""
    aug = sample_augmentation(params, tuple(frames.shape[-2:]), generator)
    return apply_augmentation(frames, masks, aug)


def _as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float().div_(255) if frames.dtype == torch.uint8 else frames


def pack_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Training items packed for the trip from a loader worker: float frames in [0, 1] -> uint8, ties rounded
    up (``floor(255 x + 0.5)``); uint8 frames unchanged.

    Training items leave the dataset as uint8, a quarter of float32's bytes between a loader worker and the
    training process (docs/model.md, "Training step profile"). TPSMM's colour jitter also hands back 8-bit
    images (it jitters PIL images), so the rounding is the released code's, not a loss of ours.

    Not :func:`cpabanim.data.frames.to_uint8`: that one rounds ties to even, which differs on about 5 values in
    a million; training data keeps its own formula so that it stays bit-identical to what models were trained on.
    """
    if frames.dtype == torch.uint8:
        return frames
    return frames.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def _colour_jitter(frames: torch.Tensor, aug: PairAugmentation) -> torch.Tensor:
    """ColorJitter with drawn factors, in the drawn order, on float (2, 3, H, W): one colour change per pair.

    The four operations are torchvision's formulas (``adjust_brightness`` ... ``adjust_hue``, equal to 2e-6)
    written with fewer passes over the pixels: torchvision's HSV round trip alone costs ~23 ms per 256 px
    pair on one core, this hue shift ~3 ms (docs/model.md, "Training step profile").
    """
    operations = (
        (_adjust_brightness, aug.brightness),
        (_adjust_contrast, aug.contrast),
        (_adjust_saturation, aug.saturation),
        (_shift_hue, aug.hue),
    )
    for index in aug.jitter_order:
        function, factor = operations[index]
        if factor is not None:
            frames = function(frames, factor)
    return frames.clamp(0, 1)


def _grayscale(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 1, H, W): ITU-R 601 luma, as torchvision's ``rgb_to_grayscale``."""
    r, g, b = frames.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(frames: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """factor * frames + (1 - factor) * other, clamped to [0, 1] (torchvision's ``_blend``)."""
    return (frames * factor).add_(other * (1.0 - factor)).clamp_(0, 1)


def _adjust_brightness(frames: torch.Tensor, factor: float) -> torch.Tensor:
    return (frames * factor).clamp_(0, 1)


def _adjust_contrast(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend each frame with the mean of its own grayscale image."""
    return _blend(frames, _grayscale(frames).mean(dim=(-3, -2, -1), keepdim=True), factor)


def _adjust_saturation(frames: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(frames, _grayscale(frames), factor)


def _shift_hue(frames: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the HSV hue of float (..., 3, H, W) in [0, 1] by ``shift`` turns, keeping S and V.

    Hue in sixths from the max channel (red, then green, then blue on ties, as torchvision), shifted, then
    each channel n = 5, 3, 1 (r, g, b) is V - C * clamp(min(k, 4 - k), 0, 1) with k = (n + hue) mod 6.
    """
    r, g, b = frames.unbind(-3)
    value, low = frames.amax(-3), frames.amin(-3)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue + shift * 6) % 6
    k = torch.stack([(5 + hue) % 6, (3 + hue) % 6, (1 + hue) % 6], dim=-3)
    return value.unsqueeze(-3) - chroma.unsqueeze(-3) * torch.minimum(k, 4 - k).clamp_(0, 1)


def _resize_crop(
    frames: torch.Tensor, masks: torch.Tensor | None, resized: tuple[int, int], crop: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize float (2, 3, H, W) to ``resized``, zero-pad to at least (H, W), cut the (H, W) window at ``crop``."""
    height, width = frames.shape[-2:]
    new_h, new_w = resized
    frames = F.interpolate(
        frames, size=resized, mode="bilinear", align_corners=False, antialias=new_h < height or new_w < width
    )
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=resized, mode="nearest")[:, 0].long()
    pad_h, pad_w = max(0, height - new_h), max(0, width - new_w)
    if pad_h or pad_w:
        frames = F.pad(frames, (0, pad_w, 0, pad_h))
        masks = F.pad(masks, (0, pad_w, 0, pad_h)) if masks is not None else None
    top, left = crop
    frames = frames[..., top : top + height, left : left + width].contiguous()
    masks = masks[..., top : top + height, left : left + width].contiguous() if masks is not None else None
    return frames, masks
