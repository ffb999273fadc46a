"""Motion transfer relative to the source left unchanged (docs/evaluation.md), and the weight-free keypoint extractor
of the embedded synthetic videos that makes it measurable there (cpabanim/evaluation/synthetic_keypoints.py)."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math

import numpy as np
import pytest

from cpabanim.data import synthetic
from cpabanim.evaluation import formulas
from cpabanim.evaluation.extractors import make_extractor, resolve_keypoints
from cpabanim.evaluation.synthetic_keypoints import SyntheticMoments, synthetic_background

from .test_stages import IDENTITY, SourceAnimator

SIZE = 64
MAGENTA = np.array([255, 0, 255], dtype=np.uint8)  # >= 95 grey levels from every (dimmed) background pixel
# three identities of the embedded default, each on a background of another photo
IDENTITIES = (("astronaut", "hubble_deep_field"), ("chelsea", "coffee"), ("retina", "immunohistochemistry"))


def drawn_ellipse(centre, half_axes, angle=0.0, background="coffee") -> np.ndarray:
    """uint8 (1, SIZE, SIZE, 3): a magenta ellipse (half-axes (x, y) in px, turned by ``angle``) on a synthetic
    background; pixel i spans [i, i + 1), so the ellipse is centred on ``centre`` exactly."""
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    dx, dy = xs - centre[0], ys - centre[1]
    u = (math.cos(angle) * dx + math.sin(angle) * dy) / half_axes[0]
    v = (-math.sin(angle) * dx + math.cos(angle) * dy) / half_axes[1]
    frame = synthetic_background(background, SIZE).copy()
    frame[u**2 + v**2 <= 1] = MAGENTA
    return frame[None]


def test_keypoints_of_a_drawn_ellipse_are_its_centre_and_axis_ends():
    extractor = SyntheticMoments()
    centre = np.array([30.0, 33.0])
    keypoints = extractor(drawn_ellipse(centre, (16, 20)))[0]
    expected = centre + np.array([[0, 0], [0, -20], [0, 20], [-16, 0], [16, 0]])
    np.testing.assert_allclose(keypoints, expected, atol=0.3)  # 2 sqrt(eigenvalue) = half-axis, up to pixels


def test_keypoints_move_by_exactly_the_pixels_the_shape_moved():
    extractor = SyntheticMoments()
    before = extractor(drawn_ellipse((30.0, 33.0), (16, 20)))[0]
    after = extractor(drawn_ellipse((33.0, 31.0), (16, 20)))[0]
    np.testing.assert_allclose(after - before, np.tile([3.0, -2.0], (5, 1)), atol=1e-9)
    # and AKD, the per-coordinate mean, is then the mean shift: (3 + 2) / 2
    assert formulas.keypoint_distance_per_frame(after[None], before[None])[0] == pytest.approx(2.5)


def test_orientation_follows_a_turned_shape_and_labels_do_not_swap():
    extractor = SyntheticMoments()
    for angle in (-0.2, 0.0, 0.2):  # the generator's body turns by up to 0.2 rad
        top, bottom, left, right = extractor(drawn_ellipse((32.0, 32.0), (16, 20), angle))[0, 1:]
        down = bottom - top
        assert math.atan2(-down[0], down[1]) == pytest.approx(angle, abs=0.02)
        assert top[1] < bottom[1] and left[0] < right[0]


def test_no_object_or_no_synthetic_background_gives_nan():
    extractor = SyntheticMoments()
    bare = synthetic_background("rocket", SIZE)[None]
    noise = np.random.default_rng(0).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    not_square = np.zeros((1, SIZE, SIZE + 8, 3), dtype=np.uint8)
    for frames in (bare, noise, not_square):
        assert np.isnan(extractor(frames)).all()


def test_the_background_mirror_is_the_generators_background():
    """synthetic_background rebuilds what render_video draws; pixels not covered by the object agree exactly."""
    for obj, background in IDENTITIES:
        video = synthetic.render_video(obj, background, 3, SIZE, np.random.default_rng(1))
        exact = (video == synthetic_background(background, SIZE)).all(axis=-1).mean(axis=(1, 2))
        assert (exact > 0.6).all(), exact  # the object and its soft edge cover ~1/3 of the frame


def test_keypoints_follow_the_generators_known_body_pose():
    """On videos of the embedded default (its test split), the keypoints are where the generator put the body."""
    frames = 12
    extractor = SyntheticMoments()
    centre_errors, angle_errors = [], []
    for index, (_, obj, background) in enumerate(synthetic.video_plan("test", 4, 0)):
        video = synthetic.render_video(obj, background, frames, SIZE, np.random.default_rng([5, index]))
        motion = synthetic.Motion(np.random.default_rng([5, index]), frames)  # the same draws as render_video's
        keypoints = extractor(video)
        assert not np.isnan(keypoints).any()
        for t in range(frames):
            centre = SIZE * (0.5 + np.array([motion.at(motion.shift_x, t), motion.at(motion.shift_y, t)]))
            down = keypoints[t, 2] - keypoints[t, 1]
            centre_errors.append(np.abs(keypoints[t, 0] - centre).mean())
            angle_errors.append(abs(math.atan2(-down[0], down[1]) - motion.at(motion.rotation, t)))
    # measured: 0.09 px (at most 0.2) and 0.013 rad on average; the motion is up to 5 px and 0.2 rad
    assert np.mean(centre_errors) < 0.3 and np.max(centre_errors) < 1.0
    assert np.mean(angle_errors) < 0.04


def transfer(animation: np.ndarray, source_still: np.ndarray, driving: np.ndarray) -> tuple[float, float]:
    """(transfer_akd, transfer_motion) of keypoints (T, K, 2) against the driving's, relative to the still source."""
    still = np.repeat(source_still[None], len(driving), axis=0)
    return (
        formulas.transfer_score(
            formulas.keypoint_distance_per_frame(animation, driving),
            formulas.keypoint_distance_per_frame(still, driving),
        ),
        formulas.transfer_score(
            formulas.motion_distance_per_frame(animation, driving),
            formulas.motion_distance_per_frame(still, driving),
        ),
    )


