"""Metric formulas against small hand-computed cases (docs/evaluation.md: pose-evaluation's definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cpabanim.evaluation import formulas

nan = np.nan


def test_l1_and_psnr_per_frame():
    target = torch.zeros(2, 3, 2, 2)
    prediction = target.clone()
    prediction[0] += 0.5  # every pixel off by 0.5: L1 0.5, MSE 0.25 -> PSNR 10 log10(4) = 6.0206 dB
    prediction[1, 0, 0, 0] = 1.0  # one of 12 values off by 1: L1 1/12, MSE 1/12
    assert formulas.l1_per_frame(prediction, target).tolist() == pytest.approx([0.5, 1 / 12])
    assert formulas.psnr_per_frame(prediction, target).tolist() == pytest.approx(
        [10 * math.log10(4), 10 * math.log10(12)], rel=1e-5
    )


def test_psnr_of_a_perfect_frame_is_finite():
    frame = torch.rand(1, 3, 4, 4)
    assert formulas.psnr_per_frame(frame, frame).item() == pytest.approx(100.0)


def test_ssim_is_one_for_identical_and_lower_for_noisy_frames():
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, 32, 32, generator=generator)
    noisy = (frames + 0.2 * torch.randn(frames.shape, generator=generator)).clamp(0, 1)
    assert formulas.ssim_per_frame(frames, frames).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert (formulas.ssim_per_frame(noisy, frames) < 0.9).all()


def test_akd_is_a_per_coordinate_mean_not_a_euclidean_distance():
    reference = np.array([[[0.0, 0.0], [10.0, 10.0]]])
    generated = np.array([[[3.0, 4.0], [10.0, 12.0]]])  # |Δ| = 3, 4, 0, 2 -> mean 9 / 4
    assert formulas.keypoint_distance_per_frame(generated, reference).tolist() == pytest.approx([9 / 4])


def test_akd_and_mkr_with_missing_keypoints():
    reference = np.array(
        [
            [[0, 0], [1, 1], [2, 2], [nan, nan]],  # 3 joints present in the reference
            [[0, 0], [1, 1], [2, 2], [3, 3]],
            [[nan, nan]] * 4,  # no reference joint: MKR undefined (NaN), AKD undefined
        ]
    )
    generated = np.array(
        [
            [[1, 0], [nan, nan], [2, 4], [5, 5]],  # joint 1 lost; joint 3 extra (not in reference: ignored)
            [[nan, nan]] * 4,  # everything lost (a face not detected)
            [[0, 0]] * 4,
        ],
        dtype=float,
    )
    akd = formulas.keypoint_distance_per_frame(generated, reference)
    mkr = formulas.missing_keypoint_rate_per_frame(generated, reference)
    # frame 0: joints 0 and 2 in both, |Δ| = 1, 0, 0, 2 -> 3 / 4; frames 1, 2: nothing in both
    assert akd[0] == pytest.approx(3 / 4) and np.isnan(akd[1:]).all()
    assert mkr[:2].tolist() == pytest.approx([1 / 3, 1.0]) and np.isnan(mkr[2])
    assert formulas.nanmean(akd) == pytest.approx(3 / 4)
    assert formulas.nanmean(mkr) == pytest.approx((1 / 3 + 1) / 2)


def test_aed_is_the_squared_l2_distance_with_missing_rows():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    generated = np.array([[0.0, 1.0], [0.0, 1.0], [nan, nan]])
    aed = formulas.embedding_distance_per_frame(generated, reference)
    assert aed[:2].tolist() == pytest.approx([2.0, 0.0]) and np.isnan(aed[2])
    # one source embedding broadcast over the frames (animation: identity of the source image)
    assert formulas.embedding_distance_per_frame(generated[:2], reference[0]).tolist() == pytest.approx([2.0, 2.0])


def test_shape_mismatches_are_errors():
    with pytest.raises(ValueError):
        formulas.keypoint_distance_per_frame(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)))
    with pytest.raises(ValueError):
        formulas.l1_per_frame(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
