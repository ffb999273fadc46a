"""Several processes from one `cpabanim train` (docs/model.md, "Several processes"): `train.processes=2` on CPU
starts two gloo processes through torchrun, stops on SIGUSR1 sent to the launcher only (it forwards it; torchrun's
cpabanim wrapper passes it on), resumes, logs into one MLflow run, and ends with the parameters of the same two
processes started by hand with torchrun (test_train.py::test_ddp_two_processes_gloo's way), bit for bit. Then unit
tests of the launch commands (one node; the nodes of a SLURM allocation, `scontrol` mocked) and the process count.

The multi-node command cannot run here (one machine, no SLURM allocation): only its construction is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from cpabanim.errors import ConfigError, CpabanimError
from cpabanim.models.checkpoint import load_checkpoint
from cpabanim.training.launch import (
    TORCHRUN,
    expand_nodelist,
    launch_command,
    rendezvous_port,
    resolve_processes,
    train_argv,
    under_torchrun,
)
from cpabanim.training.preemption import INTERRUPTED_NAME, PREEMPTED_EXIT
from cpabanim.training.torchrun import child_pids
from tests.train.test_preemption import (
    assert_same_parameters,
    checkpoint_folder,
    start,
    train_args,
    wait_for_checkpoint,
    write_frames,
)

DDP_STEPS = 40  # 2 steps an epoch with 2 processes; enough that the signal lands well before the end


def test_two_processes_from_the_stage_stop_resume_and_match_torchrun_by_hand(tmp_path):
    write_frames(tmp_path / "processed", tmp_path / "masks")
    steps = f"train.max_steps={DDP_STEPS}"
    env = {"OMP_NUM_THREADS": "1"}
    # the reference: torchrun by hand, as before this launcher existed
    by_hand = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cpabanim"]
        + train_args(tmp_path, tmp_path / "by_hand", steps),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=str(tmp_path),
        timeout=300,
    )
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    # the stage launches the two processes itself; SIGUSR1 reaches the launcher only
    launched, log = tmp_path / "launched", tmp_path / "launched.log"
    tracking = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    args = train_args(tmp_path, launched, steps, "train.processes=2", "tracking.enabled=true", tracking)
    proc = start(args, log, env, new_session=True)
    try:
        wait_for_checkpoint(proc, launched, log)
        proc.send_signal(signal.SIGUSR1)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == PREEMPTED_EXIT, text[-4000:]
    assert "training in 2 processes (gloo)" in text
    interrupted = [line for line in text.splitlines() if "training interrupted by SIGUSR1 at step" in line]
    assert len(interrupted) == 1, text[-4000:]  # rank 0 only
    folder = checkpoint_folder(launched)
    assert (folder / INTERRUPTED_NAME).is_file() and not (folder / "complete.json").exists()
    # run again: resumes in two processes and completes
    rerun = start(args, tmp_path / "rerun.log", env)
    assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.log").read_text()[-4000:]
    assert (folder / "complete.json").is_file()
    assert_same_parameters(folder / "last.pt", checkpoint_folder(tmp_path / "by_hand") / "last.pt")
    # the processes logged into the launcher's stage run: one train run per launch, with the losses in it
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # not mlflow's global tracking URI
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    stage_runs = [r for r in runs if r.data.tags.get("cpabanim.stage") == "train"]
    assert len(stage_runs) == 2, [r.info.run_name for r in runs]
    interrupted_run, completed_run = sorted(stage_runs, key=lambda r: r.info.start_time)
    assert interrupted_run.info.status == "FAILED"
    assert interrupted_run.data.tags["error"].startswith("TrainingInterrupted: training interrupted by SIGUSR1")
    assert completed_run.info.status == "FINISHED" and "loss/total" in completed_run.data.metrics


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun's workers are in sessions of their own)."""
    found = [pid]
    for child in child_pids(pid):
        found += descendants(child)
    return found


