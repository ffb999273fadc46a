"""Metric formulas, as the field computes them (docs/evaluation.md; FOMM/MRAA pose-evaluation scripts).

Conventions shared by every function here:

- images are float tensors in [0, 1], shape (T, 3, H, W) (T frames of one video, or any batch);
- keypoints are float arrays (T, K, 2) in pixels, with NaN where a keypoint (or the whole face) is missing;
- embeddings are float arrays (T, D), with a NaN row where the extractor found nothing.

Per-frame functions return one value per frame; the pooled means over all frames of all videos (what the
pose-evaluation scripts print) are computed by the caller from the per-frame values. Every comparison of two
sets of keypoints lives here: AKD, MKR, the motion AKD and transfer score of the animations, and the pose
distance of ``cpabanim demo --find-best-frame``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the tensors' functions are methods: the pooling of the gather job imports no torch
    import torch

# PSNR of a perfect reconstruction is infinite; JSON (DVC, MLflow) cannot hold inf, so MSE is floored here,
# which caps PSNR at 100 dB for [0, 1] images.
_MSE_FLOOR = 1.0e-10

KEYPOINT_METRICS = ("akd", "mkr")


def l1_per_frame(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per frame: (T, C, H, W) x2 in [0, 1] -> (T,).

    TPSMM/CPABMM's reconstruction.py reports the mean of these over all frames (pooled over videos).
    """
    _check_same_shape(prediction, target)
    return (prediction - target).abs().flatten(1).mean(1)


