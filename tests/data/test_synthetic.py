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
