"""The report's tables over seeds: best cells, baseline rows, column order, comparison verdicts, writers.

The per-video rows are written by the evaluate stage's own writer and read back with ``csv.DictReader``, as the
report reads them.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np
import pytest

from cpabanim.evaluation.pooling import write_table
from cpabanim.reporting.comparison import (
    Table,
    comparison_tables,
    ordered_metrics,
    to_html,
    to_markdown,
    write_csv,
)
from cpabanim.reporting.tables import BASELINE_ROW

VIDEOS, PAIRS, SEEDS, MODES = 8, 8, 3, ("relative", "standard")  # 8: enough for a verdict
pytestmark = pytest.mark.filterwarnings("error")


def evaluation_rows(shift: float, rng: np.random.Generator, baseline_l1: float = 0.2) -> list[dict]:
    """The rows evaluate writes for one run: L1 ``shift`` away from a common level, PSNR the other way."""
    rows = []
    for v in range(VIDEOS):
        l1 = 0.05 + 0.01 * v + shift + 0.0005 * rng.standard_normal()
        psnr = 25.0 - 100 * shift + 0.05 * rng.standard_normal()
        rows.append({"part": "reconstruction", "video": f"id{v}#clip", "mode": "", "frames": 10, "l1": l1})
        rows[-1].update({"psnr": psnr, "baseline_l1": baseline_l1, "baseline_psnr": 15.0})
    for p in range(PAIRS):
        for mode in MODES:
            akd = 2.0 + 10 * shift + 0.01 * rng.standard_normal()
            rows.append({"part": "animation", "video": f"pair{p}", "mode": mode, "frames": 8, "akd_driving": akd})
            rows[-1].update({"aed_source": 0.3, "l1_first": 0.01})
            rows[-1].update({"baseline_akd_driving": 5.0, "baseline_aed_source": 0.0, "baseline_l1_first": 0.0})
    return rows


def read_back(rows: list[dict], path: Path) -> list[dict[str, str]]:
    write_table(rows, path)
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def pooled(rows: list[dict[str, str]], baseline_l1: float = 0.2) -> dict[str, float]:
    """metrics.json of the run: means of the rows (every video has as many frames) and the baselines."""

    def mean(part: str, column: str, mode: str = "") -> float:
        return float(np.mean([float(r[column]) for r in rows if r["part"] == part and r["mode"] == mode]))

    out = {"recon/l1": mean("reconstruction", "l1"), "recon/psnr": mean("reconstruction", "psnr")}
    out.update({"recon/frames": 10.0 * VIDEOS, "recon/fid": 30.0})
    for mode in MODES:
        out.update({f"anim/{mode}/{m}": mean("animation", m, mode) for m in ("akd_driving", "aed_source", "l1_first")})
    out.update({"baseline/copy_source/recon/l1": baseline_l1, "baseline/copy_source/recon/psnr": 15.0})
    out.update({f"baseline/source_unchanged/anim/{m}": 0.0 for m in ("aed_source", "l1_first")})
    out["baseline/source_unchanged/anim/akd_driving"] = 5.0
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """cpab (reference), tps (L1 0.01 lower everywhere), an identical copy of cpab, a name to escape."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("per_video")
    per_video = {
        "cpab": {s: read_back(evaluation_rows(0.0, rng), folder / f"cpab{s}.csv") for s in range(SEEDS)},
        "tps": {s: read_back(evaluation_rows(-0.01, rng), folder / f"tps{s}.csv") for s in range(SEEDS)},
    }
    per_video["copy"] = per_video["cpab"]
    per_video["<b>&x"] = {s: read_back(evaluation_rows(0.0, rng), folder / f"x{s}.csv") for s in range(SEEDS)}
    runs = {name: {s: pooled(rows) for s, rows in seeds.items()} for name, seeds in per_video.items()}
    return runs, per_video


