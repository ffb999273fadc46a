"""Face crops on real talking-face clips (../shared/data/faces): the crop is stable and centred on the face."""

from __future__ import annotations

import numpy as np
import pytest

from cpabanim.data.faces import detect_faces, face_crop_video, stable_crop_boxes
from cpabanim.data.video import read_video
from cpabanim.errors import DataError
from tests.conftest import SHARED_FACES, requires_faces


def test_stable_crop_boxes_smooth_jitter_and_fill_gaps():
    rng = np.random.default_rng(0)
    t = np.arange(40)
    centre = np.stack([100 + 2 * t, 120 + 0 * t], axis=1).astype(float)
    jitter = rng.normal(0, 4, size=(40, 2))
    boxes = np.concatenate([centre + jitter - 30, centre + jitter + 30], axis=1)
    boxes[10:14] = np.nan  # missed detections
    crops = stable_crop_boxes(boxes, margin=0.5, sigma=3.0)
    assert not np.isnan(crops).any()
    sides = crops[:, 2] - crops[:, 0]
    assert np.allclose(sides, sides[0]) and abs(sides[0] - 90) < 1  # one size for the clip: no zoom jitter
    smoothed = (crops[:, :2] + crops[:, 2:]) / 2
    assert np.abs(np.diff(smoothed, 2, axis=0)).mean() < 0.3 * np.abs(np.diff(centre + jitter, 2, axis=0)).mean()
    with pytest.raises(DataError, match="no face"):
        stable_crop_boxes(np.full((5, 4), np.nan), 0.5, 3.0)


@requires_faces
@pytest.mark.parametrize("clip", ["d0.mp4", "d11.mp4"])
def test_face_crop_on_real_clips_is_stable_and_centred(clip):
    frames = read_video(SHARED_FACES / clip, max_frames=10, stride=3)
    crops, boxes = face_crop_video(frames, 128, margin=0.8, sigma=3.0)
    assert crops.shape == (10, 128, 128, 3) and crops.dtype == np.uint8
    side = boxes[0, 2] - boxes[0, 0]
    # stable: the crop glides (centre steps are a small fraction of its side), its size never changes
    assert np.allclose(boxes[:, 2] - boxes[:, 0], side)
    assert np.abs(np.diff((boxes[:, :2] + boxes[:, 2:]) / 2, axis=0)).max() < 0.05 * side
    # centred: re-detecting the face inside the crops finds it near the middle, at a sensible size
    found = 0
    for crop in crops[::3]:
        faces = detect_faces(crop)
        if len(faces):
            found += 1
            centre = (faces[0, :2] + faces[0, 2:]) / 2
            assert np.abs(centre - 64).max() < 0.15 * 128
            assert 0.35 * 128 < faces[0, 2] - faces[0, 0] < 0.8 * 128
    assert found >= 2
