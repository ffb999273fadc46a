"""Several training processes from one ``cpabanim train`` (docs/model.md, "Several processes").

``train.processes`` says how many processes train on each node: ``auto`` = one per visible CUDA GPU, 1 on CPU;
an integer forces that many (on CPU they use gloo). When there is more than one (or the SLURM allocation has
several nodes) and this process was not itself started by torchrun, the train stage starts them through torchrun
and waits for them:

- one node: ``python -m cpabanim.training.torchrun --standalone --nproc-per-node N ... -m cpabanim <argv>``;
- the nodes of one SLURM allocation: ``srun --overlap --nodes M --ntasks-per-node 1 python -m
  cpabanim.training.torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint <first node>:<port>
  ... -m cpabanim <argv>``, the node names from ``scontrol show hostnames``.

The workers run the launcher's own command line (``argv``), so they resolve the same params; torchrun's
environment (``LOCAL_RANK``, ``WORLD_SIZE``) tells them not to launch again. The commands are built by pure
functions (tests/train/test_launch.py); :func:`run_processes` runs one, passing the stop signals on to it
(:mod:`cpabanim.training.torchrun` passes them on to the workers), and returns its exit code.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from cpabanim.errors import ConfigError, CpabanimError
from cpabanim.training.preemption import STOP_SIGNALS

TORCHRUN = "cpabanim.training.torchrun"
# torchrun handles these itself; the stop signals (SIGTERM, SIGUSR1, SIGURG) are cpabanim.training.torchrun's
TORCHRUN_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"
TORCHRUN_ENV = ("LOCAL_RANK", "WORLD_SIZE")
LAUNCHED_ENV = "CPABANIM_TRAIN_LAUNCHED"  # set in the processes a launcher started: the launcher requeues, not they
PORT_BASE, PORT_SPAN = 10000, 20000  # the rendezvous port of a multi-node job: PORT_BASE + job id % PORT_SPAN
INTERRUPT_WAIT_S = 30


def under_torchrun(env: Mapping[str, str]) -> bool:
    """Whether this process is one of torchrun's workers (then it trains; it never launches)."""
    return any(key in env for key in TORCHRUN_ENV)


