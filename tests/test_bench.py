"""`cpabanim bench <what> --quick --json`: the benchmark commands run and write the documented keys.

A smoke test only: it asserts that the figures exist, are finite and positive, and that the fits reach a
residual; speed goals are read from the printed figures, never asserted in a timed test.
"""

from __future__ import annotations

import json
import math

import pytest

from cpabanim.cli import main


@pytest.mark.parametrize(
    "what, keys",
    [
        ("cpab", ["fit_fast_s", "fit_adam_s", "fit_fast_residual", "fit_adam_residual", "warp_s", "warp_libcpab_s"]),
        ("train", ["cpab_step_s", "tps_step_s", "cpab_peak_mb", "tps_peak_mb"]),
        ("preprocess", ["peak_rss_mb_12", "peak_rss_mb_48", "frames_12", "frames_48", "rss_ratio"]),
        ("masks", ["slic_s", "sam_s_batch_1", "sam_s_batch_4", "vox_sam_days_every_4"]),
        # --quick: 64 px frames, 2 timed steps with 0 and with 2 loader workers
        ("avd", ["steps_per_s", "steps_per_s_0_workers", "speedup", "startup_s"]),
    ],
)
def test_bench_writes_its_figures(tmp_path, capsys, what, keys):
    out = tmp_path / f"{what}.json"
    assert main(["bench", what, "--quick", "--device", "cpu", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in keys:
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert capsys.readouterr().out.strip(), "the benchmark prints its figures"


def test_bench_dataset_prints_both_layouts_side_by_side(tmp_path, capsys):
    out = tmp_path / "dataset.json"
    assert main(["bench", "dataset", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["files"] == {"frame folders": 480, "archives": 66}  # 60 videos of 8 frames; 2 shards' records
    assert figures["kill"]["written_again"] == 0 < figures["kill"]["finished_before_kill"]
    for key in ("preprocess_frames_per_s", "random_read_ms", "dvc_add_seconds", "dvc_recommit_seconds"):
        assert all(math.isfinite(v) and v > 0 for v in figures[key].values()), key
    assert "2 shards / 1 shard" in capsys.readouterr().out
