"""Trainer: a tiny model overfits, resume == uninterrupted run, DDP smoke (gloo, 2 processes), schedule, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpabanim.config.typed import TrainConfig
from cpabanim.errors import ConfigError, CpabanimError
from cpabanim.models.checkpoint import load_checkpoint, save_checkpoint
from cpabanim.training.loop import train
from cpabanim.training.schedule import dropout_probability, epoch_order
from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_model_overfits_two_frames(tmp_path):
    params = tiny_params(
        tmp_path, motion="tps", max_steps=60, checkpoint_every=0, num_epochs=1000, lr_generator=2.0e-3, dropout_epoch=0
    )
    params["loss"].update({"equivariance": 0.0, "warp": 0.0, "bg": 0.0})
    dataset = MovingBlobDataset(num_items=2)
    first = train(job_of(tiny_params(tmp_path / "first", motion="tps", max_steps=1, dropout_epoch=0)), dataset=dataset)[
        "losses"
    ]["perceptual"]
    last = train(job_of(params), dataset=dataset)["losses"]["perceptual"]
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("motion", ["cpab"])
def test_resume_gives_the_uninterrupted_parameters(tmp_path, motion):
    dataset = MovingBlobDataset(num_items=4)  # 2 batches per epoch: the interruption crosses an epoch
    straight = tiny_params(tmp_path / "a", motion=motion, max_steps=5, dropout_epoch=2, num_epochs=4)
    train(job_of(straight), dataset=dataset)
    interrupted = tiny_params(tmp_path / "b", motion=motion, max_steps=5, dropout_epoch=2, num_epochs=4)
    partial = train(job_of(interrupted), dataset=dataset, stop_after=3)
    assert partial["step"] == 3
    _, extra = load_checkpoint(partial["checkpoint"])
    assert extra["step"] == 3 and not extra["complete"]
    resumed = train(job_of(interrupted), dataset=dataset)
    assert resumed["step"] == 5
    model_a, extra_a = load_checkpoint(tmp_path / "a" / "ckpt" / "last.pt")
    model_b, extra_b = load_checkpoint(tmp_path / "b" / "ckpt" / "last.pt")
    assert extra_a["complete"] and extra_b["complete"]
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    # a complete checkpoint: re-running does nothing
    assert train(job_of(interrupted), dataset=dataset)["step"] == 5


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CpabanimError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CpabanimError, match="corrupt"):
        load_checkpoint(bad)


def test_checkpoint_round_trip_is_atomic(tmp_path):
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.full import AnimationModel

    model = AnimationModel(ModelConfig(num_cpab=1, motion="tps"))
    path = save_checkpoint(tmp_path / "x" / "last.pt", model, step=7, epoch=1, params={"a": 1}, complete=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left
    loaded, extra = load_checkpoint(path)
    assert extra["step"] == 7 and extra["params"] == {"a": 1} and not loaded.training
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_schedule_helpers():
    p = TrainConfig(dropout_epoch=35, dropout_inc_epoch=10, dropout_maxp=0.3, dropout_startp=0.1)
    assert dropout_probability(0, p) == pytest.approx(0.1)
    assert dropout_probability(5, p) == pytest.approx(0.25)
    assert dropout_probability(20, p) == pytest.approx(0.3)
    assert dropout_probability(35, p) == 0.0
    rank0 = epoch_order(10, 0, 3, 0, 2, 2)
    rank1 = epoch_order(10, 0, 3, 1, 2, 2)
    assert len(rank0) == len(rank1) == 2
    assert not set(sum(rank0, [])) & set(sum(rank1, []))
    assert epoch_order(10, 0, 3, 0, 1, 2) == epoch_order(10, 0, 3, 0, 1, 2)
    assert epoch_order(10, 0, 3, 0, 1, 2) != epoch_order(10, 0, 4, 0, 1, 2)


def test_bad_config_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="train.amp"):
        tiny_params(tmp_path, amp="fp8")
    with pytest.raises(ConfigError, match="model.motion"):
        tiny_params(tmp_path, motion="spline")
    params = tiny_params(tmp_path)
    params["model"]["dense_motion"]["num_blocks"] = 1  # too shallow for 3 occlusion masks at scale 0.5
    with pytest.raises(ConfigError, match="hourglass levels"):
        train(job_of(params), dataset=MovingBlobDataset(4))


def test_missing_data_is_a_clear_error(tmp_path):
    from cpabanim.errors import DataError

    params = tiny_params(tmp_path)
    params["paths"]["processed"] = str(tmp_path / "nothing")
    with pytest.raises(DataError, match="preprocess"):
        train(job_of(params))


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from pathlib import Path
from cpabanim.training.loop import train
from tests.train.helpers import MovingBlobDataset, job_of, tiny_params
params = tiny_params(Path({tmp!r}), motion="tps", max_steps=2)
result = train(job_of(params), dataset=MovingBlobDataset(num_items=8))
# one file per rank: the two processes share stdout, and their prints can interleave
import os
Path({tmp!r}, "result_" + os.environ["RANK"]).write_text(str(result["step"]))
"""


