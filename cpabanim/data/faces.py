"""Face crops for the ``folder`` source and ``cpabanim demo``: detect (dlib's HOG detector, offline), track,
smooth, crop, resize.

Faces of every size: :func:`detect_faces` searches one image pyramid whose finest level makes a
:data:`MIN_FACE` px face as big as the detector's smallest (dlib's 80 px HOG window, upsampled once: ~40 px), so
faces from ~30 px to the whole frame are found. Measured on clip frames pasted into 720x1080 frames (docs/data.md,
"Face detection"): this finds 30-400 px faces in every case at ~0.4-0.7 s a frame on one core, where dlib's CNN
detector (``mmod_human_face_detector.dat``) took 8-16 s and missed faces under ~50 px; the previous search on the
frame shrunk to 320 px missed every face under ~100 px. Tracking a video (:class:`FaceTracker`) searches the
whole frame once, then a small region around the last face, rescaled so that face is :data:`TRACK_FACE` px.

A crop box that follows every detection jitters, and the model would learn the jitter as motion. So the
detections are tracked (the face nearest the previous one), gaps are interpolated, the centre is smoothed
over time with a Gaussian, and the box *size* is one number for the whole clip (the median face size times
``1 + margin``): the crop only glides with the head, it does not zoom.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from cpabanim.errors import DataError

# The smallest face searched (px of the frame given).
MIN_FACE = 30
# dlib's HOG window is 80 px; with one upsampling it finds faces of ~40 px in the image it is given.
HOG_MIN_FACE = 40
# The image the detector sees is at most this long: a 1080 px frame is searched down to 30 px faces; a larger
# photo down to 1/36 of its long side (a 4000 px photo: 111 px faces), so the search stays within ~1 s.
MAX_SEARCH_SIDE = 1440
# In tracking, the region around the last face (TRACK_REGION times its side) is rescaled so that face is
# TRACK_FACE px: the window (80 px) then finds it from 0.67x to TRACK_REGION x its last size, in a few ms.
TRACK_FACE = 120
TRACK_REGION = 3.0
# The crop's defaults (data.folder's margin and smooth_sigma): a side of 1.8 face sides, smoothed over 3 frames.
DEFAULT_MARGIN = 0.8
DEFAULT_SIGMA = 3.0


@functools.lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


def searched_min_face(height: int, width: int, min_face: float = MIN_FACE) -> float:
    """The smallest face (px) :func:`detect_faces` searches in a ``height`` x ``width`` frame: ``min_face``, or
    more in frames longer than :data:`MAX_SEARCH_SIDE` (the search's cost grows with the pixels it scans)."""
    return max(float(min_face), HOG_MIN_FACE * max(height, width) / MAX_SEARCH_SIDE)


def _hog_boxes(image: np.ndarray, scale: float, upsample: int) -> np.ndarray:
    """dlib's HOG faces of uint8 (H, W, 3) ``image`` resized by ``scale``: float (N, 4) in ``image`` pixels."""
    import cv2

    if scale != 1:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interp)
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    rects = _detector()(gray, upsample)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale


def largest_first(boxes: np.ndarray) -> np.ndarray:
    """float (N, 4) boxes (x0, y0, x1, y1) sorted by area, largest first (``--face 0`` is the largest)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]


def detect_faces(frame: np.ndarray, min_face: float = MIN_FACE) -> np.ndarray:
    """Face boxes ``float (N, 4)`` as (x0, y0, x1, y1) in pixels of ``frame`` (uint8 (H, W, 3)), largest first.

    One pyramid covers every size from :func:`searched_min_face` px to the whole frame: the frame is resized so
    that face becomes the detector's smallest (:data:`HOG_MIN_FACE`), and dlib shrinks it level by level.
    """
    scale = HOG_MIN_FACE / searched_min_face(frame.shape[0], frame.shape[1], min_face)
    return largest_first(_hog_boxes(frame, scale, upsample=1))


def detect_near(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Faces ``float (N, 4)`` of ``frame`` found in the region around ``box`` (:data:`TRACK_REGION` times its
    side), rescaled so a face of the box's size is :data:`TRACK_FACE` px: cheap, whatever the face's size."""
    side = max(box[2] - box[0], box[3] - box[1], 1.0)
    centre = (box[:2] + box[2:]) / 2
    half = TRACK_REGION * side / 2
    x0, y0 = np.maximum(np.floor(centre - half), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(centre + half), [frame.shape[1], frame.shape[0]]).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((0, 4))
    found = _hog_boxes(frame[y0:y1, x0:x1], TRACK_FACE / side, upsample=0)
    return found + [x0, y0, x0, y0]