def visible_gpus() -> int:
    """CUDA devices this process may use (``CUDA_VISIBLE_DEVICES`` applied by CUDA itself)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_processes(choice: int | str, device: str, gpus: int) -> int:
    """``train.processes`` on this node: ``auto`` = ``gpus`` processes when training on CUDA (device auto or
    cuda), else 1; an integer as given, checked against the GPUs when the processes would use them."""
    on_cuda = device == "cuda" or (device == "auto" and gpus > 0)
    if choice == "auto":
        return max(gpus, 1) if on_cuda else 1
    count = int(choice)
    if count > 1 and str(device).startswith("cuda:"):
        raise ConfigError(f"train.processes={count} with device {device}: several processes need device auto or cuda")
    if count > 1 and on_cuda and count > gpus:
        raise ConfigError(
            f"train.processes={count}, but {gpus} CUDA GPU(s) are visible: use at most {gpus}, or auto "
            "(one process per GPU), or device cpu"
        )
    return count


def slurm_nodes(env: Mapping[str, str]) -> int:
    """Nodes of this SLURM job (1 outside SLURM): SLURM_JOB_NUM_NODES, else SLURM_NNODES (both the job's count).
    The Snakemake SLURM jobstep executor deletes the first before the srun it runs the rule in; that srun sets
    SLURM_NNODES and SLURM_JOB_NODELIST again (seen on SLURM 22.05)."""
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def expand_nodelist(nodelist: str, run: Callable[..., Any] = subprocess.run) -> list[str]:
    """``node[01-03],gpu7`` -> its host names, by ``scontrol show hostnames`` (SLURM's own expansion)."""
    try:
        done = run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CpabanimError(f"cannot list the nodes of {nodelist!r} with scontrol: {err}") from err
    hosts = done.stdout.split() if done.returncode == 0 else []
    if not hosts:
        raise CpabanimError(f"scontrol show hostnames {nodelist!r} failed: {(done.stderr or '').strip() or 'no hosts'}")
    return hosts


def rendezvous_port(job_id: str) -> int:
    """A port per job, so that two jobs whose first node is the same do not meet at one rendezvous."""
    return PORT_BASE + int(job_id) % PORT_SPAN if str(job_id).isdigit() else PORT_BASE


def train_argv(argv: Sequence[str]) -> list[str]:
    """This process's ``cpabanim`` arguments (``sys.argv[1:]``), checked to be a ``train`` command line: the
    workers run them again. A caller of ``cli.main([...])`` inside another program has no such line."""
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] != "train":
        raise CpabanimError(
            "train.processes > 1 starts the processes again with this command line, but this process was not "
            "started as `cpabanim train ...` (run it from a shell, or under torchrun, or with train.processes=1)"
        )
    return list(argv)


def single_node_command(python: str, processes: int, argv: Sequence[str]) -> list[str]:
    """torchrun on this node: ``processes`` workers, each ``python -m cpabanim <argv>``."""
    return [
        *(python, "-m", TORCHRUN, "--standalone", "--nproc-per-node", str(processes)),
        *("--signals-to-handle", TORCHRUN_SIGNALS, "-m", "cpabanim", *argv),
    ]


def multi_node_command(
    python: str, processes: int, argv: Sequence[str], nodes: Sequence[str], job_id: str
) -> list[str]:
    """One torchrun per node of the allocation, started by srun, meeting at a c10d rendezvous on the first node.

    ``--overlap``: the Snakemake SLURM executor runs the rule inside a job step, which holds the first node's
    resources; without it this step would wait for them forever. ``--kill-on-bad-exit``: a node whose processes
    failed ends the others at once instead of leaving them blocked in a collective until its timeout.
    """
    count = str(len(nodes))
    return [
        *("srun", "--overlap", f"--nodes={count}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"),
        *(python, "-m", TORCHRUN, "--nnodes", count, "--nproc-per-node", str(processes)),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"{nodes[0]}:{rendezvous_port(job_id)}", "--rdzv-id", job_id),
        *("--signals-to-handle", TORCHRUN_SIGNALS, "-m", "cpabanim", *argv),
    ]


def launch_command(
    processes: int,
    argv: Sequence[str],
    env: Mapping[str, str],
    python: str = sys.executable,
    hostnames: Callable[[str], list[str]] = expand_nodelist,
) -> list[str]:
    """The command that starts this job's training processes: across the SLURM allocation's nodes when it has
    several, else on this node."""
    nodes = slurm_nodes(env)
    if nodes <= 1:
        return single_node_command(python, processes, argv)
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise CpabanimError(f"a SLURM job on {nodes} nodes, but SLURM_JOB_NODELIST is not set")
    hosts = hostnames(nodelist)
    if len(hosts) != nodes:
        raise CpabanimError(f"SLURM says {nodes} nodes, but {nodelist!r} names {len(hosts)}")
    return multi_node_command(python, processes, argv, hosts, env.get("SLURM_JOB_ID", "0"))


@contextlib.contextmanager
def forwarding_signals(proc: subprocess.Popen, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """For the block: ``signals`` that reach this process go on to ``proc`` instead of stopping this one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: Any = None) -> None:
        proc.send_signal(signum)  # a no-op once proc has exited

    previous = {s: signal.signal(s, forward) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_processes(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command`` (the launcher's torchrun or srun), forwarding the stop signals, and return its exit code.
    On Ctrl-C (which reaches torchrun too) wait a little for the workers to go, then let the interrupt through."""
    proc = subprocess.Popen(list(command), env=dict(env))
    with forwarding_signals(proc):
        try:
            return proc.wait()
        except KeyboardInterrupt:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=INTERRUPT_WAIT_S)
            raise