def test_ddp_two_processes_gloo(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), tmp=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"result_{rank}").read_text() for rank in (0, 1)] == ["2", "2"]
    model, extra = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert extra["step"] == 2 and extra["complete"]


def test_changed_training_params_restart_and_a_longer_schedule_continues(tmp_path):
    dataset = MovingBlobDataset(num_items=4)
    params = tiny_params(tmp_path, motion="tps", max_steps=2, dropout_epoch=0, num_epochs=100)
    assert train(job_of(params), dataset=dataset)["step"] == 2
    # a longer schedule continues the complete run instead of starting again
    longer = tiny_params(tmp_path, motion="tps", max_steps=3, dropout_epoch=0, num_epochs=100)
    assert train(job_of(longer), dataset=dataset)["step"] == 3
    assert not (tmp_path / "ckpt" / "superseded").exists()
    # a parameter that changes what is learned: train from scratch, keep the old checkpoint beside
    other = tiny_params(tmp_path, motion="tps", max_steps=2, dropout_epoch=0, num_epochs=100, lr_generator=5.0e-3)
    assert train(job_of(other), dataset=dataset)["step"] == 2
    _, superseded = load_checkpoint(tmp_path / "ckpt" / "superseded" / "001.pt")  # every one kept, numbered
    assert superseded["step"] == 3
    _, current = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert current["step"] == 2 and current["params"]["train"]["lr_generator"] == 5.0e-3


def test_channels_last_switch_trains_on_cpu(tmp_path):
    params = tiny_params(tmp_path, motion="cpab", max_steps=1, channels_last=True)
    result = train(job_of(params), dataset=MovingBlobDataset(num_items=4))
    assert result["step"] == 1 and all(torch.isfinite(torch.tensor(v)) for v in result["losses"].values())


def test_init_from_warm_starts_a_cpab_model_from_a_tps_checkpoint(tmp_path, caplog):
    import logging

    dataset = MovingBlobDataset(num_items=4)
    tps = tiny_params(tmp_path / "tps", motion="tps", max_steps=1)
    train(job_of(tps), dataset=dataset)
    source = tmp_path / "tps" / "ckpt" / "last.pt"
    cpab = tiny_params(tmp_path / "cpab", motion="cpab", max_steps=1, init_from=str(source))
    with caplog.at_level(logging.INFO, logger="cpabanim.training.loop"):
        assert train(job_of(cpab), dataset=dataset)["step"] == 1
    line = next(r.getMessage() for r in caplog.records if "warm start from" in r.getMessage())
    loaded, sliced, fresh = (int(line.split(word)[0].split()[-1]) for word in (" tensors loaded", " sliced", " fresh"))
    assert loaded > 0 and sliced > 0 and fresh == 0  # the dense-motion layers that depend on the transforms: sliced
    with pytest.raises(ConfigError, match="init_from"):
        train(
            job_of(tiny_params(tmp_path / "x", motion="cpab", max_steps=1, init_from=str(tmp_path / "nope.pt"))),
            dataset=dataset,
        )
