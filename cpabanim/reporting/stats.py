"""Statistics of the report over seeds: a metric's spread over seeds, and a paired comparison of two experiments.

Pure numpy/scipy, explicit inputs. Contracts:

- :func:`summarize`: finite values (one per seed) -> :class:`Summary` (mean, sd with ``ddof=1``, n); ``n=1`` has
  ``sd`` NaN (written ``(n=1)``, never ``± nan``); ``n=0`` has mean NaN too.
- :func:`paired_difference`: per-unit values ``{(unit, seed): value}`` of a candidate and a reference
  experiment (unit: a test video for reconstruction, an animation pair for animation, as the per-video CSV names
  them), paired on the keys both have with finite values -> :class:`PairedDifference` (candidate − reference,
  its 95 % bootstrap confidence interval, the counts behind it, a verdict, and whether the reference's mean is
  clearly away from 0, the condition for a relative difference to mean something).

Unit of resampling: the *video* (or pair), as a cluster of all its seeds. The seeds of one video are evaluated on
the same frames, so their differences are correlated (a hard video is hard for every seed); resampling
(video, seed) pairs as if independent would count 8 videos × 3 seeds as 24 independent observations and give an
interval too narrow by up to √3. The statistic is the mean over all pairs, i.e. the mean of each video's mean
over seeds weighted by its number of seeds, and the bootstrap draws whole videos. What this interval does not
cover: the seed-to-seed spread of the *trained model* (seed k's model is shared by all videos); with 3 seeds it
cannot be estimated by resampling, it is shown instead as ``± sd`` over seeds in the summary and per seed.
Measured (300 simulated comparisons, a per-video effect of sd 0.002 on a planted −0.01, seed noise 0.001): the
95 % interval covered the planted value 90 % of the time with 8 videos × 3 seeds (92 % with 20 videos, 78 % with
4: a bootstrap is too narrow with few clusters), resampling (video, seed) pairs 76 %.

Interval: BCa (scipy's default): it corrects the percentile interval for the bias and skew that per-video
differences of bounded metrics (L1, AKD >= 0, a few hard videos) can have; on the symmetric simulation above both
covered alike (90 % with 8 videos), so BCa costs nothing where it is not needed. Where BCa is undefined although
the data are not constant (a jackknife without spread), the percentile interval is used instead. When
every video's difference is the same number (identical experiments: all 0), there is nothing to resample and the
interval is ``[d, d]`` (scipy would warn and return NaN). ``random_state`` fixes the resampling, so a report is
reproducible to the bit.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no difference detectable with {units} {unit_name} × {seeds} {seed_word}"
# Below this many videos (pairs) the BCa interval is too narrow to trust: simulated with a planted difference, it
# covered the true value 78 % of the time with 4 videos, 90 % with 8 (nominal 95 %). With fewer, no verdict.
MIN_UNITS_FOR_VERDICT = 8
TOO_FEW = " (a verdict needs at least {minimum} {unit_name})"
CONFIDENCE = 0.95
RESAMPLES = 9999
# Per-video differences closer than this (relative to their size) are "all the same": floating-point noise of
# e.g. (x - 0.01) - x must not be taken for spread to resample.
SAME = 1e-12
# A reference mean is "clearly away from 0" when it is more than this many standard errors (over units, each unit
# the mean of its seeds) above 0: about a 95 % interval that leaves 0 out. A score that is 0 on most videos (MKR)
# or hugs 0 is not: a % of it would magnify noise.
CLEAR_OF_ZERO = 2.0


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (``ddof=1``) of ``n`` finite values; ``sd`` NaN where ``n < 2``."""

    mean: float
    sd: float
    n: int

    def format(self) -> str:
        """``0.05123 ± 0.002``, ``0.05123 (n=1)`` or ``n/a`` (4 significant digits, as every table)."""
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{self.mean:.4g} (n=1)"
        return f"{self.mean:.4g} ± {self.sd:.4g}"