def test_transfer_is_high_for_a_perfect_animation_and_graded_for_a_partial_one(monkeypatch):
    """The generator itself animates identity i by video j's motion (a perfect animation), at full, half and no
    motion amplitude: transfer_motion ~0.9, ~0.5 and exactly 0 (the still source: no better than no motion)."""
    frames = 12
    extractor = SyntheticMoments()
    keypoints = [
        extractor(synthetic.render_video(obj, bg, frames, SIZE, np.random.default_rng([6, k])))
        for k, (obj, bg) in enumerate(IDENTITIES)
    ]
    full = dict(synthetic.MOTION)
    scores = {}
    for factor in (1.0, 0.5, 0.0):
        monkeypatch.setattr(synthetic, "MOTION", {name: value * factor for name, value in full.items()})
        pairs = []
        for i, j in itertools.permutations(range(len(IDENTITIES)), 2):
            obj, bg = IDENTITIES[i]
            animated = extractor(synthetic.render_video(obj, bg, frames, SIZE, np.random.default_rng([6, j])))
            pairs.append(transfer(animated, keypoints[i][0], keypoints[j]))
        scores[factor] = np.mean(pairs, axis=0)
    # measured (transfer_akd, transfer_motion): 1.0 -> (0.81, 0.84), 0.5 -> (0.61, 0.49), 0.0 -> (0.25, 0.0); a
    # still object at the frame's centre is nearer the driving poses than the source's own pose, hence 0.25
    assert scores[1.0][0] > 0.75 and scores[1.0][1] > 0.75
    assert scores[0.5][1] == pytest.approx(0.5, abs=0.1)
    assert scores[0.0][1] == pytest.approx(0.0, abs=1e-9)
    assert scores[1.0][0] > scores[0.5][0] > scores[0.0][0]  # absolute placement: graded too


def test_transfer_score_and_motion_distance_formulas():
    baseline = np.array([2.0, 4.0, np.nan, 2.0])
    assert formulas.transfer_score(baseline, baseline) == 0.0
    assert formulas.transfer_score(np.zeros(4), baseline) == 1.0
    assert formulas.transfer_score(np.array([1.0, 2.0, 5.0, np.nan]), baseline) == pytest.approx(1 - 3 / 6)
    assert formulas.transfer_score(2 * baseline, baseline) == pytest.approx(-1.0)  # worse than no motion
    assert math.isnan(formulas.transfer_score(np.ones(2), np.zeros(2)))  # no motion to transfer
    assert math.isnan(formulas.transfer_score(np.ones(2), np.full(2, np.nan)))
    with pytest.raises(ValueError):
        formulas.transfer_score(np.ones(2), np.ones(3))
    # motion since frame 0: an animation offset by a constant moves exactly as the driving video does
    driving = np.random.default_rng(0).normal(size=(5, 3, 2))
    np.testing.assert_allclose(formulas.motion_distance_per_frame(driving + [4.0, -1.0], driving), 0.0, atol=1e-12)
    still = np.repeat(driving[:1], 5, axis=0)
    expected = np.abs(driving - driving[:1]).mean(axis=(1, 2))
    np.testing.assert_allclose(formulas.motion_distance_per_frame(still, driving), expected)


def test_auto_keypoints_follow_the_data_source(tmp_path):
    """auto: synthetic_moments only for the synthetic source; faces, bodies or an unknown source get none, with
    the reason; a named extractor is kept as it is."""
    (tmp_path / "manifest.json").write_text(json.dumps({"source": "synthetic"}))
    assert resolve_keypoints("auto", tmp_path) == ("synthetic_moments", None)
    assert resolve_keypoints("dlib_face68", tmp_path) == ("dlib_face68", None)
    for source in ("folder", "vox", None):
        (tmp_path / "manifest.json").write_text(json.dumps({"source": source} if source else {}))
        name, why = resolve_keypoints("auto", tmp_path)
        assert name == "none" and "not applicable" in why and "evaluate.keypoints" in why
        assert str(source or "unknown") in why
    assert resolve_keypoints("auto", tmp_path / "missing")[0] == "none"
    assert make_extractor("synthetic_moments").name.startswith("synthetic_moments-v")