def psnr_per_frame(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame in dB, data range 1: (T, C, H, W) x2 -> (T,), capped at 100 dB."""
    _check_same_shape(prediction, target)
    mse = (prediction - target).pow(2).flatten(1).mean(1).clamp_min(_MSE_FLOOR)
    return -10.0 * mse.log10()


def ssim_per_frame(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per frame (torchmetrics, 11x11 Gaussian window, data range 1): -> (T,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_same_shape(prediction, target)
    return structural_similarity_index_measure(
        prediction.float(), target.float(), data_range=1.0, reduction="none"
    ).reshape(-1)


def keypoint_distance_per_frame(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """AKD per frame: mean |Δx|, |Δy| over the coordinates of keypoints present in both: (T, K, 2) x2 -> (T,).

    A per-coordinate L1 in pixels, not a Euclidean distance (pose-evaluation ``cmp_kp.py`` for faces,
    ``cmp_with_missing.py`` for bodies). A frame with no keypoint present in both gives NaN (skipped when
    averaging), as the face script skips frames whose generated landmarks were not found.
    """
    generated, reference = _keypoint_pair(generated, reference)
    both = _present(generated) & _present(reference)  # (T, K)
    diff = np.abs(generated - reference)  # (T, K, 2), NaN where missing
    total = np.where(both[..., None], diff, 0.0).sum(axis=(1, 2))
    count = 2 * both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def missing_keypoint_rate_per_frame(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """MKR per frame: #(present in reference, missing in generated) / #(present in reference): -> (T,).

    NaN for frames where the reference has no keypoint at all (``cmp_with_missing.py`` would divide by zero).
    """
    generated, reference = _keypoint_pair(generated, reference)
    in_reference = _present(reference)
    lost = in_reference & ~_present(generated)
    count = in_reference.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, lost.sum(axis=1) / np.maximum(count, 1), np.nan)


def keypoint_metrics(keypoints: np.ndarray, reference: np.ndarray, wanted, suffix: str = "") -> dict[str, np.ndarray]:
    """Per-frame AKD / MKR (those in ``wanted``) of keypoints (T, K, 2) against reference keypoints (T, K, 2):
    ``{"akd<suffix>": (T,), "mkr<suffix>": (T,)}``."""
    values = {}
    if "akd" in wanted:
        values[f"akd{suffix}"] = keypoint_distance_per_frame(keypoints, reference)
    if "mkr" in wanted:
        values[f"mkr{suffix}"] = missing_keypoint_rate_per_frame(keypoints, reference)
    return values


def motion_distance_per_frame(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """AKD of the motion since frame 0: :func:`keypoint_distance_per_frame` of ``k_t - k_0`` of both (T, K, 2) -> (T,).

    Where each keypoint is, relative to where it started: 0 for an animation that moves every keypoint as the
    driving video moves its own, wherever it started (what relative mode asks for; standard mode too). A keypoint
    missing on frame 0 of either is missing on every frame. Frame 0 itself is 0 by construction.
    """
    generated, reference = _keypoint_pair(generated, reference)
    return keypoint_distance_per_frame(generated - generated[:1], reference - reference[:1])


def transfer_score(model: np.ndarray, baseline: np.ndarray) -> float:
    """Motion transfer relative to a no-motion baseline: ``1 - sum(model) / sum(baseline)`` of per-frame distances
    (e.g. AKD) over the frames where both are defined, i.e. one minus the ratio of their pooled means.

    1: the model's keypoints are the reference's; 0: no better than the baseline (the source left still);
    negative: worse. NaN when no frame has both, or the baseline's distance is 0 there (nothing to transfer).
    A ratio of sums, not a mean of per-frame ratios: frames where the driving motion is near 0 would dominate.
    """
    model = np.asarray(model, dtype=np.float64).reshape(-1)
    baseline = np.asarray(baseline, dtype=np.float64).reshape(-1)
    if model.shape != baseline.shape:
        raise ValueError(f"per-frame values must match frame for frame, got {model.shape} and {baseline.shape}")
    both = np.isfinite(model) & np.isfinite(baseline)
    total = float(baseline[both].sum())
    return 1.0 - float(model[both].sum()) / total if total > 0 else float("nan")


def normalised_keypoints(points: np.ndarray) -> np.ndarray:
    """(K, 2) keypoints, centred and divided by sqrt(area of their convex hull): position and scale removed."""
    from scipy.spatial import ConvexHull

    centred = points - points.mean(axis=0, keepdims=True)
    return centred / np.sqrt(ConvexHull(centred).volume)


def pose_distance_per_frame(keypoints: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """FOMM's ``find_best_frame`` distance: the squared L2 distance between keypoints normalised for position and
    scale (:func:`normalised_keypoints`), (T, K, 2) against one reference (K, 2) -> (T,); NaN for a frame that
    misses a keypoint."""
    target = normalised_keypoints(reference)
    return np.array(
        [np.nan if np.isnan(k).any() else float(((normalised_keypoints(k) - target) ** 2).sum()) for k in keypoints],
        dtype=np.float64,
    )


def embedding_distance_per_frame(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """AED per frame: the *squared* L2 distance Σ(e_ref − e_gen)² of identity embeddings: (T, D) x2 -> (T,).

    ``reference`` may be a single embedding (1, D) or (D,), broadcast over frames (identity of a source image).
    NaN where either embedding is missing. For L2-normalised embeddings the value lies in [0, 4].
    """
    generated = np.asarray(generated, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim == 1:
        reference = reference[None]
    if generated.ndim != 2 or reference.ndim != 2 or generated.shape[1] != reference.shape[1]:
        raise ValueError(f"embeddings must be (T, D) with the same D, got {generated.shape} and {reference.shape}")
    return ((generated - reference) ** 2).sum(axis=1)  # NaN rows propagate


def nanmean(values: np.ndarray | list[float]) -> float:
    """Mean over the finite entries (frames where a metric is defined); NaN when there is none."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _present(keypoints: np.ndarray) -> np.ndarray:
    return np.isfinite(keypoints).all(axis=-1)


def _keypoint_pair(generated: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    generated = np.asarray(generated, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if generated.shape != reference.shape or generated.ndim != 3 or generated.shape[-1] != 2:
        raise ValueError(f"keypoints must both be (T, K, 2), got {generated.shape} and {reference.shape}")
    return generated, reference


def _check_same_shape(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"images must both be (T, C, H, W), got {tuple(prediction.shape)} and {tuple(target.shape)}")
