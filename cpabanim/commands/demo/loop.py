"""The demo's passes over the driving video, a chunk at a time: the landmarks of ``--find-best-frame`` and the
animation itself (each chunk animated relative to one reference frame, so chunks are independent).

Contract: the animation is :func:`cpabanim.animation.animate.animate_frames` on each chunk with the reference
frame put first (the frame relative motion starts from: frame 0, or the best frame), so the frames it returns
equal one call on the whole video, forwards and backwards from the best frame (each frame's motion depends only
on the source, the reference and that frame).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.errors import DataError, MissingWeightsError

log = logging.getLogger(__name__)

# dlib's HOG detector misses faces below ~80 px: landmarks for --find-best-frame are taken on upscaled frames.
LANDMARK_MIN_SIDE = 256


def landmarks(extractor, frames: np.ndarray) -> np.ndarray:
    """dlib's 68 face landmarks of uint8 (T, S, S, 3) crops -> (T, 68, 2), NaN where no face is found."""
    from cpabanim.data.video import resize_frames

    return extractor(resize_frames(frames, max(frames.shape[1], LANDMARK_MIN_SIDE)))


def best_frame(inputs, source_path: Path) -> int:
    """The driving frame whose normalised landmarks are closest (squared distance) to the source's (FOMM's
    ``find_best_frame``), in one streaming pass over the driving video (landmarks only); frames without a face
    are skipped, frame 0 when no frame has one. ``inputs``: a :class:`~cpabanim.commands.demo.photo.DemoInputs`."""
    from cpabanim.evaluation.extractors import DlibFaceLandmarks, ExtractorUnavailable
    from cpabanim.evaluation.formulas import pose_distance_per_frame

    try:
        extractor = DlibFaceLandmarks()
    except ExtractorUnavailable as err:
        raise MissingWeightsError(f"--find-best-frame needs face landmarks: {err}") from err
    source = landmarks(extractor, inputs.source[None])[0]
    if np.isnan(source).any():
        raise DataError(f"{source_path}: no face landmarks found in the photo (needed by --find-best-frame)")
    distances = np.full(inputs.driving.count, np.inf)
    for start, frames in inputs.driving.chunks():
        found = pose_distance_per_frame(landmarks(extractor, inputs.prepare(start, frames)), source)
        # a frame without a face is never the best
        distances[start : start + len(found)] = np.where(np.isnan(found), np.inf, found)[: len(distances) - start]
    if not np.isfinite(distances).any():
        log.warning("no face landmarks in the driving video: --find-best-frame starts at frame 0")
        return 0
    return int(np.argmin(distances))


def animate_stream(
    model, inputs, mode: str, start: int, device: torch.device, batch_size: int = 8
) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
    """Animate ``inputs`` (a :class:`~cpabanim.commands.demo.photo.DemoInputs`) chunk by chunk, relative motion
    from driving frame ``start``. Yields per chunk (driving crops uint8 (n, S, S, 3), result uint8 (n, S, S, 3),
    the :class:`~cpabanim.viz.motion.FrameExplanation` of the chunk's frame that moves most, titled with its
    frame index in the whole video)."""
    from cpabanim.animation.animate import animate_frames

    reference = inputs.prepare(start, inputs.driving.read(start, start + 1))
    for first, frames in inputs.driving.chunks():
        crops = inputs.prepare(first, frames)
        result, explanation = animate_frames(
            model, inputs.source, np.concatenate([reference, crops]), mode, 0, device, batch_size
        )
        yield crops, result[1:], _retitled(explanation, lambda k: start if k == 0 else first + k - 1)


def _retitled(explanation, index_of) -> Any:
    """The explanation titled ``frame i`` with ``i`` its index in the whole video (``animate_frames`` titles
    it with its index in the chunk it was given: ``index_of`` maps one to the other)."""
    found = re.fullmatch(r"frame (\d+)", explanation.title or "")
    return replace(explanation, title=f"frame {index_of(int(found.group(1)))}") if found else explanation


def motion(explanation) -> float:
    """How far the frame's keypoints moved from the source's (mean distance): what picks the frame explained."""
    return float(np.linalg.norm(explanation.kp_animated - explanation.kp_source, axis=-1).mean())


def more_moving(best, candidate):
    """Of two explanations (``best`` may be None), the one whose frame moves most (:func:`motion`)."""
    return candidate if best is None or motion(candidate) > motion(best) else best
