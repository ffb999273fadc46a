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


def test_bench_evaluate_extracts_the_test_frames_once_for_the_whole_study(tmp_path, capsys):
    out = tmp_path / "evaluate.json"
    assert main(["bench", "evaluate", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    per_run, shared = figures["per_run_1_shard"]["reference"], figures["shared_1_shard"]["reference"]
    # 2 test videos of 6 frames and their pairs' source images: once for the study, not once per run
    assert shared["frames"] > 12 and per_run["frames"] == 4 * shared["frames"]
    assert figures["shared_4_shards"]["reference"] == shared and figures["same_metrics"] is True
    assert all(figures[case]["seconds"] > 0 for case in ("per_run_1_shard", "shared_1_shard", "shared_4_shards"))
    assert "byte for byte: yes" in capsys.readouterr().out


def test_bench_motion_scores_the_motion_models_against_the_true_warp(tmp_path, capsys):
    """Per motion size: the true warp scores 0, copying the source scores the motion itself (larger for a larger
    size), and every motion model fitted on exact keypoints comes far closer than copying."""
    out = tmp_path / "motion.json"
    assert main(["bench", "motion", "--quick", "--json", str(out)]) == 0
    sizes = json.loads(out.read_text())["sizes"]
    assert list(sizes) == ["small", "medium", "large"]
    still = [sizes[s]["rows"]["no motion"]["epe_px"] for s in sizes]
    assert still[0] < still[1] < still[2] and all(sizes[s]["true_motion_px"] == still[i] for i, s in enumerate(sizes))
    for figures in sizes.values():
        rows = figures["rows"]
        assert rows["true warp"]["epe_px"] == 0 and rows["true warp"]["l1"] < rows["no motion"]["l1"]
        for model in ("affine", "tps", "cpab"):
            assert rows[f"{model} parts"]["epe_px"] < 0.5 * rows["no motion"]["epe_px"], model
            assert 0 <= rows[f"{model} parts"]["keypoint_residual_px"] < 2, model
    assert "cpab parts" in capsys.readouterr().out
