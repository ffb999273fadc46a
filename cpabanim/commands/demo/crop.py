"""The demo's inputs brought to the model's resolution: the photo's face crop box (the largest face, or the
``--face N``-th largest), the driving video's face tracked over all its frames in one streaming pass (boxes only:
the stable crop's smoothing needs the whole track, the frames are not kept), and each chunk cropped.

Contract: detection, tracking and the stable crop are :mod:`cpabanim.data.faces` (the ``folder`` source's, one
home); a photo or video without a face is one :class:`~cpabanim.errors.DataError` line naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.commands.demo.stream import DrivingVideo
from cpabanim.errors import DataError

Prepare = Callable[[int, np.ndarray], np.ndarray]  # (first frame index, uint8 (n, H, W, 3)) -> (n, S, S, 3)


def photo_crop_box(photo: np.ndarray, face_index: int, margin: float, path: Path) -> np.ndarray:
    """The square crop box float (4,) (x0, y0, x1, y1) around the photo's ``face_index``-th largest face
    (0 = the largest), its side the face's times ``1 + margin`` as the video crops'."""
    from cpabanim.data.faces import detect_faces, searched_min_face, stable_crop_boxes

    faces = detect_faces(photo)
    if not len(faces):
        smallest = searched_min_face(*photo.shape[:2])
        raise DataError(
            f"no face found in the photo {path} (faces of {smallest:.0f} px and up are searched; "
            "use --crop none to animate it uncropped)"
        )
    if face_index >= len(faces):
        raise DataError(
            f"--face {face_index}: the photo {path} has {len(faces)} face(s); --face counts from 0 (the largest)"
        )
    return stable_crop_boxes(faces[face_index][None], margin, sigma=0.0)[0]


def driving_crop_boxes(video: DrivingVideo, options: dict[str, Any]) -> np.ndarray:
    """Stable square crop boxes float (T, 4) of the driving video's face: tracked chunk by chunk, then
    smoothed over the whole track (:func:`cpabanim.data.faces.stable_crop_boxes`)."""
    from cpabanim.data.faces import DEFAULT_MARGIN, DEFAULT_SIGMA, FaceTracker, stable_crop_boxes

    tracker = FaceTracker(options.get("detect_every", 1))
    boxes = np.full((video.count, 4), np.nan)
    for start, frames in video.chunks():
        boxes[start : start + len(frames)] = tracker(frames)[: video.count - start]
    try:
        return stable_crop_boxes(boxes, options.get("margin", DEFAULT_MARGIN), options.get("sigma", DEFAULT_SIGMA))
    except DataError as err:
        raise DataError(f"{video.path}: {err} (use --crop none to animate it uncropped)") from err


def face_prepare(boxes: np.ndarray, size: int) -> Prepare:
    """Chunks of the driving video -> their face crops, ``size`` px, with the boxes of the whole track."""
    from cpabanim.data.faces import crop_frames

    return lambda start, frames: crop_frames(frames, boxes[start : start + len(frames)], size)


def square_prepare(size: int, path: Path) -> Prepare:
    """Chunks -> their centre squares resized to ``size`` (the ``folder`` source's crop without faces)."""
    from cpabanim.data.listing import centre_square
    from cpabanim.data.video import resize_frames

    return lambda start, frames: resize_frames(centre_square(frames), size, source=path)
