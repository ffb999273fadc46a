"""The report reads what each experiment's runs recorded, and keeps MLflow's books (docs/pipeline.md, "MLflow").

Two tiny experiments are trained through the CLI in one orchestrated invocation, `default` with
``train.max_steps=1`` and `tps` with ``train.max_steps=2``; the report compares them, then a later report run by
hand (with today's params saying ``train.max_steps=999``) runs again. The table shows 1 and 2; each experiment has
a registered model; parents carry source, user and the processed dataset; the later report stretches no parent.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cpabanim import cli
from cpabanim.pipeline import all_stages, stage_io
from cpabanim.reporting import recorded, tables
from cpabanim.tracking import provenance

from ..conftest import PROJECT_ROOT

EXPERIMENTS = {"default": 1, "tps": 2}  # experiment -> train.max_steps
INVOCATION = "snakemake-1-1"  # the first, orchestrated invocation (what CPABANIM_PIPELINE_RUN names)
TINY = [
    "data.frame_size=32",
    "model.num_cpab=1",
    "model.generator={block_expansion: 8, max_features: 32, num_down_blocks: 2}",
    "model.dense_motion={block_expansion: 8, max_features: 32, num_blocks: 2, scale_factor: 0.5}",
    "model.avd={id_bottle_size: 8, pose_bottle_size: 8}",
    "loss.scales=[1.0]",
    "train.batch_size=2",
    "train.checkpoint_every=0",
    "train.image_every=0",
    "train.avd_epochs=0",
    "train.num_workers=0",
]


def _frames(folder, count: int = 3, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for t in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{t:05d}.png")


def _arguments(root) -> list[str]:
    values = [
        f"paths.processed={root / 'processed'}",
        f"paths.masks={root / 'masks'}",
        f"paths.checkpoints={root / 'checkpoints'}",
        f"paths.outputs={root / 'outputs'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        *TINY,
    ]
    return ["--params", str(PROJECT_ROOT / "params.yaml"), *(a for v in values for a in ("--set", v))]


def _evaluated(root, arguments: list[str]) -> None:
    """What reconstruct, animate and evaluate leave for the report, without running them (no MLflow runs)."""
    from cpabanim.config.layers import load_params

    params = load_params(PROJECT_ROOT / "params.yaml", overrides=arguments[3::2])
    io = stage_io(all_stages()["report"], params, list(EXPERIMENTS))
    for number, paths in enumerate(seeds[0] for seeds in io.experiments.values()):
        paths["metrics"].parent.mkdir(parents=True, exist_ok=True)
        paths["metrics"].write_text(json.dumps({"recon/l1": 0.1 + number, "baseline/copy_source/recon/l1": 0.3}))
        paths["per_video"].write_text("part,video,l1\nreconstruction,v0,0.1\n")
        _frames(paths["reconstruction"] / "v0")
        paths["animation"].mkdir(parents=True, exist_ok=True)


def _parents(client, experiment_id: str) -> dict:
    found = client.search_runs([experiment_id], filter_string=f"tags.`{provenance.TAG_ROLE}` = 'pipeline'")
    return {run.info.run_id: run for run in found}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """Train both experiments, report them (invocation INVOCATION), then report again by hand."""
    import mlflow

    root = tmp_path_factory.mktemp("recorded")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow puts a sqlite store's artifacts under ./mlruns
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv(provenance.PIPELINE_RUN_ENV, INVOCATION)
        for number in range(2):
            _frames(root / "processed" / "train" / f"t{number}", count=4, seed=number)
        _frames(root / "processed" / "test" / "v0")
        (root / "processed" / provenance.MANIFEST_NAME).write_text(json.dumps({"videos": {"test": {"v0": 3}}}))
        (root / "masks").mkdir()
        arguments = _arguments(root)
        for experiment, steps in EXPERIMENTS.items():
            for stage in ("train", "avd"):  # avd: the model the report logs (train.avd_epochs=0: the trained one)
                run = [stage, *arguments, "--experiment", experiment, "--set", f"train.max_steps={steps}"]
                assert cli.main(run) == 0
        _evaluated(root, arguments)
        assert cli.main(["report", *arguments, "--experiments", ",".join(EXPERIMENTS)]) == 0
        first_table = (root / "outputs" / "report" / "experiments.csv").read_text()
        client = mlflow.MlflowClient()
        experiment_id = client.get_experiment_by_name("cpabanim").experiment_id
        before = _parents(client, experiment_id)
        patch.delenv(provenance.PIPELINE_RUN_ENV)  # a later report, run by hand, with other params today
        later = ["report", *arguments, "--set", "train.max_steps=999", "--experiments", ",".join(EXPERIMENTS)]
        assert cli.main(later) == 0
        yield {
            "root": root,
            "client": client,
            "experiment_id": experiment_id,
            "first_table": first_table,
            "before": before,
            "after": _parents(client, experiment_id),
        }


def test_the_table_shows_what_each_experiment_trained_with(reported):
    for text in (reported["first_table"], (reported["root"] / "outputs" / "report" / "experiments.csv").read_text()):
        rows = {row["experiment"]: row for row in csv.DictReader(text.splitlines())}
        assert rows["default"]["train.max_steps"] == "1" and rows["tps"]["train.max_steps"] == "2"
        assert rows["default"]["model.motion"] == "cpab" and rows["tps"]["model.motion"] == "tps"
        # train's and avd's values come from their checkpoints; the other stages ran untracked here: unknown
        source = rows["tps"][tables.SOURCE_COLUMN]
        assert source == "train, avd: last.pt; reconstruct, animate, evaluate: unknown", source
    assert "999" not in (reported["root"] / "outputs" / "report" / "experiments.md").read_text()


def test_a_missing_record_is_unknown_and_mlflow_fills_in_a_missing_checkpoint_record(reported, tmp_path):
    tracking = {"enabled": True, "uri": f"sqlite:///{reported['root'] / 'mlflow.db'}", "experiment": "cpabanim"}
    from_mlflow = recorded.recorded_params("tps", 0, {"checkpoints": tmp_path}, ["train", "evaluate"], tracking)
    assert from_mlflow.sources == {"train": recorded.MLFLOW_SOURCE, "evaluate": recorded.UNKNOWN}
    assert from_mlflow.values["train.max_steps"] == "2" and "paths.processed" not in from_mlflow.values
    nothing = recorded.recorded_params("tps", 0, {"checkpoints": tmp_path}, ["train"], {**tracking, "enabled": False})
    assert nothing.values == {} and nothing.describe() == "train: unknown"
    with_unknown = {"a": from_mlflow, "b": nothing}
    assert "train.max_steps" not in tables.parameter_columns(with_unknown)  # one known value differs from nothing


def test_each_experiment_has_its_own_registered_model_with_params_metrics_and_description(reported):
    client = reported["client"]
    for experiment, steps in EXPERIMENTS.items():
        name = f"cpabanim-{experiment}"
        model = client.get_registered_model(name)
        assert f"`{experiment}`" in model.description and model.tags["cpabanim.experiment"] == experiment
        assert f"train.max_steps = {steps}" in model.description
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, "one version per checkpoint: the later report logged nothing again"
        assert "recon/l1" in versions[0].description
        assert versions[0].source.startswith("models:/")  # the version is the logged model of the checkpoint
        logged = client.get_logged_model(versions[0].source.removeprefix("models:/"))
        assert logged.name == name and logged.params["checkpoint.step"] == str(steps)
        assert {m.key for m in logged.metrics} >= {"recon/l1"}


def test_parents_carry_source_user_and_the_processed_dataset(reported):
    digest = provenance.processed_sha256(reported["root"] / "processed")
    for run in reported["before"].values():
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "snakemake" and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.user"] and tags[provenance.TAG_PROCESSED_SHA256] == digest
        inputs = reported["client"].get_run(run.info.run_id).inputs.dataset_inputs
        assert [d.dataset.digest for d in inputs] == [digest[: provenance.DIGEST_LENGTH]]
        assert inputs[0].dataset.name == f"{tags['data.source']}-processed"


def test_a_later_report_stretches_no_earlier_parent(reported):
    before, after = reported["before"], reported["after"]
    assert len(before) == len(EXPERIMENTS) and set(after) == set(before), "the later report joined the parents"
    for run_id, run in before.items():
        assert after[run_id].info.end_time == run.info.end_time, after[run_id].info.run_name
        assert after[run_id].info.status == run.info.status == "FINISHED"
    stages = reported["client"].search_runs(
        [reported["experiment_id"]], filter_string=f"tags.`{provenance.TAG_STAGE}` = 'report'"
    )
    assert len(stages) == 2  # the later report is a child of the default parent, which it did not re-open


def test_the_recorded_stages_are_the_per_experiment_stages():
    from cpabanim.pipeline.report import RECORDED_STAGES

    assert list(RECORDED_STAGES) == [name for name, stage in all_stages().items() if stage.per_experiment]
