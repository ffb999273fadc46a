"""The large-motion study (workflow/studies/synthetic_motion.sh): its table from fake runs whose differences are
known by construction (3 motion sizes x cpab and tps x 2 seeds, each run's metrics.json and per-video CSV written by
the evaluation's own gather). The whole script's smoke run (`SMOKE=1 workflow/studies/synthetic_motion.sh`: every
size, experiment and stage at 1 step) took 20 min on the shared 2-core machine, too long for a test: run it by hand
(docs/model.md, "Large-motion study (synthetic)")."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cpabanim.evaluation.gather import csv_rows, motion_bins, pooled_metrics
from cpabanim.evaluation.pooling import write_table
from cpabanim.reporting.stats import BETTER, WORSE
from cpabanim.reporting.study import main, study_table, write_study

SIZES = ("small", "medium", "large")
VIDEOS, FRAMES, SEEDS = 8, 6, 2  # 8 test videos: the fewest a verdict needs (stats.MIN_UNITS_FOR_VERDICT)
# tps minus cpab on every frame of video v, per size: better on small, a zero-mean spread on medium, worse on large
OFFSET = {
    "small": lambda v: -0.01 - 0.001 * v,
    "medium": lambda v: 0.002 * (v - 3.5),
    "large": lambda v: 0.02 + 0.001 * v,
}
pytestmark = pytest.mark.filterwarnings("error")


def l1_of(size: str, experiment: str, seed: int, video: int) -> np.ndarray:
    """Per-frame L1 of a run: larger at larger sizes and later frames; tps = cpab + OFFSET[size](video)."""
    t = np.arange(FRAMES)
    base = 0.04 + 0.01 * SIZES.index(size) + 0.002 * video + 0.001 * seed + 0.003 * t
    return base + (OFFSET[size](video) if experiment == "tps" else 0.0)


def write_run(folder: Path, size: str, experiment: str, seed: int) -> None:
    """A run's metrics.json and metrics_per_video.csv, as `cpabanim evaluate`'s gather writes them."""
    recon = []
    for v in range(VIDEOS):
        groups = {
            "model": {"l1": l1_of(size, experiment, seed, v)},
            "baseline": {"l1": 0.06 + 0.01 * np.arange(FRAMES)},
            "motion_size": {"motion_size": 0.01 * np.arange(FRAMES)},
        }
        recon.append((f"id{v:02d}.test", {"frames": FRAMES, "groups": groups, "features": {}}))
    values, _ = pooled_metrics(recon, [], [])
    by_motion, bin_rows = motion_bins(recon, [], [])
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({**values, **by_motion}))
    write_table(csv_rows(recon, [], []) + bin_rows, folder / "metrics_per_video.csv")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """outputs/studies/<study>: one outputs folder per size, the pipeline's cpab under its folder name `default`."""
    root = tmp_path_factory.mktemp("study")
    for size in SIZES:
        for experiment, folder in (("cpab", "default"), ("tps", "tps")):
            for seed in range(SEEDS):
                write_run(root / size / folder / f"seed{seed}", size, experiment, seed)
    return root


def cell(table, size: str, experiment: str, column: str):
    row = next(r for r in table.rows if r[0].text == size and r[1].text == experiment)
    return row[table.columns.index(column)]


def test_rows_are_sizes_by_experiments_with_the_baseline(root):
    table = study_table(root, SIZES)
    keys = [(r[0].text, r[1].text) for r in table.rows]
    expected = [(s, e) for s in SIZES for e in ("cpab", "tps", "baseline: no motion")]
    assert keys == expected
    assert table.columns[:6] == ("motion", "experiment", "seeds", "recon/l1", "recon/l1/vs_cpab", "recon/l1/verdict")
    assert cell(table, "small", "cpab", "seeds").text == "0, 1"


def test_means_over_seeds_and_verdicts_come_out_as_constructed(root):
    table = study_table(root, SIZES)
    for size in SIZES:
        per_seed = [np.mean([l1_of(size, "cpab", s, v) for v in range(VIDEOS)]) for s in range(SEEDS)]
        numbers = dict(cell(table, size, "cpab", "recon/l1").numbers)
        assert numbers["mean"] == pytest.approx(np.mean(per_seed))
        assert numbers["sd"] == pytest.approx(np.std(per_seed, ddof=1)) and numbers["n"] == SEEDS
        assert cell(table, size, "cpab", "recon/l1/vs_cpab").text == "reference"
        difference = dict(cell(table, size, "tps", "recon/l1/vs_cpab").numbers)["difference"]
        assert difference == pytest.approx(np.mean([OFFSET[size](v) for v in range(VIDEOS)]))
        baseline = dict(cell(table, size, "baseline: no motion", "recon/l1").numbers)["value"]
        assert baseline == pytest.approx(0.06 + 0.01 * np.mean(range(FRAMES)))
    verdicts = [cell(table, s, "tps", "recon/l1/verdict").text for s in SIZES]
    assert verdicts[0] == BETTER and verdicts[2] == WORSE
    assert verdicts[1].startswith("no difference detectable with 8 videos × 2 seeds")


def test_written_markdown_and_csv(root, capsys):
    bench = root / "bench_motion.json"
    rows = {"epe_px": 0.5, "epe_largest_px": 0.9, "l1": 0.01, "keypoint_residual_px": None}
    size_figures = {"true_motion_px": 3.0, "true_motion_largest_px": 5.0, "rows": {"true warp": rows}}
    bench.write_text(json.dumps({"videos": 2, "frames": 6, "frame_size": 64, "sizes": {"large": size_figures}}))
    assert main([str(root), "--sizes", ",".join(SIZES), "--bench", str(bench)]) == 0
    text = (root / "table.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "| large | tps | 0, 1 |" in text and "| worse |" in text and "| better |" in text
    assert "| large | 3 (5) | true warp | 0.5 | 0.9 | 0.01 |  |" in text
    with open(root / "table.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    verdicts = {(r["motion"], r["experiment"]): r["value"] for r in records if r["column"] == "recon/l1/verdict"}
    assert verdicts[("large", "tps")] == WORSE and verdicts[("small", "tps")] == BETTER
    means = [r for r in records if r["column"] == "recon/l1" and r["quantity"] == "mean"]
    assert {(r["motion"], r["experiment"]) for r in means} == {(s, e) for s in SIZES for e in ("cpab", "tps")}


def test_a_missing_size_is_one_line(root, tmp_path, capsys):
    assert main([str(tmp_path), "--sizes", "small"]) == 1
    assert "no run in" in capsys.readouterr().err
    table = write_study(root, ["large"])  # one size alone: the same rows for it
    assert [r[1].text for r in table.rows] == ["cpab", "tps", "baseline: no motion"]