@pytest.fixture(scope="module")
def tables(inputs):
    return comparison_tables(*inputs, reference="cpab")


def cell(table: Table, key: str, column: str):
    row = next(r for r in table.rows if r[0].text == key)
    return row[table.columns.index(column)]


def test_columns_reconstruction_first_then_motion_then_identity(inputs):
    columns = ordered_metrics(inputs[0])
    assert columns[:3] == ["recon/l1", "recon/psnr", "recon/fid"]
    assert "recon/frames" not in columns
    anim = [c.split("/")[-1] for c in columns[3:]]
    assert anim == ["akd_driving"] * 2 + ["aed_source"] * 2 + ["l1_first"] * 2


def test_l1_first_is_labelled_as_identity(tables):
    label = tables.summary.labels[tables.summary.columns.index("anim/relative/l1_first")]
    assert "identity kept" in label and "source" in label


def test_summary_marks_the_best_mean_per_column(tables):
    summary = tables.summary
    assert cell(summary, "tps", "recon/l1").best and not cell(summary, "cpab", "recon/l1").best
    assert cell(summary, "tps", "recon/psnr").best  # higher is better
    assert not cell(summary, "cpab", "recon/psnr").best
    assert " ± " in cell(summary, "tps", "recon/l1").text
    assert cell(summary, "tps", "seeds").text == "0, 1, 2"
    assert cell(summary, "tps", "evaluated_on").text == "8 videos, 80 frames; 8 pairs, 64 frames"


def test_baseline_row_stays_and_is_never_best(tables):
    summary = tables.summary
    baselines = [row for row, kind in zip(summary.rows, summary.kinds) if kind == "baseline"]
    assert [row[0].text for row in baselines] == [BASELINE_ROW]  # every experiment scored the same frames
    assert cell(summary, BASELINE_ROW, "recon/l1").text == "0.2"
    l1_first = cell(summary, BASELINE_ROW, "anim/relative/l1_first")
    assert l1_first.text == "0" and not l1_first.best  # 0 by construction: lower than any model, not a winner


def test_a_baseline_row_per_experiment_when_frames_differ(inputs):
    runs, per_video = inputs
    runs = {**runs, "short": {s: {**m, "baseline/copy_source/recon/l1": 0.25} for s, m in runs["cpab"].items()}}
    summary = comparison_tables(runs, per_video, "cpab").summary
    labels = [row[0].text for row, kind in zip(summary.rows, summary.kinds) if kind == "baseline"]
    assert f"{BASELINE_ROW}, short" in labels and len(labels) == len(runs)


def test_comparison_verdicts(tables):
    comparison = tables.comparison
    rows = {(r[0].text, r[1].text.split(" ")[0]): r for r in comparison.rows}
    assert ("cpab", "recon/l1") not in rows  # the reference is not compared with itself
    verdict = comparison.columns.index("verdict")
    assert rows[("tps", "recon/l1")][verdict].text == "better"
    assert rows[("tps", "recon/psnr")][verdict].text == "better"
    assert rows[("tps", "anim/relative/akd_driving")][verdict].text == "better"
    assert rows[("copy", "recon/l1")][verdict].text == "no difference detectable with 8 videos × 3 seeds"
    assert (
        rows[("copy", "anim/standard/akd_driving")][verdict].text == "no difference detectable with 8 pairs × 3 seeds"
    )
    assert rows[("copy", "recon/l1")][comparison.columns.index("difference")].text == "+0 [+0, +0]"
    assert rows[("tps", "recon/fid")][verdict].text == "not compared: pooled only"


def test_comparison_prints_the_numbers_behind_each_figure(tables):
    comparison = tables.comparison
    row = next(r for r in comparison.rows if r[0].text == "tps" and r[1].text.startswith("recon/l1"))
    at = {name: row[i] for i, name in enumerate(comparison.columns)}
    assert (at["units"].text, at["seeds"].text, at["frames"].text) == ("8 videos", "3", "80")
    numbers = dict(at["difference"].numbers)
    assert numbers["difference"] == pytest.approx(-0.01, abs=0.001) and numbers["low"] < numbers["high"] < 0
    assert at["relative"].text.endswith(" %") and dict(at["relative"].numbers)["%"] < 0


