"""Stopping on SLURM's signals (docs/model.md, "Preemption"): `cpabanim train` in a subprocess gets SIGUSR1 or
SIGURG (the time-limit warning) or SIGTERM (preemption, cancellation) after a few steps, finishes its step, writes
the checkpoint (not complete), exits with code 3 and logs one line; under SLURM it requeues its job after a warning
only; run again it resumes, and ends with the parameters of an uninterrupted run, bit for bit. A signal during the
checkpoint write never cuts it short, and a kill during it leaves the previous checkpoint intact.

No SLURM here: ``SLURM_JOB_ID`` is set by hand and ``scontrol`` is a script on PATH that records its arguments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpabanim import cli
from cpabanim.models.checkpoint import load_checkpoint, remove_stale_temp_files, save_checkpoint
from cpabanim.training.preemption import (
    INTERRUPTED_NAME,
    PREEMPTED_EXIT,
    StopRequest,
    agreed_stop,
    requeue_command,
    requeue_job,
    signal_name,
    stop_on_signals,
)
from tests.train.helpers import MovingBlobDataset

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 12
# a tiny model (tests/train/helpers.py's), 8 items an epoch in batches of 2: the interruption falls mid-epoch or
# at an epoch's end, and the resumed run crosses epochs
TINY = [
    "data.frame_size=32",
    "data.num_repeats=4",
    "model.motion=tps",
    "model.num_cpab=1",
    "model.generator={block_expansion: 8, max_features: 32, num_down_blocks: 2}",
    "model.dense_motion={block_expansion: 8, max_features: 32, num_blocks: 2, scale_factor: 0.5}",
    "model.avd={id_bottle_size: 8, pose_bottle_size: 8}",
    "loss.scales=[1.0]",
    "train.batch_size=2",
    "train.num_epochs=100",
    f"train.max_steps={MAX_STEPS}",
    "train.checkpoint_every=2",
    "train.image_every=0",
    "train.avd_epochs=0",
    "train.num_workers=0",
    "tracking.enabled=false",
]


def write_frames(processed: Path, masks: Path, videos: int = 2, frames: int = 4, size: int = 32) -> None:
    """Frame folders of a moving disc (processed/train/blob<v>/<t>.png) and their region masks."""
    blob = MovingBlobDataset(num_items=frames, size=size)
    for v in range(videos):
        folder = processed / "train" / f"blob{v}"
        folder.mkdir(parents=True)
        labels = []
        for t in range(frames):
            image, mask = blob._frame(0.4 * t + v)
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"{t:05d}.png")
            labels.append(mask.numpy().astype(np.uint8))
        (masks / "train").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(masks / "train" / f"blob{v}.npz", labels=np.stack(labels))
    (masks / "meta.json").write_text(json.dumps({"source": "test"}))


def train_args(data: Path, checkpoints: Path, *settings: str) -> list[str]:
    """`cpabanim train` arguments (after `cpabanim`) on the tiny settings, reading ``data``, writing ``checkpoints``."""
    values = [
        *TINY,
        f"paths.processed={data / 'processed'}",
        f"paths.masks={data / 'masks'}",
        f"paths.checkpoints={checkpoints}",
        f"paths.weights={data / 'weights'}",
        *settings,
    ]
    return ["train", "--params", str(ROOT / "params.yaml"), *(a for v in values for a in ("--set", v))]


def checkpoint_folder(checkpoints: Path) -> Path:
    """Where the train stage writes: {paths.checkpoints}/{experiment}/seed{seed}."""
    (found,) = checkpoints.glob("*/seed*")
    return found


def start(args: list[str], log: Path, env: dict[str, str] | None = None, new_session: bool = False):
    """`python -m cpabanim <args>` in the background, its output in ``log``."""
    handle = open(log, "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpabanim", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(log.parent),
        start_new_session=new_session,
    )
    handle.close()
    return proc


def wait_for_checkpoint(proc, checkpoints: Path, log: Path, timeout: float = 240.0) -> None:
    """Until the first periodic checkpoint (step 2) exists: training is under way."""
    deadline = time.monotonic() + timeout
    while not list(checkpoints.glob("*/seed*/last.pt")):
        assert proc.poll() is None, f"training ended before its first checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def assert_same_parameters(a: Path, b: Path) -> None:
    model_a, extra_a = load_checkpoint(a)
    model_b, extra_b = load_checkpoint(b)
    assert extra_a["step"] == extra_b["step"] and extra_a["complete"] and extra_b["complete"]
    for (name, x), (_, y) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(x, y), name


def fake_scontrol(folder: Path) -> tuple[dict[str, str], Path]:
    """An environment as in a SLURM job 4242 whose `scontrol` records its arguments (and succeeds)."""
    calls = folder / "scontrol_calls"
    script = folder / "bin" / "scontrol"
    script.parent.mkdir(parents=True)
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    return {"SLURM_JOB_ID": "4242", "PATH": f"{script.parent}{os.pathsep}{os.environ['PATH']}"}, calls


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    write_frames(root / "processed", root / "masks")
    return root


@pytest.fixture(scope="module")
def uninterrupted(data) -> Path:
    """The checkpoint of one run straight to MAX_STEPS (in this process: the same code, one thread)."""
    checkpoints = data / "straight"
    assert cli.main(train_args(data, checkpoints)) == 0
    return checkpoint_folder(checkpoints) / "last.pt"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGURG, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_stops_after_the_step_and_a_rerun_resumes_bit_exactly(tmp_path, data, uninterrupted, sig):
    checkpoints, log = tmp_path / "ckpt", tmp_path / "train.log"
    env, calls = fake_scontrol(tmp_path)
    # SIGTERM as SLURM sends it, to every process of the job step: here the process group, with a DataLoader worker
    workers = "1" if sig == signal.SIGTERM else "0"
    args = train_args(data, checkpoints, f"train.num_workers={workers}")
    proc = start(args, log, env, new_session=True)
    try:
        wait_for_checkpoint(proc, checkpoints, log)
        if sig == signal.SIGTERM:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == PREEMPTED_EXIT, text[-3000:]
    folder = checkpoint_folder(checkpoints)
    _, extra = load_checkpoint(folder / "last.pt")
    step = extra["step"]
    assert 2 <= step < MAX_STEPS and not extra["complete"]
    lines = [line for line in text.splitlines() if "training interrupted by" in line]
    assert len(lines) == 1, text[-3000:]
    assert lines[0].endswith(
        f"training interrupted by {sig.name} at step {step}; checkpoint written; resubmit to resume"
    )
    assert json.loads((folder / INTERRUPTED_NAME).read_text())["signal"] == sig.name
    assert not (folder / "complete.json").exists()
    assert "Traceback" not in text
    # the job requeues itself after the time-limit warning only (never after a SIGTERM: it may be a cancellation)
    assert (calls.read_text().split() if calls.exists() else []) == (
        [] if sig == signal.SIGTERM else ["requeue", "4242"]
    )
    # run again (as the requeued job or the next submission does): it resumes and completes
    assert cli.main(train_args(data, checkpoints)) == 0
    assert (folder / "complete.json").is_file() and not (folder / INTERRUPTED_NAME).exists()
    assert_same_parameters(folder / "last.pt", uninterrupted)


def test_a_signal_during_the_checkpoint_write_waits_for_it(tmp_path, monkeypatch):
    """The handler only records the signal: the write it lands in goes on to its rename."""
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.full import AnimationModel

    model = AnimationModel(ModelConfig(num_cpab=1, motion="tps"))
    real_save = torch.save

    def save_then_signal(obj, handle):
        real_save(obj, handle)
        os.kill(os.getpid(), signal.SIGTERM)  # before the fsync, the check and the rename
        time.sleep(0.05)

    monkeypatch.setattr(torch, "save", save_then_signal)
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        with stop_on_signals() as stop:
            path = save_checkpoint(tmp_path / "last.pt", model, step=7, params={"a": 1})
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert signal_name(stop.level) == "SIGTERM"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)[1]["step"] == 7


KILLED_WRITE = """
import sys, time, torch
from pathlib import Path
from cpabanim.config.typed import ModelConfig
from cpabanim.models.checkpoint import save_checkpoint
from cpabanim.models.full import AnimationModel
model = AnimationModel(ModelConfig(num_cpab=1, motion="tps"))
path = Path(sys.argv[1])
save_checkpoint(path, model, step=1)
def stuck(obj, handle):
    handle.write(b"PK partial")
    handle.flush()
    print("writing", flush=True)
    time.sleep(120)
