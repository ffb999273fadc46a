"""The train stage refuses what it can before training (an AVD batch the videos cannot fill) and holds its
checkpoint folder until the AVD network is trained too (issue 24)."""

from __future__ import annotations

import subprocess

import pytest

from cpabanim import cli
from cpabanim.errors import CpabanimError
from cpabanim.training import loop
from tests.conftest import PROJECT_ROOT
from tests.reliability.helpers import python_child
from tests.train.helpers import MovingBlobDataset, job_of, tiny_params
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


def _trainer_held_in_its_avd_stage(tmp_path) -> subprocess.Popen:
    """A child running the train stage's training on a tiny job, stopped at the start of its AVD stage (it prints
    "avd", then waits for a line on stdin before training the AVD network and writing the marker)."""
    code = f"""
        import sys
        from pathlib import Path
        from cpabanim.pipeline import train as stage
        from cpabanim.runtime import Runtime
        from cpabanim.training import avd, loop
        from cpabanim.training.preemption import stop_on_signals
        from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

        job = job_of(tiny_params(Path({str(tmp_path)!r}), motion="tps", max_steps=1, avd_epochs=1, avd_batch_size=2,
                                 avd_repeats=1))
        loop.build_dataset = lambda job, needs_masks, num_repeats=None: MovingBlobDataset(num_items=2)
        train_avd = avd.train_avd

        def held(job, device=None, dataset=None):
            print("avd", flush=True)
            sys.stdin.readline()
            return train_avd(job, device)

        avd.train_avd = held
        with stop_on_signals() as stop, Runtime.start(job.device, job.train.amp) as runtime:
            stage.train_here(job, job.checkpoint.parent, runtime, stop, restart=False)
        print("done", flush=True)
    """
    return python_child(code)


def test_a_second_training_is_refused_while_the_first_trains_its_avd_network(tmp_path):
    from cpabanim.training.avd import train_avd

    first = _trainer_held_in_its_avd_stage(tmp_path)
    try:
        assert first.stdout.readline().strip() == "avd", first.stderr.read()
        params = tiny_params(tmp_path, motion="tps", max_steps=1, avd_epochs=1, avd_batch_size=2, avd_repeats=1)
        for second in (
            lambda: loop.train(job_of(params), dataset=MovingBlobDataset(num_items=2)),
            lambda: train_avd(job_of(params), dataset=MovingBlobDataset(num_items=2)),
        ):
            with pytest.raises(CpabanimError) as info:
                second()
            message = str(info.value)
            assert f"in use by another trainer (pid {first.pid}" in message and "\n" not in message
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "done", first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert (tmp_path / "ckpt" / "complete.json").is_file()
    assert loop.train(job_of(params), dataset=MovingBlobDataset(num_items=2))["complete"]  # free once it finished