class FaceTracker:
    """Follows one face through a video given chunk by chunk (memory does not grow with the video's length).

    The first detection searches the whole frame (:func:`detect_faces`) and starts with the largest face; later
    ones search near the last face found (:func:`detect_near`) and stay with the face nearest it, searching the
    whole frame again when it is lost. Every ``detect_every``-th frame is searched (counted over all chunks).
    """

    def __init__(self, detect_every: int = 1) -> None:
        self.detect_every = max(1, int(detect_every))
        self.previous: np.ndarray | None = None
        self.seen = 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3), the next frames of the video -> their face boxes float (T, 4), NaN rows where none
        was found or searched."""
        boxes = np.full((len(frames), 4), np.nan)
        for t, frame in enumerate(frames):
            if (self.seen + t) % self.detect_every == 0:
                found = self._find(frame)
                if found is not None:
                    boxes[t] = self.previous = found
        self.seen += len(frames)
        return boxes

    def _find(self, frame: np.ndarray) -> np.ndarray | None:
        if self.previous is not None:
            found = detect_near(frame, self.previous)
            if not len(found):
                found = detect_faces(frame)
            if len(found):  # stay with the face nearest the one tracked so far
                centres = (found[:, :2] + found[:, 2:]) / 2
                return found[np.argmin(np.linalg.norm(centres - (self.previous[:2] + self.previous[2:]) / 2, axis=1))]
            return None
        found = detect_faces(frame)
        return found[0] if len(found) else None  # start with the largest face


def track_boxes(frames: np.ndarray, detect_every: int = 1) -> np.ndarray:
    """One face box per frame ``float (T, 4)``, following one face; NaN rows where none was found."""
    return FaceTracker(detect_every)(frames)


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
    frames: np.ndarray,
    size: int,
    margin: float = DEFAULT_MARGIN,
    sigma: float = DEFAULT_SIGMA,
    detect_every: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect, track and crop the face of a clip: ``(uint8 (T, size, size, 3), crop boxes float (T, 4))``."""
    boxes = stable_crop_boxes(track_boxes(frames, detect_every), margin, sigma)
    return crop_frames(frames, boxes, size), boxes


def face_crop_streamed(
    read: Callable[[Callable[[np.ndarray], np.ndarray]], np.ndarray],
    size: int,
    margin: float = DEFAULT_MARGIN,
    sigma: float = DEFAULT_SIGMA,
    detect_every: int = 1,
    source: object = "the clip",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`face_crop_video` of the clip ``read(shrink)`` decodes (``read_video``'s ``shrink``, given a chunk of
    frames at a time), decoded twice: once to track the face (boxes only, each chunk dropped once tracked), once to
    crop each chunk with the smoothed boxes of the whole track. The clip is never held at its decoded size: memory
    stays one chunk plus the crops, whatever its length. Same crops and boxes as :func:`face_crop_video`
    (tests/data/test_faces.py). A clip without a face is a :class:`DataError` naming ``source``; ``read``'s own
    errors pass as they are."""
    tracker, tracked = FaceTracker(detect_every), []

    def track(frames: np.ndarray) -> np.ndarray:
        tracked.append(tracker(frames))
        return frames[:, :1, :1]  # the frame count, nothing more

    read(track)
    try:
        boxes = stable_crop_boxes(np.concatenate(tracked), margin, sigma)
    except DataError as err:
        raise DataError(f"{source}: {err}") from err
    cropped = 0

    def crop(frames: np.ndarray) -> np.ndarray:
        nonlocal cropped
        out = crop_frames(frames, boxes[cropped : cropped + len(frames)], size)
        cropped += len(frames)
        return out

    return read(crop), boxes
