"""The embedded synthetic dataset: deterministic, and a genuine animation of real photographs."""

from __future__ import annotations

import numpy as np

from cpabanim.data import names, synthetic


def _videos(split="train", count=3, frames=8, size=48, seed=0):
    return list(synthetic.generate(split, count, frames, size, seed))


def test_generation_is_deterministic_and_seed_dependent():
    first, again, other = _videos(), _videos(), _videos(seed=1)
    assert [n for n, _ in first] == [n for n, _ in again]
    for (_, a), (_, b), (_, c) in zip(first, again, other):
        assert a.dtype == np.uint8 and a.shape == (8, 48, 48, 3)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_names_carry_identity_and_splits_differ():
    train = [n for n, _ in _videos("train", 6)]
    test = [n for n, _ in _videos("test", 2)]
    assert all(names.identity(n) in synthetic.OBJECT_PHOTOS for n in train + test)
    assert len({names.identity(n) for n in train}) == 6  # every photo is an identity
    assert not set(train) & set(test)
    assert train[0] == "astronaut.train000" and all(names.is_safe(n) for n in train + test)


def test_consecutive_frames_are_related_motion_not_noise():
    videos = [v.astype(np.float64) for _, v in _videos(count=3, frames=12)]
    for index, video in enumerate(videos):
        steps = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))
        assert (steps > 0.5).all(), "every frame moves"
        # a frame is much closer to its neighbour than to the same time step of another video
        other = videos[(index + 1) % len(videos)]
        assert steps.mean() < 0.5 * np.abs(video - other).mean()
        # and motion accumulates: far-apart frames differ more than neighbours (smooth trajectories)
        assert np.abs(video[6] - video[0]).mean() > steps[:6].mean()


def test_object_shows_the_photograph():
    name, video = _videos(count=1, frames=2, size=64)[0]
    photo = synthetic.photo(names.identity(name), 64).astype(np.float64)
    centre = video[0, 24:40, 24:40].astype(np.float64).reshape(-1, 3).mean(0)
    background_colour = video[0, :4, :4].astype(np.float64).reshape(-1, 3).mean(0)
    # the object's colours come from the photo's centre, not from the background
    photo_centre = photo[20:44, 20:44].reshape(-1, 3).mean(0)
    assert np.abs(centre - photo_centre).mean() < np.abs(background_colour - photo_centre).mean() + 40


def test_default_motion_is_moderate_over_a_still_background(monkeypatch):
    """The embedded default's motion (``MOTION``) is a learnable animation task: the object moves in every frame,
    the background stays still, and panning it is still possible (issue 13; docs/model.md, "Does it learn?")."""
    assert synthetic.MOTION["pan"] == 0.0
    video = _videos(count=1, frames=12, size=64)[0][1].astype(np.float64)
    changed = np.abs(video - video[:1]).max(axis=-1) > 2  # (T, H, W): pixels that differ from frame 0
    assert changed[1:].any(axis=(1, 2)).all(), "the object moves in every frame"
    still = ~changed[1:].any(axis=0)
    assert still.mean() > 0.3, "a large part of the frame (the background) never changes"
    monkeypatch.setitem(synthetic.MOTION, "pan", 0.5)
    panned = _videos(count=1, frames=12, size=64)[0][1].astype(np.float64)
    assert (np.abs(panned - panned[:1]).max(axis=-1) > 2)[1:].any(axis=0).mean() > 0.9, "a panning background moves"


def test_small_motion_is_the_default_byte_for_byte():
    """``data.synthetic.motion: small`` (the schema's default) renders exactly the frames of the generator called
    without the setting, i.e. of ``MOTION``: the embedded default's data, and so its metrics, do not change."""
    from cpabanim.config.schema import defaults

    assert defaults()["data"]["synthetic"]["motion"] == "small"
    assert synthetic.MOTION_SIZES["small"] is synthetic.MOTION
    for (name, plain), (again, small) in zip(
        _videos("test", 2), list(synthetic.generate("test", 2, 8, 48, 0, "small"))
    ):
        assert name == again and np.array_equal(plain, small)


def test_larger_motion_sizes_move_the_object_further():
    """medium and large draw larger turns, limb swings and size changes (the same waves, larger amplitudes), and
    the frames move further from the first one."""
    tracks = {size: synthetic.motion_parameters("test", 1, 24, 0, size) for size in synthetic.MOTION_SIZES}
    for smaller, larger in (("small", "medium"), ("medium", "large")):
        a, b = tracks[smaller], tracks[larger]
        assert np.ptp(b.rotation) > np.ptp(a.rotation) and np.ptp(b.scale) > np.ptp(a.scale)
        assert (
            np.ptp(b.limb_angles - b.rotation[:, None], axis=0) > np.ptp(a.limb_angles - a.rotation[:, None], axis=0)
        ).all()
        assert np.array_equal(a.limb_base, b.limb_base)  # the same video, with larger amplitudes
    assert np.abs(tracks["large"].rotation).max() < np.pi / 4  # the body's axes never swap (synthetic_moments)
    assert all(not t.pan.any() for t in tracks.values())

    def drift(size: str) -> float:
        video = synthetic.render_planned("test", 1, synthetic.video_plan("test", 2, 0)[1], 12, 48, 0, size)
        return float(np.abs(video.astype(np.float64) - video[:1]).mean())

    assert drift("small") < drift("medium") < drift("large")


def test_motion_parameters_are_the_rendered_motion():
    """The track of a video is what its frames were drawn with: the body the evaluation's extractor finds in each
    frame sits at the track's centre and turns by its rotation."""
    from cpabanim.evaluation.synthetic_keypoints import SyntheticMoments

    size, frames = 64, 8
    name, video = next(synthetic.generate("test", 1, frames, size, 0, "medium"))
    track = synthetic.motion_parameters("test", 0, frames, 0, "medium")
    assert track.centre.shape == (frames, 2) and track.limb_angles.shape == (frames, 2)
    found = SyntheticMoments()(video)  # (T, 5, 2): centre, top, bottom, left, right; pixels from the corner
    assert np.abs(found[:, 0] - track.centre * size).max() < 0.5
    vertical = found[:, 2] - found[:, 1]  # top -> bottom: the body's y axis, turned by the rotation
    turn = np.arctan2(-vertical[:, 0], vertical[:, 1])  # the moments see the turn within a few hundredths
    assert np.abs(turn - track.rotation).max() < 0.1 and np.ptp(track.rotation) > 0.5


def test_an_unknown_motion_size_is_refused():
    import pytest

    with pytest.raises(ValueError, match="data.synthetic.motion"):
        synthetic.motion_parameters("test", 0, 4, 0, "huge")
