"""The synthetic videos' ground truth (cpabanim.data.synthetic_truth) agrees with the frames the generator renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpabanim.data import synthetic, synthetic_truth

SIZE, FRAMES = 64, 12


@pytest.fixture(scope="module", params=["small", "large"])
def video(request):
    """(motion size, frames uint8 (T, S, S, 3), track) of test video 1."""
    planned = synthetic.video_plan("test", 2, 0)[1]
    frames = synthetic.render_planned("test", 1, planned, FRAMES, SIZE, 0, request.param)
    return request.param, frames, synthetic.motion_parameters("test", 1, FRAMES, 0, request.param)


def test_the_part_map_is_what_differs_from_the_background(video):
    _, frames, track = video
    background = synthetic.still_background(synthetic.video_plan("test", 2, 0)[1][2], SIZE).astype(np.int16)
    centres = synthetic_truth.pixel_centres(SIZE)
    for t in (0, 5, 11):
        drawn = np.abs(frames[t].astype(np.int16) - background).max(axis=-1) > 8
        parts = synthetic_truth.part_map(centres, track, t)
        assert (drawn == (parts > 0)).mean() > 0.97  # the rest: anti-aliased edges, object pixels like the background
        assert {synthetic_truth.BODY, *synthetic_truth.LIMBS} <= set(np.unique(parts))


def test_a_frame_warped_to_itself_stays_put(video):
    _, _, track = video
    centres = synthetic_truth.pixel_centres(SIZE)
    warp, _ = synthetic_truth.backward_warp(centres, track, 4, 4)
    assert np.abs(warp - centres).max() < 1e-12


def test_keypoints_follow_the_true_warp(video):
    """A keypoint of the driving frame is carried by the true warp onto the same keypoint of the source frame,
    wherever its own part is on top."""
    _, _, track = video
    for t in (3, 7, 11):
        driving = synthetic_truth.keypoints(track, t)
        warp, parts = synthetic_truth.backward_warp(driving, track, t, 0)
        own = np.repeat([synthetic_truth.BODY, *synthetic_truth.LIMBS], synthetic_truth.POINTS_PER_PART)
        visible = parts == own
        assert visible[: synthetic_truth.POINTS_PER_PART].all()  # the body is always on top
        assert np.abs(warp[visible] - synthetic_truth.keypoints(track, 0)[visible]).max() < 1e-9
        assert np.abs(driving - synthetic_truth.keypoints(track, 0)).max() > 0.01  # and they did move


def test_the_true_warp_turns_the_source_frame_into_the_driving_frame(video):
    """Sampling frame 0 at the true warp of frame t reproduces frame t on the object: the error left is resampling
    and what frame 0 hides, far below copying frame 0."""
    size_name, frames, track = video
    source = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].double() / 255
    centres = synthetic_truth.pixel_centres(SIZE)
    for t in (4, 8):
        warp, parts = synthetic_truth.backward_warp(centres, track, t, 0)
        grid = torch.from_numpy(2 * (warp * SIZE - 0.5) / (SIZE - 1) - 1)[None]
        warped = torch.nn.functional.grid_sample(source, grid, align_corners=True)[0].permute(1, 2, 0).numpy()
        driving = frames[t] / 255
        seen = (parts > 0) & (synthetic_truth.part_map(warp, track, 0) == parts)  # the same part shows in frame 0
        warped_error = np.abs(warped - driving).mean(axis=-1)[seen].mean()
        copied_error = np.abs(frames[0] / 255 - driving).mean(axis=-1)[seen].mean()
        assert warped_error < 0.25 * copied_error, (size_name, t, warped_error, copied_error)
