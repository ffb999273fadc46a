"""The train stage refuses what it can before training (an AVD batch the videos cannot fill, issue 24), and the
avd stage holds its checkpoint folder while it trains: a second AVD trainer there is refused (issue 34)."""

from __future__ import annotations

import subprocess

import pytest

from cpabanim import cli
from cpabanim.errors import CpabanimError
from cpabanim.training import loop
from tests.conftest import PROJECT_ROOT
from tests.reliability.helpers import python_child
from tests.train.helpers import MovingBlobDataset, tiny_params
from tests.train.test_preemption import write_frames


def test_an_avd_batch_larger_than_the_training_videos_is_refused_before_training(tmp_path, monkeypatch, caplog):
    processed, masks = tmp_path / "processed", tmp_path / "masks"
    write_frames(processed, masks, videos=2)

    def never(*args, **kwargs):
        raise AssertionError("training ran before the AVD schedule was checked")

    monkeypatch.setattr(loop, "train", never)
    settings = {
        "paths.processed": processed,
        "paths.masks": masks,
        "paths.checkpoints": tmp_path / "ckpt",
        "tracking.enabled": "false",
        "data.frame_size": 32,
        "model.motion": "tps",
        "model.num_cpab": 1,
        "train.batch_size": 2,
        "train.avd_batch_size": 8,
        "train.avd_repeats": 1,
    }
    args = ["train", "--params", str(PROJECT_ROOT / "params.yaml")]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    assert cli.main(args) == 1
    error = caplog.records[-1].getMessage()  # what the CLI prints, in one line
    assert "\n" not in error
    assert "train.avd_batch_size 8 is larger than the 2 training videos x train.avd_repeats 1" in error


def _avd_trainer_held(tmp_path) -> subprocess.Popen:
    """A child that trains a tiny model, then runs the avd stage's training on it, stopped at the start of the AVD
    optimisation (it prints "avd", then waits for a line on stdin before training and writing the marker)."""
    code = f"""
        import sys
        from pathlib import Path
        from cpabanim.training import avd
        from cpabanim.training.avd_stage import AVDJob, run_avd
        from cpabanim.training.loop import train
        from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

        root = Path({str(tmp_path)!r})
        params = tiny_params(root, motion="tps", max_steps=1, avd_epochs=1, avd_batch_size=2, avd_repeats=1)
        dataset = MovingBlobDataset(num_items=2)
        train(job_of(params), dataset=dataset)
        fit = avd.AVDTraining.fit

        def held(self, *args, **kwargs):
            print("avd", flush=True)
            sys.stdin.readline()
            return fit(self, *args, **kwargs)

        avd.AVDTraining.fit = held
        run_avd(AVDJob.of(params, root / "ckpt" / "last.pt", root / "avd", root / "processed"), dataset=dataset)
        print("done", flush=True)
    """
    return python_child(code)


def test_a_second_avd_trainer_is_refused_while_the_first_trains(tmp_path):
    from cpabanim.training.avd_stage import AVDJob, run_avd

    first = _avd_trainer_held(tmp_path)
    params = tiny_params(tmp_path, motion="tps", max_steps=1, avd_epochs=1, avd_batch_size=2, avd_repeats=1)
    job = AVDJob.of(params, tmp_path / "ckpt" / "last.pt", tmp_path / "avd", tmp_path / "processed")
    try:
        assert first.stdout.readline().strip() == "avd", first.stderr.read()
        with pytest.raises(CpabanimError) as info:
            run_avd(job, dataset=MovingBlobDataset(num_items=2))
        message = str(info.value)
        assert f"in use by another trainer (pid {first.pid}" in message and "\n" not in message
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "done", first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert (tmp_path / "avd" / "complete.json").is_file()
    assert run_avd(job, dataset=MovingBlobDataset(num_items=2))["steps"] == 1  # free once it finished: trained already
