"""The image grid the trainer logs every ``train.image_every`` steps."""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import torch


def image_grid(batch: dict[str, Any], generated: dict[str, Any], max_rows: int = 4) -> np.ndarray:
    """(H*rows, W*5, 3) uint8: source+kp / driving+kp / prediction / deformed / occlusion, one row per sample."""
    rows = []
    for i in range(min(max_rows, batch["source"].shape[0])):
        cells = [draw_keypoints(batch["source"][i], generated["kp_source"][i]),
                 draw_keypoints(batch["driving"][i], generated["kp_driving"][i]),
                 to_uint8(generated["prediction"][i]), to_uint8(generated["deformed"][i]),
                 to_uint8(generated["occlusion_map"][-1][i].expand(3, -1, -1))]
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def draw_keypoints(image: torch.Tensor, kp: torch.Tensor) -> np.ndarray:
    """(3, H, W) image and (K, 2) keypoints in [-1, 1] -> uint8 (H, W, 3) with a 3x3 dot per keypoint."""
    out = to_uint8(image).copy()
    h, w = out.shape[:2]
    pts = ((kp.detach().float().cpu().numpy() + 1) / 2 * [w - 1, h - 1]).round().astype(int)
    for j, (x, y) in enumerate(pts):
        r, g, b = colorsys.hsv_to_rgb(j / max(len(pts), 1), 1.0, 1.0)
        out[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = (int(r * 255), int(g * 255), int(b * 255))
    return out
