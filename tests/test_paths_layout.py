"""One layout of an experiment's folders: ``ExperimentPaths`` (what library code and the demo use) agrees with
the stage declarations' output paths (what the orchestrators and the CLI's ``io`` use), for two experiments."""

from __future__ import annotations

import pytest

from cpabanim.config.layers import load_params
from cpabanim.config.paths import CHECKPOINT_NAME, COMPLETE_MARKER, SUPERSEDED_NAME, ExperimentPaths
from cpabanim.pipeline import all_stages, stage_config, stage_io

from .conftest import PROJECT_ROOT


@pytest.mark.parametrize(("experiment", "seed"), [("default", 0), ("tps", 2)])
def test_experiment_paths_agree_with_the_stage_outputs(tmp_path, experiment, seed):
    params = load_params(
        PROJECT_ROOT / "params.yaml",
        overrides=[f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.outputs={tmp_path / 'out'}"],
    )
    params["experiment"], params["seed"], params["seeds"] = experiment, seed, [seed, seed + 1]
    folders = ExperimentPaths.of(params["paths"], experiment, seed)
    stages = all_stages()
    outputs = {
        name: path
        for stage in stages.values()
        if not stage.aggregate
        for name, path in stage_io(stage, params).outputs.items()
    }
    assert outputs["checkpoints"] == folders.checkpoints == tmp_path / "ckpt" / experiment / f"seed{seed}"
    assert folders.checkpoint == folders.checkpoints / CHECKPOINT_NAME
    # the avd stage's folder: beside the seed folders, never inside train's (DVC refuses nested outputs)
    assert outputs["avd_checkpoints"] == folders.avd == tmp_path / "ckpt" / experiment / "avd" / f"seed{seed}"
    assert folders.avd_checkpoint == folders.avd / CHECKPOINT_NAME
    assert stages["avd"].output("avd_checkpoints").marker == COMPLETE_MARKER
    assert folders.complete_marker.name == COMPLETE_MARKER == stages["train"].output("checkpoints").marker
    assert folders.superseded == folders.checkpoints / SUPERSEDED_NAME
    assert outputs["reconstruction"] == folders.outputs / "reconstruction"
    assert outputs["animation"] == folders.outputs / "animation"
    for name in ("metrics", "unavailable", "per_video"):
        assert outputs[name].parent == folders.outputs
    report = stage_io(stages["report"], params, [experiment])
    assert all(path.is_relative_to(folders.report) for path in report.outputs.values())
    assert report.experiments[experiment][seed]["checkpoints"] == folders.checkpoints
    assert report.experiments[experiment][seed]["avd_checkpoints"] == folders.avd
    other = ExperimentPaths.of(params["paths"], experiment, seed + 1)
    assert report.experiments[experiment][seed + 1]["metrics"].parent == other.outputs  # every seed of the params


def test_a_stage_config_holds_the_params_paths_unchanged():
    params = load_params(PROJECT_ROOT / "params.yaml")
    params["experiment"] = "tps"
    for stage in all_stages().values():
        assert stage_config(stage, params).paths.to_dict() == params["paths"]  # the experiment's folders: io only