torch.save = stuck
save_checkpoint(path, model, step=2)
"""


def test_a_kill_during_the_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITE, str(path)], stdout=subprocess.PIPE, text=True, cwd=str(ROOT)
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()  # SIGKILL: what SLURM sends after KillWait
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_checkpoint(path)[1]["step"] == 1
    leftovers = remove_stale_temp_files(path.parent)  # what the next run does first, under the folder's lock
    assert [p.name for p in leftovers] == [f".last.pt.tmp{proc.pid}"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_the_ranks_agree_on_the_most_urgent_signal():
    class TwoRanks:  # the MAX all_reduce of Runtime.agree, between this rank and one that saw SIGTERM
        def agree(self, value: int) -> int:
            other = StopRequest()
            other.handle(signal.SIGTERM)
            return max(value, other.level)

    stop = StopRequest()
    stop.handle(signal.SIGUSR1)
    assert signal_name(stop.level) == "SIGUSR1"
    assert signal_name(agreed_stop(stop, TwoRanks())) == "SIGTERM" == signal_name(stop.level)  # it stops, no requeue
    assert agreed_stop(None, TwoRanks()) == 0


def test_requeue_only_after_the_warning_under_slurm_when_asked():
    slurm = {"SLURM_JOB_ID": "17"}
    assert requeue_command("SIGUSR1", True, slurm) == ["scontrol", "requeue", "17"]
    assert requeue_command("SIGURG", True, slurm) == ["scontrol", "requeue", "17"]
    assert requeue_command("SIGTERM", True, slurm) is None
    assert requeue_command("SIGUSR1", False, slurm) is None
    assert requeue_command("SIGUSR1", True, {}) is None


def test_a_failed_requeue_is_a_warning_not_an_error(caplog):
    class Refused:
        returncode, stdout = 1, ""
        stderr = "scontrol: error: Requested operation is presently disabled for job 17\n"

    with caplog.at_level("WARNING", logger="cpabanim.training.preemption"):
        assert requeue_job(["scontrol", "requeue", "17"], run=lambda *a, **k: Refused()) is False
    assert "presently disabled" in caplog.text and "resubmit to resume" in caplog.text
    with caplog.at_level("WARNING", logger="cpabanim.training.preemption"):
        assert requeue_job(["/nonexistent/scontrol", "requeue", "17"]) is False
