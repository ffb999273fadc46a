"""Face crops for the ``folder`` source: detect (dlib's HOG detector, offline), track, smooth, crop, resize.

A crop box that follows every detection jitters, and the model would learn the jitter as motion. So the
detections are tracked (the face nearest the previous one), gaps are interpolated, the centre is smoothed
over time with a Gaussian, and the box *size* is one number for the whole clip (the median face size times
``1 + margin``): the crop only glides with the head, it does not zoom.
"""

from __future__ import annotations

import functools

import numpy as np

from cpabanim.errors import DataError


@functools.lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


def detect_faces(frame: np.ndarray, max_side: int = 320) -> np.ndarray:
    """Face boxes ``float (N, 4)`` as (x0, y0, x1, y1) in pixels of ``frame`` (uint8 (H, W, 3))."""
    import cv2

    scale = min(1.0, max_side / max(frame.shape[:2]))
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
    gray = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
    rects = _detector()(gray, 1)  # upsample once: finds faces down to ~40 px at this size
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale


def track_boxes(frames: np.ndarray, detect_every: int = 1) -> np.ndarray:
    """One face box per frame ``float (T, 4)``, following one face; NaN rows where none was found."""
    boxes = np.full((len(frames), 4), np.nan)
    previous = None
    for t in range(0, len(frames), max(1, detect_every)):
        found = detect_faces(frames[t])
        if not len(found):
            continue
        if previous is None:  # start with the largest face
            pick = np.argmax((found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1]))
        else:  # then stay with the face nearest the one tracked so far
            centres = (found[:, :2] + found[:, 2:]) / 2
            pick = np.argmin(np.linalg.norm(centres - (previous[:2] + previous[2:]) / 2, axis=1))
        boxes[t] = previous = found[pick]
    return boxes


def stable_crop_boxes(boxes: np.ndarray, margin: float, sigma: float) -> np.ndarray:
    """Smoothed square crop boxes ``float (T, 4)`` (x0, y0, x1, y1) from tracked face boxes (NaN = missed).

    Missed frames are interpolated from their neighbours, the centre is Gaussian-smoothed over time
    (``sigma`` frames) and the side is the clip's median face side times ``1 + margin``.
    """
    from scipy.ndimage import gaussian_filter1d

    found = ~np.isnan(boxes[:, 0])
    if not found.any():
        raise DataError("no face detected in any frame")
    times = np.arange(len(boxes))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    centres = np.stack([np.interp(times, times[found], centres[found, k]) for k in range(2)], axis=1)
    if sigma > 0 and len(boxes) > 1:
        centres = gaussian_filter1d(centres, sigma, axis=0, mode="nearest")
    sides = np.maximum(boxes[found, 2] - boxes[found, 0], boxes[found, 3] - boxes[found, 1])
    half = float(np.median(sides)) * (1 + margin) / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def crop_frames(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop ``uint8 (T, H, W, 3)`` with square boxes ``(T, 4)`` (edges replicated outside) -> ``(T, size, size, 3)``."""
    import cv2

    out = []
    for frame, (x0, y0, x1, y1) in zip(frames, boxes):
        # an affine map from the box to the output square: sub-pixel positions, no rounding jitter
        scale = size / (x1 - x0)
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out.append(cv2.warpAffine(frame, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


def face_crop_video(
    frames: np.ndarray, size: int, margin: float = 0.8, sigma: float = 3.0, detect_every: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Detect, track and crop the face of a clip: ``(uint8 (T, size, size, 3), crop boxes float (T, 4))``."""
    boxes = stable_crop_boxes(track_boxes(frames, detect_every), margin, sigma)
    return crop_frames(frames, boxes, size), boxes
