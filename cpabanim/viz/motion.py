"""What the explanation pictures show, as data: one generated frame's keypoints, dense motion, occlusion and
contribution maps (:class:`FrameExplanation`, picked from a model's output dict), the names and colours of the
blended transforms, and the maths of the flow pictures (pixels, motion vectors, the colour wheel).

Contract: everything here is numpy on the CPU and draws nothing; :mod:`cpabanim.viz.explain` draws the pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BACKGROUND_COLOUR = (0.6, 0.6, 0.6)
GLOBAL_COLOUR = (0.05, 0.05, 0.05)


@dataclass(frozen=True)
class FrameExplanation:
    """Everything the pictures of one frame need, on the CPU (H, W: image size; h, w: dense motion size).

    Keypoints are (x, y) in [-1, 1]; ``kp_driving`` are the ones detected on the driving frame,
    ``kp_animated`` the ones the generator was driven with (equal in reconstruction, different in relative
    and avd animation).
    """

    source: np.ndarray  # uint8 (H, W, 3)
    driving: np.ndarray  # uint8 (H, W, 3)
    result: np.ndarray  # uint8 (H, W, 3)
    kp_source: np.ndarray  # float (K, 2)
    kp_driving: np.ndarray  # float (K, 2)
    kp_animated: np.ndarray  # float (K, 2)
    deformation: np.ndarray  # float (h, w, 2): backward grid, where each result pixel samples the source
    occlusion: np.ndarray  # float (H', W') in [0, 1]: 1 = visible in the warped source
    contributions: np.ndarray  # float (T, h, w), softmax over T
    deformed_sources: np.ndarray  # float (T, h, w, 3) in [0, 1]: the source warped by each transform alone
    motion: str  # "cpab" | "tps"
    num_groups: int
    title: str = ""


def transform_names(motion: str, num_groups: int) -> list[str]:
    """Names of the T blended transforms, in the dense motion network's order (background first)."""
    if motion == "tps":
        return ["background affine"] + [f"TPS {n + 1}" for n in range(num_groups)]
    return ["background affine"] + [f"partial CPAB {n + 1}" for n in range(num_groups)] + ["global CPAB"]


def group_colours(num_groups: int) -> np.ndarray:
    """One colour per keypoint group, float (N, 3) in [0, 1]; the same colour marks its transform."""
    from matplotlib import colormaps

    if num_groups <= 9:  # tab10 without its grey, which is the background's colour
        palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
        return np.asarray(palette[:num_groups], dtype=float)
    return colormaps["hsv"](np.linspace(0, 1, num_groups, endpoint=False))[:, :3]


def transform_colours(motion: str, num_groups: int) -> np.ndarray:
    """float (T, 3): grey for the background, the group colours, near-black for the global CPAB."""
    rows = [BACKGROUND_COLOUR, *group_colours(num_groups)]
    if motion != "tps":
        rows.append(GLOBAL_COLOUR)
    return np.asarray(rows, dtype=float)


def _image(tensor: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    return (tensor.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def explanation_from_output(
    out: dict[str, Any],
    index: int,
    source: torch.Tensor,
    driving: torch.Tensor,
    motion: str,
    num_groups: int,
    kp_detected: torch.Tensor | None = None,
    title: str = "",
) -> FrameExplanation:
    """Pick sample ``index`` of a ``generate`` / ``reconstruct`` output dict.

    source, driving: (3, H, W) in [0, 1]; kp_detected: (K, 2) keypoints detected on the driving frame when
    they differ from the ones the generator used (``out["kp_driving"]``), as in relative / avd animation.
    """
    occlusion = out["occlusion_map"]
    finest = occlusion[-1] if isinstance(occlusion, (list, tuple)) else occlusion  # reconstruct keeps the finest
    kp_animated = out["kp_driving"][index]
    deformed = out["deformed_source"][index]  # (T, C, h, w)
    return FrameExplanation(
        source=_image(source),
        driving=_image(driving),
        result=_image(out["prediction"][index]),
        kp_source=out["kp_source"][index].detach().float().cpu().numpy(),
        kp_driving=(kp_animated if kp_detected is None else kp_detected).detach().float().cpu().numpy(),
        kp_animated=kp_animated.detach().float().cpu().numpy(),
        deformation=out["deformation"][index].detach().float().cpu().numpy(),
        occlusion=finest[index, 0].detach().float().cpu().numpy(),
        contributions=out["contribution_maps"][index].detach().float().cpu().numpy(),
        deformed_sources=deformed.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy(),
        motion=motion,
        num_groups=num_groups,
        title=title,
    )


def resize_map(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w[, C]) float -> (height, width[, C]), bilinear (maps at the dense motion's resolution -> image's)."""
    import cv2

    if array.shape[:2] == (height, width):
        return array
    return cv2.resize(np.ascontiguousarray(array, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def to_pixels(kp: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 2) (x, y) in [-1, 1] -> pixel coordinates (K, 2) (align_corners=True convention, as grid_sample)."""
    return (kp + 1) / 2 * np.array([width - 1, height - 1])


def motion_vectors(deformation: np.ndarray, height: int, width: int) -> np.ndarray:
    """The motion of the source's content in pixels, float (height, width, 2): result pixel p shows source
    pixel q = deformation(p), so the content moved by p - q (the negated backward flow)."""
    h, w = deformation.shape[:2]
    ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    identity = np.stack([xs, ys], axis=-1)
    moved = (identity - deformation) * np.array([(width - 1) / 2, (height - 1) / 2])
    return resize_map(moved, height, width)


def flow_to_rgb(vectors: np.ndarray, max_length: float | None = None) -> np.ndarray:
    """(H, W, 2) vectors -> float RGB (H, W, 3): hue = direction, saturation = length / max_length (white = still)."""
    from matplotlib.colors import hsv_to_rgb

    length = np.linalg.norm(vectors, axis=-1)
    max_length = max_length or max(float(length.max()), 1e-6)
    hue = (np.arctan2(vectors[..., 1], vectors[..., 0]) / (2 * np.pi)) % 1.0
    saturation = np.clip(length / max_length, 0, 1)
    return hsv_to_rgb(np.stack([hue, saturation, np.ones_like(hue)], axis=-1))


def colour_wheel(size: int = 101) -> np.ndarray:
    """float RGBA (size, size, 4): the legend of :func:`flow_to_rgb` (transparent outside the disc)."""
    ys, xs = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    rgb = flow_to_rgb(np.stack([xs, ys], axis=-1), max_length=1.0)
    alpha = (np.hypot(xs, ys) <= 1).astype(float)[..., None]
    return np.concatenate([rgb, alpha], axis=-1)
