"""The avd stage (docs/model.md, "AVD stage"): TPSMM's AVD network trained in a stage of its own, on the train
stage's model, into ``{paths.checkpoints}/<experiment>/avd/seed<N>``.

A real SIGKILL of `cpabanim avd` after its first checkpoint, and the time-limit warning (exit 3, requeue), lose
nothing: run again, the stage resumes and ends with the weights of a run never interrupted, ``torch.equal`` per
tensor, and the train stage's checkpoint is never written. 0 and 2 loader workers give the same weights;
``train.avd_epochs: 0`` passes the trained model on; the keys of the AVD schedule re-run the avd stage only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from cpabanim import cli
from cpabanim.config.typed import TRAIN_AVD, TRAIN_AVD_HOW_IT_RUNS
from cpabanim.files import sha256_file
from cpabanim.models.checkpoint import read_checkpoint
from cpabanim.pipeline import all_stages
from cpabanim.training.preemption import INTERRUPTED_NAME, PREEMPTED_EXIT
from tests.train.test_preemption import ROOT, TINY, fake_scontrol, start, write_frames

# 2 videos x 4 repeats = 4 batches of 2 an epoch, 40 epochs: 160 steps, long enough to be interrupted half-way
STEPS = 160
AVD = [
    "train.max_steps=2",
    "train.avd_epochs=40",
    "train.avd_repeats=4",
    "train.avd_batch_size=2",
    "train.avd_milestones=[10, 30]",
    "train.avd_checkpoint_minutes=0",
    "train.avd_workers=0",
]


def stage_args(stage: str, data: Path, checkpoints: Path, *settings: str) -> list[str]:
    """`cpabanim <stage>` arguments (after `cpabanim`) on the tiny settings, reading ``data``, writing under
    ``checkpoints``."""
    values = [
        *TINY,
        *AVD,
        f"paths.processed={data / 'processed'}",
        f"paths.masks={data / 'masks'}",
        f"paths.checkpoints={checkpoints}",
        f"paths.weights={data / 'weights'}",
        *settings,
    ]
    return [stage, "--params", str(ROOT / "params.yaml"), *(a for v in values for a in ("--set", v))]


def folders(checkpoints: Path) -> tuple[Path, Path]:
    """(the train stage's folder, the avd stage's) of the default experiment, seed 0."""
    return checkpoints / "default" / "seed0", checkpoints / "default" / "avd" / "seed0"


def file_version(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_mtime_ns


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = read_checkpoint(a), read_checkpoint(b)
    assert first["complete"] and second["complete"]
    assert first["avd_progress"] == second["avd_progress"] == {"epoch": 40, "batch": 0, "step": STEPS}
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Frames of 2 videos and a trained model (2 steps) in ``data / "trained"``."""
    root = tmp_path_factory.mktemp("avd")
    write_frames(root / "processed", root / "masks")
    assert cli.main(stage_args("train", root, root / "trained")) == 0
    return root


def trained_copy(data: Path, checkpoints: Path) -> Path:
    """A copy of the trained model's checkpoint folder under ``checkpoints`` (each test its own avd folder)."""
    shutil.copytree(data / "trained", checkpoints)
    return checkpoints


@pytest.fixture(scope="module")
def uninterrupted(data) -> Path:
    """The avd stage's model of one run straight to the end (in this process, no loader worker)."""
    checkpoints = trained_copy(data, data / "straight")
    assert cli.main(stage_args("avd", data, checkpoints)) == 0
    return folders(checkpoints)[1] / "last.pt"


