"""Known answers of the report's statistics: spread over seeds, and the paired bootstrap comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cpabanim.reporting.stats import BETTER, WORSE, paired_difference, summarize

VIDEOS, SEEDS = 8, 3
pytestmark = pytest.mark.filterwarnings("error")  # scipy's degenerate-data warnings are handled, never shown


def reference_values(
    rng: np.random.Generator, videos: int = VIDEOS, seeds: int = SEEDS
) -> dict[tuple[str, int], float]:
    """{(video, seed): L1}: videos differ in difficulty (0.03..0.08), seeds a little."""
    level = {f"video{v}": 0.03 + 0.05 * rng.random() for v in range(videos)}
    return {
        (video, seed): base + 0.003 * rng.standard_normal() for video, base in level.items() for seed in range(seeds)
    }


def shifted(values: dict, shift: float, noise: float, rng: np.random.Generator) -> dict:
    return {k: v + shift + noise * rng.standard_normal() for k, v in values.items()}


def test_summarize_mean_sd_n():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.n) == (2.0, 1.0, 3)  # sd with ddof=1
    assert s.format() == "2 ± 1"


def test_summarize_one_seed_has_no_sd():
    s = summarize([0.05])
    assert s.n == 1 and s.mean == 0.05 and math.isnan(s.sd)
    assert s.format() == "0.05 (n=1)"


def test_summarize_leaves_out_non_finite_values():
    assert summarize([1.0, math.nan, 3.0, math.inf]).n == 2
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.format() == "n/a"


def test_identical_experiments_differ_by_exactly_zero():
    reference = reference_values(np.random.default_rng(0))
    result = paired_difference(dict(reference), reference, lower_is_better=True)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.verdict == "no difference detectable with 8 videos × 3 seeds"
    assert (result.units, result.seeds, result.pairs) == (VIDEOS, SEEDS, VIDEOS * SEEDS)
    assert result.relative == 0.0


def test_a_planted_improvement_is_found_and_covered():
    rng = np.random.default_rng(1)
    reference = reference_values(rng)
    candidate = shifted(reference, -0.01, 0.002, rng)
    result = paired_difference(candidate, reference, lower_is_better=True)
    assert result.verdict == BETTER
    assert result.low <= -0.01 <= result.high < 0
    assert result.difference == pytest.approx(-0.01, abs=0.002)
    assert result.relative == pytest.approx(100 * result.difference / np.mean(list(reference.values())))


@pytest.mark.parametrize("seed", range(5))
def test_a_planted_improvement_always_excludes_zero(seed):
    rng = np.random.default_rng(100 + seed)
    reference = reference_values(rng)
    result = paired_difference(shifted(reference, -0.01, 0.002, rng), reference, lower_is_better=True)
    assert result.high < 0 and result.verdict == BETTER


def test_zero_mean_noise_is_no_difference():
    rng = np.random.default_rng(2)
    reference = reference_values(rng)
    noise = {k: 0.002 * rng.standard_normal() for k in reference}
    centre = np.mean(list(noise.values()))  # exactly zero-mean: the planted difference is 0
    candidate = {k: reference[k] + noise[k] - centre for k in reference}
    result = paired_difference(candidate, reference, lower_is_better=True)
    assert result.low < 0 < result.high
    assert result.verdict == "no difference detectable with 8 videos × 3 seeds"


def test_higher_is_better_turns_the_verdict():
    rng = np.random.default_rng(3)
    psnr = {k: 25 + 100 * v for k, v in reference_values(rng).items()}
    higher = shifted(psnr, 1.0, 0.2, rng)  # +1 dB
    assert paired_difference(higher, psnr, lower_is_better=False).verdict == BETTER
    assert paired_difference(higher, psnr, lower_is_better=True).verdict == WORSE
    assert paired_difference(psnr, higher, lower_is_better=False).verdict == WORSE


def test_pairs_only_on_the_keys_both_have():
    reference = {(f"video{v}", s): 0.05 for v in range(8) for s in range(2)}
    reference[("only_in_reference", 0)] = 100.0
    candidate = {(f"video{v}", s): 0.04 for v in range(10) for s in range(3)}  # more videos and seeds
    result = paired_difference(candidate, reference, lower_is_better=True)
    assert (result.units, result.seeds, result.pairs) == (8, 2, 16)
    assert result.difference == pytest.approx(-0.01)
    assert result.low == result.high == pytest.approx(-0.01)  # every difference the same: [d, d]
    assert result.verdict == BETTER


def test_too_few_videos_give_no_verdict_however_clear():
    """Below 8 videos the bootstrap interval undercovers (module docstring): the same clear difference on 7 videos
    says so instead of a verdict; on 8 it is one."""
    for videos, expected in ((7, "no difference detectable with 7 videos × 1 seed (a verdict needs"), (8, BETTER)):
        reference = {(f"video{v}", 0): 0.05 + 0.01 * v for v in range(videos)}
        candidate = {key: value - 0.01 for key, value in reference.items()}
        assert paired_difference(candidate, reference, lower_is_better=True).verdict.startswith(expected)


def test_non_finite_values_are_not_paired():
    reference = {(f"video{v}", 0): 1.0 + v for v in range(4)}
    candidate = {**{k: v - 0.5 for k, v in reference.items()}, ("video3", 0): math.nan}
    result = paired_difference(candidate, reference, lower_is_better=True)
    assert result.pairs == 3 and result.difference == pytest.approx(-0.5)


def test_seeds_of_one_video_are_one_cluster():
    """Copying each video's value into 3 seeds adds no information: the interval stays the one of 1 seed (it would
    shrink by about √3 if (video, seed) pairs were resampled as independent)."""
    rng = np.random.default_rng(4)
    reference = reference_values(rng, seeds=1)
    candidate = shifted(reference, -0.001, 0.002, rng)
    one = paired_difference(candidate, reference, lower_is_better=True)

    def tripled(values):
        return {(video, s): v for (video, _), v in values.items() for s in range(3)}

    three = paired_difference(tripled(candidate), tripled(reference), lower_is_better=True)
    assert three.pairs == 3 * one.pairs
    assert three.difference == pytest.approx(one.difference)
    assert (three.low, three.high) == pytest.approx((one.low, one.high), rel=1e-9)


def test_one_video_says_nothing_however_many_seeds():
    reference = {("video0", s): 0.05 + 0.001 * s for s in range(3)}
    candidate = {k: v - 0.01 for k, v in reference.items()}
    result = paired_difference(candidate, reference, lower_is_better=True)
    assert math.isnan(result.low) and math.isnan(result.high)
    assert result.verdict.startswith("no difference detectable with 1 video × 3 seeds (a verdict needs at least 8")


def test_animation_counts_pairs_and_one_seed_reads_singular():
    reference = {(f"pair{p}", 0): 2.0 + p for p in range(5)}
    result = paired_difference(dict(reference), reference, lower_is_better=True, unit_name="pairs")
    assert result.verdict.startswith("no difference detectable with 5 pairs × 1 seed (a verdict needs at least 8")


def test_the_interval_is_reproducible():
    rng = np.random.default_rng(5)
    reference = reference_values(rng)
    candidate = shifted(reference, 0.0, 0.002, rng)
    first = paired_difference(candidate, reference, lower_is_better=True)
    assert paired_difference(candidate, reference, lower_is_better=True) == first
    other = paired_difference(candidate, reference, lower_is_better=True, random_state=1)
    assert other.difference == first.difference and (other.low, other.high) != (first.low, first.high)


def test_nothing_paired():
    result = paired_difference({("a", 0): 1.0}, {("b", 0): 1.0}, lower_is_better=True)
    assert result.pairs == 0 and math.isnan(result.difference) and math.isnan(result.relative)
    assert result.verdict.startswith("no difference detectable with 0 videos × 0 seeds (a verdict needs at least 8")
