"""`cpabanim bench cpab|train --quick --json`: the benchmark commands run and write the documented keys.

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
    ],
)
def test_bench_writes_its_figures(tmp_path, capsys, what, keys):
    out = tmp_path / f"{what}.json"
    assert main(["bench", what, "--quick", "--device", "cpu", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in keys:
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert capsys.readouterr().out.strip(), "the benchmark prints its figures"