def wait_for_checkpoint(proc, path: Path, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"the avd stage ended before its first checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)


def test_a_killed_avd_stage_resumes_to_the_uninterrupted_weights(tmp_path, data, uninterrupted, caplog):
    checkpoints = trained_copy(data, tmp_path / "ckpt")
    trained, avd = folders(checkpoints)
    before = file_version(trained / "last.pt")
    log = tmp_path / "avd.log"
    # two loader workers, in the stage's process group: the kill takes them too
    args = stage_args("avd", data, checkpoints, "train.avd_checkpoint_every=1", "train.avd_workers=2")
    proc = start(args, log, new_session=True)
    try:
        wait_for_checkpoint(proc, avd / "last.pt", log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    saved = read_checkpoint(avd / "last.pt")
    assert not saved["complete"] and 1 <= saved["avd_progress"]["step"] < STEPS, "killed half-way"
    assert not (avd / "complete.json").exists() and file_version(trained / "last.pt") == before

    caplog.set_level("INFO")
    assert cli.main(stage_args("avd", data, checkpoints)) == 0  # run again: resumes, here without workers
    assert f"resuming the AVD training from {avd / 'last.pt'} at step" in caplog.text
    assert (avd / "complete.json").is_file() and not list(avd.glob(".*.tmp*"))
    assert_same_weights(avd / "last.pt", uninterrupted)
    assert file_version(trained / "last.pt") == before  # the trained model is only ever read


def test_zero_and_two_loader_workers_give_the_same_weights(tmp_path, data, uninterrupted):
    checkpoints = trained_copy(data, tmp_path / "ckpt")
    assert cli.main(stage_args("avd", data, checkpoints, "train.avd_workers=2")) == 0
    assert_same_weights(folders(checkpoints)[1] / "last.pt", uninterrupted)


def test_the_time_limit_warning_checkpoints_requeues_exits_3_and_a_rerun_resumes(tmp_path, data, uninterrupted):
    checkpoints = trained_copy(data, tmp_path / "ckpt")
    trained, avd = folders(checkpoints)
    before = file_version(trained / "last.pt")
    env, calls = fake_scontrol(tmp_path)
    log = tmp_path / "avd.log"
    proc = start(stage_args("avd", data, checkpoints, "train.avd_checkpoint_every=1"), log, env)
    try:
        wait_for_checkpoint(proc, avd / "last.pt", log)
        proc.send_signal(signal.SIGURG)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == PREEMPTED_EXIT, text[-3000:]
    saved = read_checkpoint(avd / "last.pt")
    step = saved["avd_progress"]["step"]
    assert not saved["complete"] and step < STEPS
    assert f"training interrupted by SIGURG at step {step}; checkpoint written" in text and "Traceback" not in text
    assert json.loads((avd / INTERRUPTED_NAME).read_text())["signal"] == "SIGURG"
    assert calls.read_text().split() == ["requeue", "4242"]
    assert not (avd / "complete.json").exists() and file_version(trained / "last.pt") == before
    assert cli.main(stage_args("avd", data, checkpoints)) == 0
    assert not (avd / INTERRUPTED_NAME).exists()
    assert_same_weights(avd / "last.pt", uninterrupted)


def test_no_avd_epochs_passes_the_trained_model_on(tmp_path, data):
    checkpoints = trained_copy(data, tmp_path / "ckpt")
    trained, avd = folders(checkpoints)
    assert cli.main(stage_args("avd", data, checkpoints, "train.avd_epochs=0")) == 0
    model, source = read_checkpoint(avd / "last.pt"), read_checkpoint(trained / "last.pt")
    assert model["complete"] and model["avd_trained"] is False and model["avd_steps"] == 0
    assert json.loads((avd / "complete.json").read_text())["avd_trained"] is False
    for name, tensor in source["model"].items():
        assert torch.equal(tensor, model["model"][name]), name
    # what the model was made with: the training's record and the avd stage's keys
    assert model["params"]["train"]["max_steps"] == 2 and model["params"]["train"]["avd_epochs"] == 0


def test_the_avd_keys_re_run_the_avd_stage_only(tmp_path, data, uninterrupted, caplog):
    stages = all_stages()
    avd_keys = {f"train.{key}" for key in TRAIN_AVD}
    assert not [key for key in stages["train"].params if key.startswith("train.avd")]
    assert avd_keys <= set(stages["avd"].params)
    assert {f"train.{key}" for key in TRAIN_AVD_HOW_IT_RUNS} <= set(stages["avd"].settings)
    assert not set(stages["avd"].params) & {f"train.{key}" for key in TRAIN_AVD_HOW_IT_RUNS}
    # the stages after it read its model (reconstruct too, as TPSMM reconstructs after its AVD training)
    assert all("avd_checkpoints" in stages[name].inputs for name in ("reconstruct", "animate"))
    # the train stage's checkpoint records none of them, and training does not start again when one changes
    checkpoints = trained_copy(data, tmp_path / "ckpt")
    trained, avd = folders(checkpoints)
    assert not [key for key in read_checkpoint(trained / "last.pt")["params"]["train"] if key.startswith("avd")]
    before = file_version(trained / "last.pt")
    caplog.set_level("INFO")
    assert cli.main(stage_args("train", data, checkpoints, "train.avd_lr=0.01", "train.avd_epochs=1")) == 0
    assert "is complete (step 2); nothing to do" in caplog.text and file_version(trained / "last.pt") == before
    # the avd stage: its run with other keys is another's, kept aside; run again with the same, nothing to do
    shutil.copytree(uninterrupted.parent, avd)
    assert cli.main(stage_args("avd", data, checkpoints, "train.avd_epochs=1")) == 0
    kept = json.loads((avd / "superseded" / "001.json").read_text())
    assert kept["changed"] == ["schedule.epochs"] and kept["step"] == 2
    assert read_checkpoint(avd / "last.pt")["avd_progress"]["step"] == 4
    caplog.clear()
    assert cli.main(stage_args("avd", data, checkpoints, "train.avd_epochs=1", "train.avd_workers=1")) == 0
    assert "is trained already" in caplog.text and not (avd / "superseded" / "002.pt").exists()


def test_the_stage_trains_what_fit_avd_trains_on_the_trained_model(tmp_path):
    """The library under the stage (cpabanim/training/avd_stage.py) on an in-memory dataset: the model it writes is
    the trained model after :func:`fit_avd` (tests/models/test_avd_training.py: TPSMM's schedule), bit for bit; only
    the AVD network and the keypoint detector's BatchNorm statistics differ from the trained model."""
    from cpabanim.models.checkpoint import load_checkpoint
    from cpabanim.training.avd import AVDSchedule, fit_avd
    from cpabanim.training.avd_stage import AVDJob, run_avd
    from cpabanim.training.loop import train
    from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

    dataset = MovingBlobDataset(num_items=4)
    params = tiny_params(tmp_path, max_steps=1, avd_epochs=3, avd_repeats=2, avd_batch_size=4, avd_milestones=[1])
    train(job_of(params), dataset=dataset)
    job = AVDJob.of(params, tmp_path / "ckpt" / "last.pt", tmp_path / "avd", tmp_path / "unused")
    result = run_avd(job, dataset=dataset)
    assert result["steps"] == 3 * 2 and result["epochs"] == 3 and result["trained"]
    model, _ = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    trained = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fit_avd(model, dataset, AVDSchedule.of(job_of(params).train), torch.device("cpu"), seed=params["seed"])
    written = read_checkpoint(tmp_path / "avd" / "last.pt")["model"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, written[name]), name
    changed = [name for name, tensor in written.items() if not torch.equal(tensor, trained[name])]
    assert any(name.startswith("avd.") for name in changed)
    others = [name for name in changed if not name.startswith("avd.")]
    assert others and all(
        name.startswith("kp_detector.") and ("running_" in name or "num_batches" in name) for name in others
    )