@pytest.mark.parametrize("reference", [None, "absent"])
def test_no_reference_no_comparison_and_a_note(inputs, reference):
    result = comparison_tables(*inputs, reference=reference)
    assert result.comparison is None
    assert result.reference_note.startswith("No comparison with a reference")
    assert result.reference_note in to_markdown(result.summary)
    assert "absent" in result.reference_note if reference else "no reference" in result.reference_note
    assert all(t.name != "comparison" for t in result.all())


def test_per_seed_table_marks_the_best_run_per_column(tables):
    per_seed = tables.per_seed
    assert len(per_seed.rows) == 4 * SEEDS
    column = per_seed.columns.index("recon/l1")
    best = [(row[0].text, row[1].text) for row in per_seed.rows if row[column].best]
    assert len(best) == 1 and best[0][0] == "tps"


def test_per_video_tables_mark_the_best_per_row(tables):
    by_name = {t.name: t for t in tables.per_video}
    l1 = by_name["per_video/reconstruction/l1"]
    assert [row[1].text for row in l1.rows] == [f"id{v}#clip" for v in range(VIDEOS)]
    for row in l1.rows:
        best = [l1.columns[i] for i, c in enumerate(row) if c.best]
        assert best == ["tps"] and row[l1.columns.index("baseline")].text == "0.2"
    akd = by_name["per_video/animation/akd_driving"]
    assert [(r[1].text, r[2].text) for r in akd.rows][:2] == [("pair0", "relative"), ("pair0", "standard")]
    assert akd.labels[1] == "pair" and akd.labels[-1] == BASELINE_ROW


def test_markdown_bolds_the_best_cell(tables):
    text = to_markdown(tables.summary)
    tps = next(line for line in text.splitlines() if line.startswith("| tps |"))
    assert f"**{cell(tables.summary, 'tps', 'recon/l1').text}**" in tps
    cpab = next(line for line in text.splitlines() if line.startswith("| cpab |"))
    assert f"| {cell(tables.summary, 'cpab', 'recon/l1').text} |" in cpab


def test_html_escapes_every_name_and_marks_the_best(tables):
    fragment = to_html(tables.summary)
    assert fragment.startswith('<table class="cpabanim-table"') and fragment.endswith("</table>")
    assert "<b>&x" not in fragment and html.escape("<b>&x") in fragment
    assert f'<td class="best"><strong>{html.escape(cell(tables.summary, "tps", "recon/l1").text)}</strong>' in fragment
    assert '<tr class="baseline"><td>baseline: no motion</td>' in fragment
    for table in tables.all():
        assert "<b>" not in to_html(table)


def test_csv_is_tidy_and_complete(tables, tmp_path):
    path = tmp_path / "tables.csv"
    write_csv(tables.all(), path)
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))
    mean = next(
        r
        for r in records
        if (r["table"], r["experiment"], r["column"], r["quantity"]) == ("summary", "tps", "recon/l1", "mean")
    )
    assert mean["best"] == "1" and float(mean["value"]) == pytest.approx(0.05 + 0.035 - 0.01, abs=0.001)
    tables_seen = {r["table"] for r in records}
    assert {"summary", "comparison", "per_seed", "per_video/reconstruction/l1"} <= tables_seen
    verdict = next(r for r in records if r["table"] == "comparison" and r["column"] == "verdict")
    assert verdict["metric"] == "recon/l1" and verdict["quantity"] == "text"  # the name, not the label
    video = next(r for r in records if r["table"] == "per_video/reconstruction/l1" and r["column"] == "tps")
    assert video["video"] == "id0#clip" and video["part"] == "reconstruction"