def read_results(project) -> tuple[dict[str, float], dict[str, str], list[dict[str, str]]]:
    out = project.outputs
    with open(out / "metrics_per_video.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if not row["motion_bin"]]  # all frames (not a bin's)
    return (
        json.loads((out / "metrics.json").read_text()),
        json.loads((out / "metrics_unavailable.json").read_text()),
        rows,
    )


def test_embedded_default_scores_motion_transfer_end_to_end(synthetic_dataset, caplog):
    """The default evaluate on tiny synthetic data: the driving video itself transfers all motion (1), keypoints of
    every frame are found, and the source-unchanged baseline shows the motion there was to transfer."""
    project = synthetic_dataset
    for stage in ("reconstruct", "animate"):
        assert project.run(stage, *IDENTITY) == 0, stage
    with caplog.at_level(logging.INFO, logger="cpabanim.evaluation.extractors"):
        assert project.run("evaluate") == 0
    assert "auto -> synthetic_moments" in caplog.text
    metrics, reasons, rows = read_results(project)
    assert metrics["recon/akd"] == 0.0 and metrics["recon/mkr"] == 0.0
    assert metrics["baseline/copy_source/recon/akd"] > 0.5
    baseline = "baseline/source_unchanged/anim/"
    assert metrics[baseline + "akd_driving"] > 0.5 and metrics[baseline + "akd_motion"] > 0.5
    assert metrics[baseline + "transfer_akd"] == 0.0 and metrics[baseline + "transfer_motion"] == 0.0
    for mode in ("relative", "standard", "avd"):
        assert metrics[f"anim/{mode}/transfer_akd"] == 1.0 and metrics[f"anim/{mode}/transfer_motion"] == 1.0
        assert metrics[f"anim/{mode}/akd_driving"] == 0.0 and metrics[f"anim/{mode}/mkr_driving"] == 0.0
    assert not any(key.startswith("anim/") for key in reasons)
    # on the frames of each motion-size bin too (the generator's motion: frames that moved)
    assert all(metrics[f"motion_bin/{b}/anim/relative/transfer_motion"] == 1.0 for b in ("medium", "large"))
    animation = [row for row in rows if row["part"] == "animation"]
    assert len(animation) == 2 * 3
    for row in animation:  # per pair: the existing columns, and the transfer scores beside them
        assert {"l1_first", "akd_driving", "mkr_driving", "baseline_l1_first", "baseline_akd_driving"} <= set(row)
        assert float(row["transfer_akd"]) == 1.0 and float(row["transfer_motion"]) == 1.0
        assert float(row["baseline_akd_motion"]) > 0


def test_the_source_unchanged_animation_transfers_nothing(synthetic_dataset, monkeypatch):
    """An animator that returns the source image for every frame *is* the baseline: transfer exactly 0."""
    project = synthetic_dataset
    for module in ("reconstruct", "pairs"):
        monkeypatch.setattr(
            f"cpabanim.animation.{module}.load_animator", lambda *a: (SourceAnimator(), {"animator": "source"})
        )
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, "animate.num_pairs=2") == 0, stage
    metrics, _, rows = read_results(project)
    for mode in ("relative", "standard", "avd"):
        assert metrics[f"anim/{mode}/transfer_akd"] == pytest.approx(0.0, abs=1e-12)
        assert metrics[f"anim/{mode}/transfer_motion"] == pytest.approx(0.0, abs=1e-12)
        assert metrics[f"anim/{mode}/l1_first"] == 0.0  # while this identity score is perfect
    assert all(float(r["transfer_motion"]) == pytest.approx(0.0, abs=1e-12) for r in rows if r["part"] == "animation")


def test_folder_sources_are_not_scored_with_the_synthetic_extractor(fake_dataset):
    """The default (keypoints auto) on data that is not the synthetic source: AKD/MKR not applicable, with why."""
    project = fake_dataset
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, *IDENTITY) == 0, stage
    metrics, reasons, _ = read_results(project)
    assert not any("akd" in key or "mkr" in key or "transfer" in key for key in metrics)
    assert "evaluate.keypoints is auto" in reasons["recon/akd"] and "not applicable" in reasons["recon/mkr"]


def test_a_panning_background_makes_the_extractor_unavailable(monkeypatch):
    """The background mirror assumes a still background: with a pan the metric is refused, never approximated."""
    from cpabanim.evaluation.extractors import ExtractorUnavailable

    monkeypatch.setitem(synthetic.MOTION, "pan", 0.5)
    with pytest.raises(ExtractorUnavailable, match="pan"):
        make_extractor("synthetic_moments")
