"""Motion size: how far each evaluated frame is from the frame it is made from, whatever model is compared
(docs/evaluation.md, "Results by motion size").

A test video's frame t is reconstructed from its frame 0, and an animation's frame t follows the driving video's
motion from its frame 0: the motion size of frame t is how far frame t of the (test or driving) video is from its
frame 0, measured on the test videos alone (never on a model's output), so every experiment and seed gets the same
numbers. One measure per dataset (:func:`choose_measure`):

- ``synthetic_truth`` (``data.source: synthetic``): the generator's own motion
  (:func:`cpabanim.data.synthetic_truth.keypoints`, 15 fixed points of the object): the mean distance a point moved
  since frame 0, in fractions of the frame side;
- ``face_landmarks`` (a face keypoint extractor, ``dlib_face68`` or ``face_alignment``, is evaluated): the mean
  distance a landmark moved since frame 0 (landmarks found in both), divided by the inter-ocular distance (outer
  eye corners) of frame 0; NaN where a frame has no face;
- ``optical_flow`` (every other dataset): the mean magnitude of OpenCV's Farneback dense flow from frame 0 to frame
  t, in fractions of the frame side (model-free, but it also counts background and camera motion).

Bins (:func:`bin_edges`): the terciles of the pooled motion sizes of the reconstructed test frames (``small``,
``medium``, ``large``): fixed by the test set alone, so the same for every experiment evaluated on it; an animation
frame goes into the bin its driving frame's motion size falls in. Contract: motion sizes are float64 (T,), NaN
where undefined (such a frame is in no bin, still in the pooled metrics).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.files import read_json

SYNTHETIC_TRUTH, FACE_LANDMARKS, OPTICAL_FLOW = "synthetic_truth", "face_landmarks", "optical_flow"
FACE_EXTRACTORS = ("dlib_face68", "face_alignment")  # 68-point landmarks (iBUG order)
OUTER_EYE_CORNERS = (36, 45)  # the 68-point scheme's outer eye corners: the face's scale
MOTION_SIZE = "motion_size"  # the per-video CSV's column, the record's group, the per-bin keys' suffix
BIN_PREFIX = "motion_bin/"  # metrics.json: motion_bin/<bin>/<metric key as pooled>
BIN_LABELS = ("small", "medium", "large")  # equal-count bins of the test frames' motion sizes (terciles)
# Farneback's settings, OpenCV's example's: a 3-level pyramid, 15-px windows, enough for motion of a tenth of a frame
FLOW_SETTINGS = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
_SYNTHETIC_NAME = re.compile(r"\.(train|test)(\d+)$")  # <photo>.<split><index> (cpabanim.data.synthetic)


def choose_measure(source: str | None, keypoints: str | None) -> str:
    """The measure of a dataset of ``source`` (manifest.json's) whose evaluation extracts ``keypoints`` (the
    resolved extractor name, None when no keypoint metric is computed)."""
    if source == "synthetic":
        return SYNTHETIC_TRUTH
    if keypoints in FACE_EXTRACTORS:
        return FACE_LANDMARKS
    return OPTICAL_FLOW


def displacement(points: np.ndarray, scale: float) -> np.ndarray:
    """Mean Euclidean distance of points (T, K, 2) from their place in frame 0, over the points present (finite) in
    both, divided by ``scale``: (T,), NaN where no point is present in both (or ``scale`` is not positive)."""
    moved = np.linalg.norm(points - points[:1], axis=-1)  # (T, K), NaN where a point is missing in t or 0
    present = np.isfinite(moved)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, moved, 0.0).sum(axis=1) / present.sum(axis=1)
    return mean / scale if np.isfinite(scale) and scale > 0 else np.full(len(points), np.nan)


def landmark_motion(landmarks: np.ndarray) -> np.ndarray:
    """``face_landmarks``: (T,) of 68-point landmarks (T, 68, 2), in inter-ocular distances of frame 0."""
    left, right = OUTER_EYE_CORNERS
    interocular = float(np.linalg.norm(landmarks[0, left] - landmarks[0, right]))
    return displacement(landmarks, interocular)


def flow_motion(frames: np.ndarray) -> np.ndarray:
    """``optical_flow``: (T,) of uint8 (T, H, W, 3): mean Farneback flow magnitude from frame 0, / max(H, W)."""
    import cv2

    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    out = np.zeros(len(frames))
    for t in range(1, len(frames)):
        flow = cv2.calcOpticalFlowFarneback(grey[0], grey[t], None, flags=0, **FLOW_SETTINGS)
        out[t] = float(np.linalg.norm(flow, axis=-1).mean())
    return out / max(frames.shape[1:3])


def synthetic_motion(config: dict[str, Any], video: str, frames: int) -> np.ndarray:
    """``synthetic_truth``: (frames,) of the synthetic video named ``video``, from the generator's motion for the
    processed dataset's ``config`` (manifest.json's: ``data.synthetic`` and the seed), in fractions of the side."""
    from cpabanim.data import synthetic, synthetic_truth

    found = _SYNTHETIC_NAME.search(video)
    if found is None:
        return np.full(frames, np.nan)  # not a generated video's name: no ground truth
    settings = config["data"]["synthetic"]
    track = synthetic.motion_parameters(
        found[1], int(found[2]), int(settings["num_frames"]), int(config["seed"]), settings.get("motion")
    )
    points = np.stack([synthetic_truth.keypoints(track, t) for t in range(frames)])  # (T, 15, 2), frame fractions
    return displacement(points, 1.0)


class MotionMeasure:
    """``measure(video, frames)``: the motion sizes (T,) of frames 0..T-1 of the test video named ``video`` (uint8
    (T, H, W, 3)), by the dataset's measure (module docstring); ``extractors``: the evaluation's, whose cached
    landmarks the face measure reads."""

    def __init__(self, processed: str | Path, keypoints: str | None, extractors) -> None:
        manifest = read_json(Path(processed) / "manifest.json")
        landmarks = keypoints if getattr(extractors, "keypoints", None) is not None else None
        self.name = choose_measure(manifest.get("source"), landmarks)
        self.config = manifest.get("config") or {}
        self.extractors = extractors
        self.sizes: dict[tuple[str, int], np.ndarray] = {}  # a video's, kept: pairs driven by it ask again

    def __call__(self, video: str, frames: np.ndarray) -> np.ndarray:
        key = (video, len(frames))  # the same first frames of the same test video: the same sizes
        if key not in self.sizes:
            self.sizes[key] = self.measure(video, frames)
        return self.sizes[key]

    def measure(self, video: str, frames: np.ndarray) -> np.ndarray:
        if self.name == SYNTHETIC_TRUTH:
            return synthetic_motion(self.config, video, len(frames))
        if self.name == FACE_LANDMARKS:
            return landmark_motion(self.extractors.keypoints_of(frames, "reference"))
        return flow_motion(frames)


def bin_edges(sizes: np.ndarray) -> np.ndarray | None:
    """The inner edges (len(BIN_LABELS) - 1,) of the bins: quantiles of the finite ``sizes`` (all the test frames'),
    None when there is none."""
    finite = sizes[np.isfinite(sizes)]
    if finite.size == 0:
        return None
    return np.quantile(finite, np.arange(1, len(BIN_LABELS)) / len(BIN_LABELS))


def bin_masks(sizes: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per bin label, bool (T,): the frames of ``sizes`` (T,) in it; bin i holds edges[i-1] < size <= edges[i]."""
    index = np.searchsorted(edges, sizes, side="left")
    finite = np.isfinite(sizes)
    return {label: finite & (index == i) for i, label in enumerate(BIN_LABELS)}


def in_bin(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Each per-frame array of ``values`` restricted to the frames of ``mask`` (T,). An array shorter than T holds
    the first frames only (``l1_first``: frame 0), so it keeps those of them in the bin."""
    return {name: v[mask[: len(v)]] for name, v in values.items()}


def bin_key(label: str, key: str) -> str:
    """``motion_bin/large/recon/l1``: the key of metrics.json ``key`` computed on bin ``label``'s frames alone."""
    return f"{BIN_PREFIX}{label}/{key}"


def bin_metrics(metrics: dict[str, float], label: str) -> dict[str, float]:
    """The metrics of bin ``label`` under their pooled names (``motion_bin/large/recon/l1`` -> ``recon/l1``)."""
    prefix = bin_key(label, "")
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}


def is_descriptor(key: str) -> bool:
    """Whether a metrics.json key describes frames rather than scores a model: a per-bin key, or a motion size."""
    return key.startswith(BIN_PREFIX) or key.split("/")[-1].startswith(MOTION_SIZE)
