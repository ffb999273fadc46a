"""`cpabanim train` end to end on a tiny frame-folder dataset with region masks: FramesDataset, the semantic
loss, MLflow logging (losses, lr, image grid, checkpoint artifact) and re-running after completion."""

from __future__ import annotations

import pytest

from cpabanim import cli
from tests.train.test_preemption import write_frames

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_cli_train_with_masks_and_tracking(tmp_path):
    pytest.importorskip("cpabanim.data.dataset")
    processed, masks = tmp_path / "processed", tmp_path / "masks"
    write_frames(processed, masks)
    db = tmp_path / "mlflow.db"
    args = [
        "train",
        "--params",
        str(ROOT / "params.yaml"),
        "--set",
        f"paths.processed={processed}",
        "--set",
        f"paths.masks={masks}",
        "--set",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
        "--set",
        f"tracking.uri=sqlite:///{db}",
        "--set",
        "data.frame_size=32",
        "--set",
        "data.num_repeats=2",
        "--set",
        "model.motion=tps",
        "--set",
        "model.num_cpab=1",
        "--set",
        "loss.semantic=masks",
        "--set",
        "loss.scales=[1.0]",
        "--set",
        "train.batch_size=2",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.image_every=2",
        "--set",
        "train.log_every=1",
        "--set",
        "train.checkpoint_every=0",
    ]
    assert cli.main(args) == 0
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    train_runs = [r for r in runs if r.data.tags.get("cpabanim.stage") == "train"]
    assert len(train_runs) == 1
    run = train_runs[0]
    assert {"loss/perceptual", "loss/semantic", "loss/total", "lr"} <= set(run.data.metrics)
    assert run.data.params["loss.semantic"] == "masks"
    client = mlflow.MlflowClient()
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "grids")]
    assert artifacts == ["grids/step_000002.png"]
    # complete: a second call resumes nothing and exits cleanly
    assert cli.main(args) == 0
    # without masks the semantic loss is a clear error (exit code 1, no traceback)
    bad = [a if not a.startswith("paths.masks=") else f"paths.masks={tmp_path / 'none'}" for a in args] + ["--restart"]
    assert cli.main(bad) == 1
