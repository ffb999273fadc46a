"""Results by motion size, end to end from per-frame records: the evaluation's gather pools fake per-frame values of
two experiments x 2 seeds whose motion sizes and differences are known by construction (tps is worse than cpab on
the large-motion frames only), and the report's per-bin tables, verdicts, first screen and page come out so."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from cpabanim.evaluation.gather import csv_rows, motion_bins, pooled_metrics
from cpabanim.evaluation.motion_size import bin_key
from cpabanim.evaluation.pooling import write_table
from cpabanim.reporting.headline import first_screen
from cpabanim.reporting.motion import bin_tables, motion_tables, plot_by_motion
from cpabanim.reporting.stats import BETTER, WORSE

VIDEOS, FRAMES, SEEDS = 12, 9, 2  # 12 videos: enough for a verdict (stats.MIN_UNITS_FOR_VERDICT)
STEP = 0.01  # frame t of every video has moved t * STEP from frame 0: terciles {0..2}, {3..5}, {6..8}
LARGE_FROM = 6
PENALTY = 0.02  # tps's extra L1 on the large-motion frames (plus a per-video part, so that it has a spread)
pytestmark = pytest.mark.filterwarnings("error")


def records(experiment: str, seed: int) -> list[tuple[str, dict]]:
    """Per-frame records of one run, as evaluate shards store them: L1 per frame, the copy-source baseline's, and
    each frame's motion size. tps = cpab, except + PENALTY (+ a little per video) on frames t >= LARGE_FROM."""
    items = []
    for v in range(VIDEOS):
        t = np.arange(FRAMES)
        l1 = 0.05 + 0.002 * v + 0.001 * seed + 0.004 * t  # larger motion, larger error: for every model
        if experiment == "tps":
            l1 = l1 + np.where(t >= LARGE_FROM, PENALTY + 0.001 * v, 0.0)
        groups = {"model": {"l1": l1}, "baseline": {"l1": 0.01 * t}, "motion_size": {"motion_size": STEP * t}}
        items.append((f"id{v:02d}.test", {"frames": FRAMES, "groups": groups, "features": {}}))
    return items


def evaluation(experiment: str, seed: int, folder: Path) -> tuple[dict[str, float], list[dict[str, str]]]:
    """metrics.json and the per-video CSV's rows (read back as the report reads them) of one run."""
    recon = records(experiment, seed)
    values, _ = pooled_metrics(recon, [], [])
    by_motion, bin_rows = motion_bins(recon, [], [])
    path = folder / f"{experiment}{seed}.csv"
    write_table(csv_rows(recon, [], []) + bin_rows, path)
    with open(path, newline="") as handle:
        return {**values, **by_motion}, list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    done = {(e, s): evaluation(e, s, folder) for e in ("cpab", "tps") for s in range(SEEDS)}
    runs = {e: {s: done[e, s][0] for s in range(SEEDS)} for e in ("cpab", "tps")}
    per_video = {e: {s: done[e, s][1] for s in range(SEEDS)} for e in ("cpab", "tps")}
    return motion_tables(runs, per_video, "cpab"), runs


def verdict(tables, experiment: str, metric: str) -> str:
    row = next(r for r in tables.comparison.rows if r[0].text == experiment and r[1].name == metric)
    return row[tables.comparison.columns.index("verdict")].text


def test_the_bins_hold_the_frames_of_their_motion_sizes(tables):
    _, runs = tables
    metrics = runs["cpab"][0]
    frames = {b: metrics[bin_key(b, "recon/frames")] for b in ("small", "medium", "large")}
    assert frames == {"small": 3 * VIDEOS, "medium": 3 * VIDEOS, "large": 3 * VIDEOS}
    assert metrics[bin_key("large", "recon/motion_size_low")] == pytest.approx(LARGE_FROM * STEP)
    assert metrics[bin_key("small", "recon/motion_size")] == pytest.approx(STEP)
    # the pooled metrics are those of every frame, as before there were bins
    assert metrics["recon/frames"] == VIDEOS * FRAMES and "recon/motion_size" not in metrics


def test_per_bin_verdicts_come_out_as_constructed(tables):
    result, _ = tables
    assert [label.split(" (")[0] for label, _ in result.by_motion] == ["small motion", "medium motion", "large motion"]
    small, medium, large = (t for _, t in result.by_motion)
    assert verdict(small, "tps", "recon/l1").startswith("no difference detectable")
    assert verdict(medium, "tps", "recon/l1").startswith("no difference detectable")
    assert verdict(large, "tps", "recon/l1") == WORSE
    assert verdict(result, "tps", "recon/l1") == WORSE  # diluted, but still there over all frames
    difference = dict(next(r for r in large.comparison.rows if r[0].text == "tps")[2].numbers)
    expected = PENALTY + 0.001 * np.mean(range(VIDEOS))
    assert difference["difference"] == pytest.approx(expected) and difference["low"] > 0
    small_difference = dict(next(r for r in small.comparison.rows if r[0].text == "tps")[2].numbers)
    assert small_difference == {"difference": 0.0, "low": 0.0, "high": 0.0}
    assert BETTER not in {verdict(t, "tps", "recon/l1") for _, t in result.by_motion}


def test_per_bin_means_over_seeds_and_baselines(tables):
    result, _ = tables
    small, large = result.by_motion[0][1], result.by_motion[-1][1]
    cpab_small = dict(small.summary.rows[0][small.summary.columns.index("recon/l1")].numbers)
    # frames 0..2 of every video and seed: 0.05 + 0.002 v + 0.001 s + 0.004 t
    assert cpab_small["mean"] == pytest.approx(0.05 + 0.002 * 5.5 + 0.004 + 0.0005) and cpab_small["n"] == SEEDS
    baseline = next(r for r, kind in zip(large.summary.rows, large.summary.kinds) if kind == "baseline")
    assert dict(baseline[large.summary.columns.index("recon/l1")].numbers)["value"] == pytest.approx(0.07)
    # the pooled tables have no per-bin or motion-size column, the bins' tables are named apart for the tidy CSV
    assert all("motion" not in column for column in result.summary.columns)
    assert {t.name for t in bin_tables(result)} >= {"motion_bin/large/summary", "motion_bin/large/comparison"}


def test_first_screen_shows_the_largest_motion_beside_all_frames(tables):
    result, _ = tables
    fragment = first_screen(result)
    head = fragment.split("<thead>")[1].split("</thead>")[0]
    assert re.findall(r"<th>(all frames|large motion[^<]*)</th>", head)[:2][0] == "all frames"
    assert "large motion (0.06–0.08)" in head
    tps = next(r for r in re.findall(r"<tr[^>]*>(.*?)</tr>", fragment) if r.startswith("<td>tps</td>"))
    assert tps.count('class="worse"') == 2  # over all frames and on the largest motions


def test_plot_per_bin(tables):
    result, _ = tables
    png = plot_by_motion(result, ["recon/l1"])
    assert png is not None and png.startswith(b"\x89PNG")
