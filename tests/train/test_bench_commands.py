"""`cpabanim bench data` and `cpabanim bench train --profile` run and write their documented keys.

Smoke tests only: figures are read from the printed tables, never asserted (docs/model.md, "Training step
profile")."""

from __future__ import annotations

import json
import math

from cpabanim.cli import main
from cpabanim.commands.bench.profile import PHASES


def test_bench_data_writes_items_per_second(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert main(["bench", "data", "--quick", "--frame-size", "32", "--workers", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["workers"] == 1 and figures["frame_size"] == 32
    for key in ("items_per_s", "items_per_s_0_workers", "speedup"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert "items/s" in capsys.readouterr().out


def test_bench_train_profile_times_every_phase(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CPABANIM_BENCH_SET", "train.num_workers=0;model.num_cpab=1")
    out = tmp_path / "profile.json"
    assert (
        main(
            [
                "bench",
                "train",
                "--profile",
                "--quick",
                "--device",
                "cpu",
                "--frame-size",
                "32",
                "--batch-size",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    figures = json.loads(out.read_text())
    for motion in ("cpab", "tps"):
        phases = figures[motion]["phases"]
        assert set(phases) == {*PHASES, "step"}
        assert math.isclose(sum(phases[p] for p in PHASES), phases["step"], rel_tol=1e-6)
        for name in (
            "data wait",
            "keypoints",
            "dense warp",
            "dense motion network",
            "generator",
            "losses",
            "backward",
            "optimizer",
        ):
            assert phases[name] > 0, (motion, name)
    assert figures["cpab"]["phases"]["CPAB fit"] > 0 and figures["tps"]["phases"]["CPAB fit"] == 0
    assert figures["cpab"]["config"]["frame_size"] == 32 and figures["biggest_phase"] in PHASES
    assert "biggest cpab phase" in capsys.readouterr().out
