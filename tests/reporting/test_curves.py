"""Loss curves over seeds: read back from a real MLflow store (sqlite, runs tagged as the train stage tags them),
smoothed without lag, drawn one panel per component, written as a long CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from cpabanim.reporting.curves import (
    CSV_COLUMNS,
    components_of,
    plot_loss_curves,
    seed_band,
    smooth,
    train_histories,
)
from cpabanim.tracking import provenance, store


def loss_values(experiment: str, seed: int, steps: int = 5) -> dict[str, dict[int, float]]:
    """A recognisable history per (experiment, seed): component -> step -> value."""
    offset = {"cpab": 0.0, "tps": 0.5}[experiment] + seed
    return {
        component: {10 * s: offset + scale / (s + 1) for s in range(steps)}
        for component, scale in (("total", 3.0), ("perceptual", 2.0), ("equivariance", 1.0))
    }


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A sqlite store in tmp_path with train runs as the train stage records them, and decoys around them."""
    from mlflow.entities import Metric

    from cpabanim.tracking.runs import mlflow_client

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = {"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "curves-test"}
    experiment_id = store.configure({"tracking": settings})
    client = mlflow_client()
    clock = iter(range(1_700_000_000_000, 1_800_000_000_000, 1000))

    def run(experiment, seed, losses, *, stage="train", role="stage", status="FINISHED"):
        tags = {
            provenance.TAG_STAGE: stage,
            provenance.TAG_EXPERIMENT: experiment,
            provenance.TAG_SEED: str(seed),
            provenance.TAG_ROLE: role,
        }
        run_id = client.create_run(experiment_id, start_time=next(clock), tags=tags).info.run_id
        metrics = [Metric(f"loss/{c}", v, 0, s) for c, points in losses.items() for s, v in points.items()]
        metrics.append(Metric("lr", 1e-4, 0, 0))
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, status)

    run("cpab", 0, {"total": {0: 99.0}})  # older: superseded by the newer finished run below
    for experiment, seeds in (("cpab", (0, 1)), ("tps", (0, 1))):
        for seed in seeds:
            run(experiment, seed, loss_values(experiment, seed))
    run("cpab", 0, {})  # newer, finished, but no losses (training was already complete): not the one
    run("cpab", 1, {"total": {0: -1.0}}, status="FAILED")
    run("tps", 0, {"total": {0: -2.0}}, stage="evaluate")
    run("tps", 1, {"total": {0: -3.0}}, role="seed")
    return settings


def test_histories_per_seed_come_from_the_newest_finished_train_run_with_losses(tracking):
    histories = train_histories(tracking, {"cpab": [0, 1, 2], "tps": range(2), "absent": [0]})
    assert set(histories) == {"cpab", "tps"}
    assert set(histories["cpab"]) == {0, 1}  # seed 2 never trained: left out
    for experiment, seeds in histories.items():
        for seed, losses in seeds.items():
            assert losses == loss_values(experiment, seed), (experiment, seed)  # doubles, stored exactly


def test_no_histories_with_tracking_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = {"enabled": False, "uri": f"sqlite:///{tmp_path / 'never.db'}", "experiment": "x"}
    assert train_histories(settings, {"cpab": [0]}) == {}
    assert not (tmp_path / "never.db").exists()


def test_the_rolling_mean_is_centred_and_leaves_short_series_alone():
    assert np.array_equal(smooth(np.array([3.0, 1.0, 2.0])), [3.0, 1.0, 2.0])
    ramp, half = np.linspace(5.0, 1.0, 10_000), 10_000 // 40
    assert np.allclose(smooth(ramp)[half:-half], ramp[half:-half])  # a centred window does not lag a trend
    assert smooth(ramp)[-1] == pytest.approx(ramp[-half - 1 :].mean())  # the end: the points there are
    noisy = ramp + np.random.default_rng(0).normal(0, 0.5, ramp.shape)
    smoothed = smooth(noisy)
    assert smoothed.shape == ramp.shape and np.isfinite(smoothed).all()
    assert np.abs(smoothed - ramp).std() < 0.1 * np.abs(noisy - ramp).std()


def test_the_seed_band_spans_the_seeds_where_they_ran():
    grid, mean, low, high = seed_band(
        [(np.array([0, 10, 20]), np.array([1.0, 2.0, 3.0])), (np.array([0, 10]), np.array([3.0, 4.0]))]
    )
    assert grid.tolist() == [0, 10, 20]
    assert mean.tolist() == [2.0, 3.0, 3.0] and low.tolist() == [1.0, 2.0, 3.0] and high.tolist() == [3.0, 4.0, 3.0]


def test_plot_has_one_panel_per_component_total_first_and_a_long_csv(tracking, tmp_path):
    histories = train_histories(tracking, {"cpab": [0, 1], "tps": [0, 1]})
    png, table = tmp_path / "train_loss.png", tmp_path / "train_loss.csv"
    plot_loss_curves(histories, png, table)

    assert components_of(histories) == ["total", "equivariance", "perceptual"]
    image = Image.open(png)
    assert image.size[0] > 3 * 300  # three panels side by side
    assert image.text["Description"] == "loss/total | loss/equivariance | loss/perceptual"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 2 * 2 * 3 * 5  # experiments x seeds x components x steps: one row per logged point
    assert all(all(row[c] != "" for c in CSV_COLUMNS) for row in rows)
    first = [r for r in rows if (r["experiment"], r["seed"], r["component"]) == ("tps", "1", "total")]
    assert [int(r["step"]) for r in first] == [0, 10, 20, 30, 40]
    assert [float(r["value"]) for r in first] == pytest.approx([1.5 + 3 / (s + 1) for s in range(5)])
    assert [r["smoothed"] for r in first] == [r["value"] for r in first]  # 5 points: not smoothed


def test_without_curves_one_panel_says_so_and_the_csv_has_its_header(tmp_path):
    png, table = tmp_path / "train_loss.png", tmp_path / "train_loss.csv"
    plot_loss_curves({}, png, table)
    assert Image.open(png).size[0] > 0
    assert table.read_text().strip() == ",".join(CSV_COLUMNS)


def test_a_long_history_of_one_seed_is_drawn_with_a_log_axis(tmp_path):
    steps = range(0, 10_000)
    histories = {"cpab": {0: {"total": {s: 100.0 / (1 + s) for s in steps}, "bg": {s: 0.5 for s in steps}}}}
    png, table = tmp_path / "train_loss.png", tmp_path / "train_loss.csv"
    plot_loss_curves(histories, png, table)
    assert Image.open(png).text["Description"] == "loss/total (log scale) | loss/bg"
    assert sum(1 for _ in open(table)) == 1 + 2 * 10_000
