"""The stages with a real (untrained, tiny) checkpoint written by the model's own ``save_checkpoint``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpabanim.config import load_params
from cpabanim.metrics.io import read_frames

checkpoint = pytest.importorskip("cpabanim.models.checkpoint", reason="the model package is not available")


def test_stages_run_a_saved_checkpoint(fake_dataset):
    from cpabanim.models.full import AnimationModel

    project = fake_dataset
    params = load_params(project.params)
    checkpoint.save_checkpoint(project.root / "checkpoints" / "last.pt", AnimationModel(params["model"]), params=params)
    options = ("animate.num_pairs=1", "reconstruct.max_videos=2", "reconstruct.max_frames=3",
               "animate.max_frames=3", "reconstruct.gif=false", "animate.gif=false")
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, *options) == 0, stage
    index = json.loads((project.outputs / "reconstruction" / "index.json").read_text())
    assert index["animator"] == "checkpoint" and sorted(index["videos"]) == ["video0", "video1"]
    predicted = read_frames(project.outputs / "reconstruction" / "video0")
    assert predicted.shape == (3, 64, 64, 3)
    metrics = json.loads((project.outputs / "metrics.json").read_text())
    # an untrained generator does not reproduce the driving frames, but its output is a valid image
    assert 0 < metrics["recon/l1"] < 1 and 0 < metrics["recon/psnr"] < 100
    assert metrics["recon/frames"] == 6
    assert all(f"anim/{mode}/l1_first" in metrics for mode in ("relative", "standard", "avd"))
    assert np.isfinite(list(metrics.values())).all()