def test_sigterm_to_every_process_as_slurm_sends_it_stops_the_processes_once(tmp_path):
    """SLURM signals every process of a job step: the launcher, torchrun and each worker get SIGTERM at once, and
    the launcher and torchrun forward it too. Each worker stops after the same step; torchrun waits for them."""
    write_frames(tmp_path / "processed", tmp_path / "masks")
    checkpoints, log = tmp_path / "ckpt", tmp_path / "train.log"
    args = train_args(tmp_path, checkpoints, f"train.max_steps={DDP_STEPS}", "train.processes=2")
    proc = start(args, log, {"OMP_NUM_THREADS": "1"}, new_session=True)
    try:
        wait_for_checkpoint(proc, checkpoints, log)
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGTERM)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            for pid in descendants(proc.pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert code == PREEMPTED_EXIT, text[-4000:]
    (line,) = [line for line in text.splitlines() if "training interrupted by SIGTERM at step" in line]
    step = int(line.split(" at step ")[1].split(";")[0])
    folder = checkpoint_folder(checkpoints)
    _, extra = load_checkpoint(folder / "last.pt")
    assert extra["step"] == step < DDP_STEPS and not extra["complete"] and extra["world"] == 2
    assert not (folder / "complete.json").exists()


# ------------------------------------------------------------------------------------------------ unit


def test_the_process_count():
    assert resolve_processes("auto", "auto", gpus=4) == 4
    assert resolve_processes("auto", "cuda", gpus=2) == 2
    assert resolve_processes("auto", "auto", gpus=0) == 1
    assert resolve_processes("auto", "cpu", gpus=4) == 1
    assert resolve_processes(3, "cpu", gpus=0) == 3  # gloo
    assert resolve_processes(2, "auto", gpus=0) == 2
    assert resolve_processes(2, "cuda", gpus=2) == 2
    with pytest.raises(ConfigError, match="2 CUDA GPU"):
        resolve_processes(4, "auto", gpus=2)
    with pytest.raises(ConfigError, match="cuda:1"):
        resolve_processes(2, "cuda:1", gpus=2)


def test_a_torchrun_worker_never_launches():
    assert under_torchrun({"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert under_torchrun({"WORLD_SIZE": "1"})
    assert not under_torchrun({"SLURM_JOB_ID": "7"})


def test_the_command_on_one_node():
    argv = ["train", "--set", "train.processes=2"]
    command = launch_command(2, argv, {}, python="py")
    assert command == [
        *("py", "-m", TORCHRUN, "--standalone", "--nproc-per-node", "2"),
        *("--signals-to-handle", "SIGINT,SIGHUP,SIGQUIT", "-m", "cpabanim", *argv),
    ]
    # one node of a SLURM job: the same
    assert launch_command(2, argv, {"SLURM_JOB_ID": "9", "SLURM_JOB_NUM_NODES": "1"}, python="py") == command


def test_the_command_across_the_nodes_of_a_slurm_allocation():
    # as inside the Snakemake SLURM executor's job step: SLURM_JOB_NUM_NODES deleted, SLURM_NNODES set again by srun
    env = {"SLURM_JOB_ID": "123456", "SLURM_NNODES": "3", "SLURM_JOB_NODELIST": "g[07-09]"}
    asked = []

    def hostnames(nodelist: str) -> list[str]:
        asked.append(nodelist)
        return ["g07", "g08", "g09"]

    command = launch_command(4, ["train"], env, python="py", hostnames=hostnames)
    assert asked == ["g[07-09]"]
    port = rendezvous_port("123456")
    assert command == [
        *("srun", "--overlap", "--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1"),
        *("py", "-m", TORCHRUN, "--nnodes", "3", "--nproc-per-node", "4"),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"g07:{port}", "--rdzv-id", "123456"),
        *("--signals-to-handle", "SIGINT,SIGHUP,SIGQUIT", "-m", "cpabanim", "train"),
    ]
    assert 10000 <= port < 30000 and rendezvous_port("123457") == port + 1
    with pytest.raises(CpabanimError, match="names 2"):
        launch_command(4, ["train"], env, python="py", hostnames=lambda _: ["g07", "g08"])
    with pytest.raises(CpabanimError, match="SLURM_JOB_NODELIST"):
        launch_command(4, ["train"], {"SLURM_JOB_NUM_NODES": "2"}, python="py")


def test_the_node_list_comes_from_scontrol():
    calls = []

    def scontrol(command, **options):
        calls.append(command)
        return SimpleNamespace(returncode=0, stdout="g07\ng08\n", stderr="")

    assert expand_nodelist("g[07-08]", run=scontrol) == ["g07", "g08"]
    assert calls == [["scontrol", "show", "hostnames", "g[07-08]"]]
    refused = SimpleNamespace(returncode=1, stdout="", stderr="scontrol: error: Invalid node name\n")
    with pytest.raises(CpabanimError, match="Invalid node name"):
        expand_nodelist("g[", run=lambda *a, **k: refused)


def test_only_a_train_command_line_is_launched_again():
    assert train_argv(["-v", "train", "--set", "a=1"]) == ["-v", "train", "--set", "a=1"]
    with pytest.raises(CpabanimError, match="cpabanim train"):
        train_argv(["tests/train", "-x"])  # cli.main([...]) called inside pytest


def test_the_torchrun_wrapper_finds_its_workers():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in child_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in child_pids()
    finally:
        child.kill()
        child.wait()
