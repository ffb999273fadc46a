"""Paste-back: the animated face crop (the model's resolution) put back into the original photo at its own
resolution, under a feathered border, so the result is the whole photo with the face moving.

Contract: pure functions on uint8 numpy frames; nothing here reads or writes files. The crop box is the one
:func:`cpabanim.data.faces.crop_frames` cut the photo's crop with (it may reach past the photo's edges).
"""

from __future__ import annotations

import numpy as np

# The border over which the pasted crop fades into the photo, as a fraction of the crop's side: the crop's
# margin (docs/data.md) leaves ~20 % of background on each side of the face, so a 12 % fade stays off the face.
FEATHER = 0.12


def feather_mask(size: int, feather: float = FEATHER) -> np.ndarray:
    """float32 (size, size) in [0, 1]: 1 inside, a smooth (cosine) fall to 0 over the outer ``feather * size``
    pixels of each side, so no seam shows where the animated crop meets the still photo."""
    ramp = max(1.0, feather * size)
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5  # to the nearest edge, pixel centres
    edge = np.clip(distance / ramp, 0.0, 1.0)
    edge = 0.5 - 0.5 * np.cos(np.pi * edge)
    return np.minimum(edge[:, None], edge[None, :]).astype(np.float32)


def paste_back(photo: np.ndarray, crops: np.ndarray, box: np.ndarray, feather: float = FEATHER) -> np.ndarray:
    """Blend animated crops into the photo: uint8 photo (H, W, 3), crops (T, S, S, 3), square box float (4,)
    (x0, y0, x1, y1) in photo pixels -> uint8 (T, H, W, 3).

    Each crop is mapped onto the box (the inverse of the crop's affine map: sub-pixel, bilinear) and mixed with
    the photo by :func:`feather_mask`; pixels outside the box are the photo's, unchanged.
    """
    import cv2

    size = crops.shape[1]
    height, width = photo.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    # the region of the photo the box covers, in whole pixels
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    out = np.repeat(photo[None], len(crops), axis=0)
    if right <= left or bottom <= top:
        return out
    scale = (x1 - x0) / size
    # crop pixel (u, v) -> region pixel (x0 - left + u * scale, ...): the exact inverse of crop_frames' map
    matrix = np.array([[scale, 0, x0 - left], [0, scale, y0 - top]], dtype=np.float64)
    region = (right - left, bottom - top)
    mask = cv2.warpAffine(feather_mask(size, feather), matrix, region, flags=cv2.INTER_LINEAR)[..., None]
    still = photo[top:bottom, left:right].astype(np.float32)
    for t, crop in enumerate(crops):
        moved = cv2.warpAffine(crop, matrix, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        blended = mask * moved.astype(np.float32) + (1.0 - mask) * still
        out[t, top:bottom, left:right] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