def summarize(values: Iterable[float]) -> Summary:
    """The :class:`Summary` of the finite numbers in ``values`` (NaN and inf are left out: a metric a seed did
    not define is no value of it)."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return Summary(math.nan, math.nan, 0)
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    return Summary(float(np.mean(finite)), sd, int(finite.size))


@dataclass(frozen=True)
class PairedDifference:
    """Candidate − reference on the units and seeds both have.

    ``difference``: mean over the ``pairs`` paired (unit, seed) values; ``low``, ``high``: its confidence interval
    (NaN when fewer than 2 units: nothing to resample); ``relative``: ``difference`` in % of the reference's mean
    on the same pairs (NaN when that mean is 0); ``reference_clear_of_zero``: the mean of the reference's units
    is positive and more than :data:`CLEAR_OF_ZERO` standard errors above 0 (False with fewer than 2 units; whether
    a relative difference means something also depends on the metric:
    :func:`cpabanim.reporting.tables.relative_shown`); ``units``, ``seeds``: distinct units and seeds among the
    pairs;
    ``unit_name``: what a unit is (``videos``, ``pairs``); ``verdict``: ``better`` / ``worse`` when the interval
    lies entirely on the good / bad side of 0 (``lower_is_better`` says which side is good), else
    ``no difference detectable with {units} {unit_name} × {seeds} seeds``.
    """

    difference: float
    low: float
    high: float
    relative: float
    reference_mean: float
    reference_clear_of_zero: bool
    units: int
    seeds: int
    pairs: int
    unit_name: str
    lower_is_better: bool
    verdict: str


def paired_difference(
    candidate: Mapping[tuple[str, int], float],
    reference: Mapping[tuple[str, int], float],
    *,
    lower_is_better: bool,
    unit_name: str = "videos",
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    random_state: int = 0,
) -> PairedDifference:
    """Compare ``candidate`` with ``reference``, both ``{(unit, seed): value}``, on the keys both have with finite
    values; units are resampled as clusters of their seeds (module docstring). ``random_state`` seeds the
    bootstrap (same inputs, same interval)."""
    keys = sorted(k for k in candidate.keys() & reference.keys() if _finite(candidate[k], reference[k]))
    differences = {k: candidate[k] - reference[k] for k in keys}
    units, weights = unit_means(differences)
    difference = float(np.mean(list(differences.values()))) if keys else math.nan
    low, high = interval(units, weights, confidence, n_resamples, random_state)
    reference_mean = float(np.mean([reference[k] for k in keys])) if keys else math.nan
    counts = {"units": len(units), "seeds": len({seed for _, seed in keys}), "pairs": len(keys)}
    reference_units, _ = unit_means({k: reference[k] for k in keys})
    return PairedDifference(
        difference=difference,
        low=low,
        high=high,
        relative=100.0 * difference / reference_mean if reference_mean else math.nan,
        reference_mean=reference_mean,
        reference_clear_of_zero=clear_of_zero(reference_units),
        unit_name=unit_name,
        lower_is_better=lower_is_better,
        verdict=verdict(low, high, lower_is_better, counts["units"], counts["seeds"], unit_name),
        **counts,
    )


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def unit_means(differences: Mapping[tuple[str, int], float]) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: the mean of its seeds' differences, and its number of seeds (the weight that makes the weighted
    mean of unit means the mean over all pairs); both (units,), in the units' sorted order."""
    by_unit: dict[str, list[float]] = defaultdict(list)
    for (unit, _seed), value in sorted(differences.items()):
        by_unit[unit].append(value)
    means = np.array([np.mean(v) for v in by_unit.values()], dtype=float)
    weights = np.array([len(v) for v in by_unit.values()], dtype=float)
    return means, weights


def clear_of_zero(unit_values: np.ndarray) -> bool:
    """Whether the mean of ``unit_values`` (units,) is positive and more than :data:`CLEAR_OF_ZERO` standard errors
    (sd with ``ddof=1`` over sqrt(units)) above 0; False with fewer than 2 units (no standard error)."""
    if unit_values.size < 2:
        return False
    mean = float(np.mean(unit_values))
    return mean > 0 and mean > CLEAR_OF_ZERO * float(np.std(unit_values, ddof=1)) / math.sqrt(unit_values.size)


def weighted_mean(means: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """The bootstrap statistic: the mean over pairs of a resample of units (vectorised along ``axis``)."""
    return np.sum(means * weights, axis=axis) / np.sum(weights, axis=axis)


def interval(
    means: np.ndarray, weights: np.ndarray, confidence: float, n_resamples: int, random_state: int
) -> tuple[float, float]:
    """The bootstrap confidence interval of :func:`weighted_mean` over units (``means``, ``weights``: (units,));
    NaN when fewer than 2 units; ``[d, d]`` when every unit has the same difference ``d``."""
    if means.size < 2:  # one video says nothing about the next one, however many seeds it has
        return math.nan, math.nan
    if np.ptp(means) <= SAME * max(1.0, float(np.max(np.abs(means)))):
        d = float(weighted_mean(means, weights))
        return d, d
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa's jackknife can be degenerate on spread data (e.g. 2 units); the percentile interval then
            # answers, so scipy's warning is no news to the reader of the report.
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.bootstrap(
                (means, weights),
                weighted_mean,
                paired=True,
                vectorized=True,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                rng=np.random.default_rng(random_state),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return math.nan, math.nan


def verdict(low: float, high: float, lower_is_better: bool, units: int, seeds: int, unit_name: str) -> str:
    """``better`` / ``worse`` when ``[low, high]`` lies entirely on the good / bad side of 0; else (0 inside, or no
    interval, or fewer than :data:`MIN_UNITS_FOR_VERDICT` units, said so) ``no difference detectable with {units}
    {unit_name} × {seeds} seeds``."""
    enough = units >= MIN_UNITS_FOR_VERDICT
    if enough and math.isfinite(low) and math.isfinite(high):
        below, above = high < 0, low > 0
        if below or above:
            return BETTER if below == lower_is_better else WORSE
    singular = units == 1 and unit_name.endswith("s")  # "1 video", "1 seed"
    name = unit_name[:-1] if singular else unit_name
    text = NO_DIFFERENCE.format(units=units, unit_name=name, seeds=seeds, seed_word="seed" if seeds == 1 else "seeds")
    return text if enough else text + TOO_FEW.format(minimum=MIN_UNITS_FOR_VERDICT, unit_name=unit_name)
