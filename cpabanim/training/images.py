"""The image grid the trainer logs every ``train.image_every`` steps."""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import torch

from cpabanim.data.frames import to_frames


def image_grid(batch: dict[str, Any], generated: dict[str, Any], max_rows: int = 4) -> np.ndarray:
    """(H*rows, W*5, 3) uint8: source+kp / driving+kp / prediction / deformed / occlusion, one row per sample."""
    rows = []
    for i in range(min(max_rows, batch["source"].shape[0])):
        cells = [
            draw_keypoints(batch["source"][i], generated["kp_source"][i]),
            draw_keypoints(batch["driving"][i], generated["kp_driving"][i]),
            to_image(generated["prediction"][i]),
            to_image(generated["deformed"][i]),
            to_image(generated["occlusion_map"][-1][i].expand(3, -1, -1)),
        ]
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def to_image(image: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) in [0, 1] -> uint8 (H, W, 3), rounded as every frame the project writes
    (:func:`cpabanim.data.frames.to_uint8`)."""
    return to_frames(image[None].float())[0]


def draw_keypoints(image: torch.Tensor, kp: torch.Tensor) -> np.ndarray:
    """(3, H, W) image and (K, 2) keypoints in [-1, 1] -> uint8 (H, W, 3) with a 3x3 dot per keypoint."""
    out = to_image(image).copy()
    h, w = out.shape[:2]
    pts = ((kp.detach().float().cpu().numpy() + 1) / 2 * [w - 1, h - 1]).round().astype(int)
    for j, (x, y) in enumerate(pts):
        r, g, b = colorsys.hsv_to_rgb(j / max(len(pts), 1), 1.0, 1.0)
        out[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = (int(r * 255), int(g * 255), int(b * 255))
    return out
