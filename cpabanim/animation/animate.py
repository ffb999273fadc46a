"""The one animation loop: a source image driven by a video, chunk by chunk (the animate stage and ``cpabanim demo``).

Motion is relative to the driving video's first frame (:meth:`cpabanim.models.full.AnimationModel.animation_keypoints`
computes the keypoints of each mode); the background affine is never used, the source and the driving video
being different scenes (as TPSMM's demo). :func:`animate_frames` starts the relative motion at any frame, as
FOMM's ``find_best_frame``, and keeps the explanation of the frame that moves most.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from cpabanim.models.full import ANIMATION_MODES

Chunk = tuple[torch.Tensor, dict[str, Any], torch.Tensor]  # driving chunk, generator output, detected keypoints


@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    """The model in eval mode for the block, its training flag restored after (a model being trained may animate)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def animate_chunks(
    model, source: torch.Tensor, driving: torch.Tensor, mode: str, batch_size: int = 8
) -> Iterator[Chunk]:
    """Animate source (1, 3, S, S) with driving (T, 3, S, S) in [0, 1], motion relative to driving frame 0.

    Yields per chunk of at most ``batch_size`` frames: (driving chunk (n, 3, S, S), the generator's output dict
    (``prediction`` (n, 3, S, S), ``kp_driving`` = the keypoints it was driven with, ...), the keypoints detected
    on the chunk (n, K, 2)).
    """
    if mode not in ANIMATION_MODES:
        raise ValueError(f"animation mode must be one of {ANIMATION_MODES}, got {mode!r}")
    with _eval_mode(model):
        kp_source = model.kp_detector(source)
        kp_first = model.kp_detector(driving[:1])
        for chunk in driving.split(batch_size):
            n = chunk.shape[0]
            kp_detected = model.kp_detector(chunk)
            kp_driving = model.animation_keypoints(kp_source, kp_detected, kp_first, mode)
            # bg_param None: no background motion between two different scenes (as TPSMM's demo)
            out = model.generate(source.expand(n, -1, -1, -1), kp_source.expand(n, -1, -1), kp_driving, None)
            yield chunk, out, kp_detected


def animate_video(
    model, source: torch.Tensor, driving: torch.Tensor, mode: str = "relative", batch_size: int = 8
) -> torch.Tensor:
    """source (1, 3, S, S), driving (T, 3, S, S) in [0, 1] -> the animated frames (T, 3, S, S)."""
    return torch.cat([out["prediction"] for _, out, _ in animate_chunks(model, source, driving, mode, batch_size)])


@torch.no_grad()
def animate_frames(
    model,
    source: np.ndarray,
    driving: np.ndarray,
    mode: str,
    start: int,
    device: torch.device,
    batch_size: int = 8,
    on_frames: Callable[[int], Any] = lambda n: None,
) -> tuple[np.ndarray, Any]:
    """Animate uint8 source (S, S, 3) with driving (T, S, S, 3), relative motion from frame ``start``.

    From ``start > 0`` the video is animated forwards from ``start`` and backwards from it down to frame 0
    (FOMM's find_best_frame), then put back in order. Returns (uint8 (T, S, S, 3) result, the
    :class:`~cpabanim.viz.motion.FrameExplanation` of the frame whose keypoints moved most).
    ``on_frames(n)`` is called after each chunk of n frames (progress).
    """
    from cpabanim.data.frames import to_frames, to_tensor

    source_t = to_tensor(source[None]).to(device)
    parts = [list(range(start, len(driving)))]
    if start > 0:
        parts.insert(0, list(range(start, -1, -1)))
    result = np.empty_like(driving)
    most_motion, explanation = -1.0, None
    for indices in parts:
        frames = to_tensor(driving[indices]).to(device)
        done = 0
        for chunk, out, kp_detected in animate_chunks(model, source_t, frames, mode, batch_size):
            n = chunk.shape[0]
            result[indices[done : done + n]] = to_frames(out["prediction"].float())
            most_motion, explanation = _most_moving(
                model, out, chunk, kp_detected, source_t, indices, done, most_motion, explanation
            )
            done += n
            on_frames(n)
    return result, explanation


def _most_moving(
    model,
    out: dict[str, Any],
    chunk: torch.Tensor,
    kp_detected: torch.Tensor,
    source: torch.Tensor,
    indices: list[int],
    done: int,
    most_motion: float,
    explanation: Any,
) -> tuple[float, Any]:
    """(motion, explanation) of the frame whose keypoints moved most so far: the chunk's, when one of its frames
    moved more than ``most_motion`` (mean keypoint displacement from the source's)."""
    from cpabanim.viz.motion import explanation_from_output

    motion = (out["kp_driving"] - out["kp_source"]).norm(dim=-1).mean(dim=-1)  # (n,)
    best = int(motion.argmax())
    if float(motion[best]) <= most_motion:
        return most_motion, explanation
    return float(motion[best]), explanation_from_output(
        out,
        best,
        source[0],
        chunk[best],
        model.params["motion"],
        model.num_groups,
        kp_detected=kp_detected[best],
        title=f"frame {indices[done + best]}",
    )
