"""The face extractors measure what they claim, on real faces (../shared/data/faces; skipped when absent).

- identity model (prediction = driving), through the real stages: L1 = AKD = MKR = AED = 0;
- a frame shifted by (k, k) pixels: AKD ≈ k (AKD is the mean |Δ| over x and y coordinates);
- a different person's face: AED above dlib's same-person threshold (0.6 distance, so 0.36 squared) and far
  above the same-person value.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from cpabanim.evaluation import formulas

from ..conftest import SHARED_FACES, requires_faces
from .conftest import write_video

pytestmark = [
    requires_faces,
    pytest.mark.skipif(
        importlib.util.find_spec("face_recognition_models") is None or importlib.util.find_spec("dlib") is None,
        reason="dlib face models not installed (pip install dlib-bin face_recognition_models==0.3.0)",
    ),
]

FRAMES = 3
SIZE = 256


def clip(name: str) -> np.ndarray:
    """The first FRAMES frames of a shared clip, resized to SIZE x SIZE: uint8 (T, SIZE, SIZE, 3)."""
    import imageio.v3 as iio
    from PIL import Image

    frames = []
    for frame in iio.imiter(SHARED_FACES / name):
        frames.append(np.asarray(Image.fromarray(frame).resize((SIZE, SIZE), Image.BILINEAR)))
        if len(frames) == FRAMES:
            break
    return np.stack(frames)


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    return {"a": clip("d0.mp4"), "b": clip("d3.mp4")}


@pytest.fixture(scope="module")
def landmarks():
    from cpabanim.evaluation.extractors import make_extractor

    return make_extractor("dlib_face68")


@pytest.fixture(scope="module")
def identity():
    from cpabanim.evaluation.extractors import make_extractor

    return make_extractor("dlib_face")


def shift(frames: np.ndarray, k: int) -> np.ndarray:
    """Move the content k pixels right and k pixels down (edges replicated)."""
    return np.pad(frames, ((0, 0), (k, 0), (k, 0), (0, 0)), mode="edge")[:, :SIZE, :SIZE]


def test_landmarks_are_found_on_every_real_frame(faces, landmarks):
    for frames in faces.values():
        points = landmarks(frames)
        assert points.shape == (FRAMES, 68, 2) and np.isfinite(points).all()
        assert ((points > 0) & (points < SIZE)).all()


@pytest.mark.parametrize("k", [4, 10])
def test_akd_of_a_shifted_face_is_close_to_the_shift(faces, landmarks, k):
    reference = landmarks(faces["a"])
    shifted = landmarks(shift(faces["a"], k))
    akd = formulas.nanmean(formulas.keypoint_distance_per_frame(shifted, reference))
    assert akd == pytest.approx(k, abs=0.25 * k)
    # the landmarks moved by (+k, +k) on average, not just by some amount
    assert np.nanmean(shifted - reference, axis=(0, 1)) == pytest.approx([k, k], abs=0.25 * k)


def test_aed_separates_people(faces, identity):
    same = formulas.embedding_distance_per_frame(identity(faces["a"][1:]), identity(faces["a"][:1]))
    other = formulas.embedding_distance_per_frame(identity(faces["b"]), identity(faces["a"][:1]))
    assert np.isfinite(same).all() and np.isfinite(other).all()
    assert other.min() > 0.6**2  # dlib's same-person threshold is a 0.6 Euclidean distance
    assert other.min() > 5 * same.max()


def test_identity_model_gives_zero_face_metrics_through_the_stages(project, faces):
    for name, frames in faces.items():
        write_video(project.processed / "test" / name, frames)
    face_metrics = (
        "evaluate.metrics=[l1, psnr, ssim, akd, mkr, aed]",
        "evaluate.keypoints=dlib_face68",
        "evaluate.identity=dlib_face",
    )
    options = (
        "reconstruct.animator=identity",
        "animate.animator=identity",
        "animate.modes=[standard]",
        "reconstruct.mp4=false",
        "reconstruct.gif=false",
        "animate.mp4=false",
        "animate.gif=false",
        *face_metrics,
    )
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, *options) == 0, stage
    metrics = json.loads((project.outputs / "metrics.json").read_text())
    assert metrics["recon/l1"] == 0 and metrics["recon/akd"] == 0 and metrics["recon/mkr"] == 0
    assert metrics["recon/aed"] == 0
    # identity "animation" = the driving video: perfect motion, but the other person's identity
    assert metrics["anim/standard/akd_driving"] == 0
    assert metrics["anim/standard/aed_source"] > 0.6**2
    # re-evaluation reuses every extraction from the cache (same frames, same extractors)
    cache = project.outputs / ".eval_cache"
    before = sorted(p.stat().st_mtime_ns for p in cache.rglob("*.npz"))
    assert project.run("evaluate", *options) == 0
    assert sorted(p.stat().st_mtime_ns for p in cache.rglob("*.npz")) == before
    assert json.loads((project.outputs / "metrics.json").read_text()) == metrics


def test_a_lost_face_counts_in_mkr_and_is_skipped_by_akd(faces, landmarks):
    reference = landmarks(faces["a"])
    generated_frames = faces["a"].copy()
    generated_frames[1] = 128  # a grey frame: the generator "lost" the face
    generated = landmarks(generated_frames)
    assert np.isnan(generated[1]).all() and np.isfinite(generated[[0, 2]]).all()
    mkr = formulas.missing_keypoint_rate_per_frame(generated, reference)
    akd = formulas.keypoint_distance_per_frame(generated, reference)
    assert mkr.tolist() == [0.0, 1.0, 0.0]
    assert formulas.nanmean(akd) == 0.0 and np.isnan(akd[1])
