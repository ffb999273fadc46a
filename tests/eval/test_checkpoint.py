"""The stages with a real (untrained, tiny) checkpoint written by the model's own ``save_checkpoint``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpabanim.config.layers import load_params
from cpabanim.config.typed import ModelConfig
from cpabanim.data.frames import read_frames

checkpoint = pytest.importorskip("cpabanim.models.checkpoint", reason="the model package is not available")


def experiment_folders(project) -> tuple[Path, Path]:
    """(the avd stage's checkpoint folder, outputs) of the project's experiment: the model reconstruct and animate
    read, as the stages resolve them."""
    from cpabanim.config.paths import ExperimentPaths

    params = load_params(project.params, overrides=project.base)
    paths = ExperimentPaths.of(params["paths"], params["experiment"], params["seed"])
    return paths.avd, paths.outputs


def test_stages_run_a_saved_checkpoint(fake_dataset):
    from cpabanim.models.full import AnimationModel

    project = fake_dataset
    params = load_params(project.params)
    checkpoints, outputs = experiment_folders(project)
    project.outputs = outputs
    checkpoint.save_checkpoint(
        checkpoints / "last.pt", AnimationModel(ModelConfig.from_mapping(params["model"])), params=params
    )
    options = (
        "animate.num_pairs=1",
        "reconstruct.max_videos=2",
        "reconstruct.max_frames=3",
        "animate.max_frames=3",
        "reconstruct.gif=false",
        "animate.gif=false",
    )
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, *options) == 0, stage
    index = json.loads((project.outputs / "reconstruction" / "index.json").read_text())
    assert index["animator"] == "checkpoint" and sorted(index["videos"]) == ["video0", "video1"]
    predicted = read_frames(project.outputs / "reconstruction" / "video0")
    assert predicted.shape == (3, 64, 64, 3)
    # the first video's motion, explained in labelled pictures
    explained = project.outputs / "reconstruction" / "explain" / "video0"
    assert {p.name for p in explained.glob("*.png")} == {
        "keypoints.png",
        "flow.png",
        "occlusion.png",
        "contributions.png",
        "overview.png",
    }
    metrics = json.loads((project.outputs / "metrics.json").read_text())
    # an untrained generator does not reproduce the driving frames, but its output is a valid image
    assert 0 < metrics["recon/l1"] < 1 and 0 < metrics["recon/psnr"] < 100
    assert metrics["recon/frames"] == 6
    assert all(f"anim/{mode}/l1_first" in metrics for mode in ("relative", "standard", "avd"))
    assert np.isfinite(list(metrics.values())).all()


@pytest.mark.parametrize("stage", ["reconstruct", "animate"])
def test_stages_refuse_a_checkpoint_that_would_run_code(fake_dataset, caplog, stage):
    from tests.reliability.helpers import write_malicious_checkpoint

    project = fake_dataset
    marker = project.root / "code-ran"
    checkpoints, outputs = experiment_folders(project)
    path = write_malicious_checkpoint(checkpoints / "last.pt", marker)
    assert project.run(stage, "animate.num_pairs=1", "reconstruct.max_videos=1") == 1  # one line, exit 1
    assert not marker.exists()
    assert any(str(path) in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert not (outputs / ("reconstruction" if stage == "reconstruct" else "animation") / "index.json").exists()
