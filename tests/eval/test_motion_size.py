"""The motion size of evaluated frames (cpabanim.evaluation.motion_size): on synthetic data the generator's ground
truth, on faces landmarks in inter-ocular distances, elsewhere dense optical flow in fractions of the frame; bins."""

from __future__ import annotations

import numpy as np
import pytest

from cpabanim.config.layers import load_params
from cpabanim.data import synthetic, synthetic_truth
from cpabanim.data.frames import read_frames
from cpabanim.data.layout import split_videos
from cpabanim.evaluation import motion_size
from cpabanim.evaluation.motion_size import MotionMeasure, bin_edges, bin_masks, in_bin


def test_synthetic_motion_size_is_the_generators_ground_truth(project):
    """Through the real preprocess and the processed dataset's manifest: each test video's motion size per frame is
    the mean distance the generator's 15 object points moved since frame 0, in fractions of the frame side."""
    from cpabanim.data.preprocess import preprocess

    sets = ["data.synthetic.num_test=3", "data.synthetic.num_frames=7", "data.synthetic.num_train=2"]
    params = load_params(project.params, overrides=[*project.base, *sets, "data.frame_size=32"])
    data = params["data"]
    preprocess(data, data["seed"], project.root / "raw", project.processed)
    measure = MotionMeasure(project.processed, "synthetic_moments", extractors=None)
    assert measure.name == motion_size.SYNTHETIC_TRUTH
    tests = split_videos(project.processed, "test")
    plan = [name for name, _, _ in synthetic.video_plan("test", 3, data["seed"])]
    assert sorted(tests) == sorted(plan)
    for index, name in enumerate(plan):
        frames = read_frames(tests[name])
        track = synthetic.motion_parameters("test", index, 7, data["seed"], data["synthetic"]["motion"])
        points = [synthetic_truth.keypoints(track, t) for t in range(len(frames))]
        truth = [np.mean([np.hypot(*(p - q)) for p, q in zip(points[t], points[0])]) for t in range(len(frames))]
        sizes = measure(name, frames)
        assert sizes.shape == (len(frames),) and sizes[0] == 0.0
        np.testing.assert_allclose(sizes, truth, rtol=1e-12, atol=1e-15)
        assert 0.005 < sizes[1:].mean() < 0.3  # the default's moderate motion, a fraction of the frame


def test_a_video_the_generator_did_not_name_has_no_synthetic_motion_size():
    config = {"data": {"synthetic": {"num_frames": 4, "motion": "small"}}, "seed": 0}
    assert np.isnan(motion_size.synthetic_motion(config, "someone.else", 4)).all()


def test_landmark_motion_is_in_interocular_distances():
    rng = np.random.default_rng(0)
    face = rng.uniform(20, 80, (68, 2))
    face[36], face[45] = (30.0, 40.0), (70.0, 40.0)  # outer eye corners 40 px apart
    moved = face + np.array([8.0, 6.0])  # 10 px = a quarter of the inter-ocular distance
    lost = moved.copy()
    lost[:10] = np.nan  # landmarks not found are left out, the others still count
    sizes = motion_size.landmark_motion(np.stack([face, moved, lost, np.full((68, 2), np.nan)]))
    np.testing.assert_allclose(sizes[:3], [0.0, 0.25, 0.25])
    assert np.isnan(sizes[3])  # no face: no motion size (the frame is in no bin)


def test_flow_motion_of_a_shifted_texture():
    """A smooth texture moved by 3 px: the mean flow magnitude is about 3 / the side (borders aside)."""
    size = 64
    yy, xx = np.mgrid[: size + 8, : size + 8]
    texture = 127 + 60 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + 40 * np.sin((xx + yy) / 5.0)
    image = np.repeat(texture[..., None], 3, axis=-1).astype(np.uint8)
    frames = np.stack([image[4 : 4 + size, 4 : 4 + size], image[4 : 4 + size, 1 : 1 + size]])
    sizes = motion_size.flow_motion(frames)
    assert sizes[0] == 0.0 and sizes[1] == pytest.approx(3 / size, rel=0.2)


def test_measure_per_dataset():
    assert motion_size.choose_measure("synthetic", "synthetic_moments") == motion_size.SYNTHETIC_TRUTH
    assert motion_size.choose_measure("vox", "dlib_face68") == motion_size.FACE_LANDMARKS
    assert motion_size.choose_measure("vox", None) == motion_size.OPTICAL_FLOW  # no landmarks evaluated
    assert motion_size.choose_measure("taichi", "mediapipe_pose") == motion_size.OPTICAL_FLOW


def test_terciles_and_frames_restricted_to_a_bin():
    sizes = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, np.nan])
    masks = bin_masks(sizes, bin_edges(sizes))
    assert {k: list(np.flatnonzero(v)) for k, v in masks.items()} == {
        "small": [0, 1],
        "medium": [2, 3],
        "large": [4, 5],
    }
    # a per-frame array covers the frames from 0; l1_first (frame 0 only) stays in frame 0's bin
    restricted = in_bin({"l1": np.arange(7.0), "l1_first": np.array([9.0])}, masks["small"])
    assert list(restricted["l1"]) == [0.0, 1.0] and list(restricted["l1_first"]) == [9.0]
    assert in_bin({"l1_first": np.array([9.0])}, masks["large"])["l1_first"].size == 0
    assert bin_edges(np.array([np.nan])) is None
