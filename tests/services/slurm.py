"""A one-node SLURM cluster on localhost for the tests, from Debian's packages (``slurm-wlm``, ``munge``; SLURM
22.05 in bookworm): munged, slurmctld and slurmd, every file under one temporary folder, on ports of its own.

The ``slurm_cluster`` fixture (session scope; a test module imports ``slurm_cluster_fixture``) starts it, waits
until ``sinfo`` shows the node idle, yields a :class:`SlurmCluster` (``SLURM_CONF``, the partition, helpers to read
the queue and the accounting) and stops it: jobs cancelled, then slurmd, slurmctld and munged. Without the binaries
it skips, naming the packages; it never installs anything itself (CI installs them: ``.ci/run``).

What is configured, and why:

- Authentication: a fresh MUNGE key and a munged on a socket of its own (``AuthInfo=socket=...``): a munged of the
  machine, or its key, is neither needed nor touched.
- The node is the machine itself: ``slurmd -C`` reports its CPUs, sockets, cores, threads and memory, and the
  node line repeats them (a node that has less than its line claims is drained instead of going idle).
- A container has no cgroup hierarchy SLURM could use: ``ProctrackType=proctrack/linuxproc`` (a job's processes
  found by parentage in /proc), ``TaskPlugin=task/none`` (no CPU binding), ``JobAcctGatherType=jobacct_gather/none``.
- Accounting without slurmdbd: with ``AccountingStorageType=accounting_storage/none`` a plain ``sacct`` exits 1
  ("Slurm accounting storage is disabled"), and slurmdbd needs a MySQL/MariaDB server (too heavy for a test).
  ``JobCompType=jobcomp/filetxt`` writes one line per finished job (id, name, partition, state, exit code, times)
  that ``sacct -c`` (``--completion``) reads: :meth:`SlurmCluster.completed_jobs`. The executor plugin polls with
  ``squeue`` instead (the test profile sets ``slurm-status-command: squeue``); ``MinJobAge=600`` keeps finished
  jobs in slurmctld for ten minutes, so that ``squeue --states=all`` still reports them (the plugin goes back to
  ``sacct`` when MinJobAge is under three times its first polling interval).
- snakemake-executor-plugin-slurm-jobstep (0.6) deletes every ``SLURM_*`` variable but the job's identity before
  the ``srun`` it runs inside a job, ``SLURM_CONF`` included. On a real cluster that srun reads
  /etc/slurm/slurm.conf; here a wrapper ``srun``, first on the PATH the job inherits (the plugin's sbatch passes
  ``--export=ALL``), hands it this cluster's file. Every other command is SLURM's own.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PARTITION = "local"
NODE = "localhost"
# GPUs the node offers as a generic resource (GRES) with a count and no device files: SLURM schedules them (a job
# asking `--gpus=1` holds one; two such jobs on this node run at once, a third waits) and nothing uses them
GPUS = 2
PACKAGES = "slurm-wlm munge"  # Debian: the daemons, the clients and their plugins
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "srun", "squeue", "sinfo", "sacct", "scontrol", "scancel")
HARDWARE_KEYS = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
# the daemons are installed in sbin, which is not on an ordinary user's PATH
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
# a Unix socket's path is limited to 108 bytes; munged's must fit
MAX_SOCKET_PATH = 100


def find(name: str) -> str | None:
    """A command on PATH or in the sbin folders."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def missing_commands() -> list[str]:
    """The daemons and client commands the cluster needs that this machine lacks."""
    return [name for name in (*DAEMONS, *CLIENTS) if find(name) is None]


def parse_rows(text: str, names: tuple[str, ...]) -> list[dict[str, str]]:
    """``|``-separated lines (``--parsable2``, an squeue format with ``|``) as one mapping per line."""
    return [dict(zip(names, line.split("|"))) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its slurm.conf, its one partition and the folder with its files (logs for failures)."""

    root: Path
    conf: Path
    partition: str
    bin: Path  # the srun wrapper (module docstring)

    @property
    def env(self) -> dict[str, str]:
        """The variable every SLURM command needs to reach this cluster and not the machine's."""
        return {"SLURM_CONF": str(self.conf)}

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with ``SLURM_CONF`` and the srun wrapper first on PATH:
        what a process that submits jobs needs, since its jobs inherit it."""
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        env["PATH"] = os.pathsep.join([str(self.bin), *filter(None, [env.get("PATH")])])
        return env

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A client command (sinfo, squeue, sacct, scancel, ...) against this cluster."""
        return subprocess.run(
            list(command), env=self.environ(), capture_output=True, text=True, check=check, timeout=timeout
        )

    def completed_jobs(self) -> list[dict[str, str]]:
        """Every finished job, as the job completion log has it (``sacct -c``): ``JobIDRaw``, ``JobName``,
        ``Partition``, ``State``, ``ExitCode``, ``Elapsed``, ``NodeList``, ``Start``, ``End`` (ISO times)."""
        names = ("JobIDRaw", "JobName", "Partition", "State", "ExitCode", "Elapsed", "NodeList", "Start", "End")
        out = self.run("sacct", "-c", "--parsable2", "--noheader", "--starttime", "now-1days", "-o", ",".join(names))
        return parse_rows(out.stdout, names)

    def queue(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows, finished ones included (``MinJobAge``): id, name, comment, state,
        partition. The comment is what the executor plugin sets: ``rule_<rule>[_wildcards_<values>]``."""
        names = ("id", "name", "comment", "state", "partition")
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T|%P")
        return parse_rows(out.stdout, names)

    def node_state(self) -> str:
        out = self.run("sinfo", "--noheader", "--Node", "--nodes", NODE, "--format=%T", check=False)
        return out.stdout.strip()

    def log_tail(self, lines: int = 25) -> str:
        """The end of every daemon's log: what a failure's message shows."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)


def free_port() -> int:
    """A TCP port nobody listens on now (another cluster on this machine keeps its own)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """The machine as slurmd sees it: ``slurmd -C`` prints the node line a slurm.conf would need."""
    out = subprocess.run([find("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True, timeout=30)
    fields = dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)
    return {key: fields[key] for key in HARDWARE_KEYS if key in fields}


def slurm_conf(root: Path, munge_socket: Path, hardware: Mapping[str, str], user: str) -> str:
    """The cluster's slurm.conf: every path under ``root``, ports of its own, one node, one partition."""
    node = " ".join(f"{key}={value}" for key, value in hardware.items())
    settings = {
        "ClusterName": "cpabanim-test",
        "SlurmctldHost": NODE,
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        # the daemons run as whoever runs the tests (root in CI's container)
        "SlurmUser": user,
        "SlurmdUser": user,
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        # cred_expire also holds a requeued job this long before it may start again (120 s by default)
        "AuthInfo": f"socket={munge_socket},cred_expire=5",
        # the scheduler's pass over pending jobs every 2 s, not 60: a requeued job starts again 6 s after its
        # requeue instead of 20-30 s (tests/pipeline/test_slurm_requeue.py runs several allocations)
        "SchedulerParameters": "sched_interval=2",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "run" / "slurmctld.pid",
        "SlurmdPidFile": root / "run" / "slurmd.pid",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/filetxt",
        "JobCompLoc": root / "log" / "jobcomp.txt",
        "MinJobAge": 600,
        "MpiDefault": "none",
        "SwitchType": "switch/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        # a node that was down comes back as soon as slurmd registers again
        "ReturnToService": 2,
        "KillWait": 5,  # a cancelled job gets SIGKILL 5 s after SIGTERM (teardown)
        "MailProg": "/bin/true",  # none installed; the default path would be reported as invalid
        "GresTypes": "gpu",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(f"NodeName={NODE} NodeAddr=127.0.0.1 {node} Gres=gpu:{GPUS} State=UNKNOWN")
    lines.append(f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def srun_wrapper(conf: Path, srun: str) -> str:
    """A shell script in place of srun that sets SLURM_CONF when the job step lost it (module docstring)."""
    return f'#!/bin/sh\nSLURM_CONF="${{SLURM_CONF:-{conf}}}" exec {srun} "$@"\n'


def write_files(root: Path) -> tuple[SlurmCluster, Path]:
    """Every folder and file of a cluster under ``root``; returns it and munged's socket path."""
    for name in ("state", "spool", "log", "run", "bin"):
        (root / name).mkdir(parents=True, exist_ok=True)
    keys = root / "munge"
    keys.mkdir(mode=0o700, exist_ok=True)
    key = keys / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)  # munged refuses a key others can read
    (root / "run").chmod(0o755)  # munged wants its socket's folder searchable by all
    munge_socket = root / "run" / "munge.socket"
    if len(str(munge_socket)) > MAX_SOCKET_PATH:
        raise RuntimeError(f"munged's socket path is too long for a Unix socket: {munge_socket}")
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, munge_socket, node_hardware(), getpass.getuser()))
    # the GPUs (GPUS): SLURM keeps only GPUs with a device file, and nothing opens these; slurmd reads gres.conf
    # beside slurm.conf
    (root / "dev").mkdir(exist_ok=True)
    for number in range(GPUS):
        (root / "dev" / f"gpu{number}").touch()
    (root / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={root / 'dev'}/gpu[0-{GPUS - 1}]\n")
    wrapper = root / "bin" / "srun"
    wrapper.write_text(srun_wrapper(conf, find("srun") or "srun"))
    wrapper.chmod(0o755)
    return SlurmCluster(root=root, conf=conf, partition=PARTITION, bin=root / "bin"), munge_socket


def start_daemon(command: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """A daemon kept in the foreground as a child of this process, so that teardown can stop exactly it; its log
    (stderr in the foreground) goes to ``log``. In a session of its own, so that a Ctrl-C to pytest reaches the
    teardown before the daemon."""
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)


def wait_until(
    ready: Callable[[], bool],
    what: str,
    daemons: dict[str, subprocess.Popen],
    cluster: SlurmCluster,
    timeout: float = 60,
) -> None:
    """Poll ``ready`` until true; a daemon that exited, or the timeout, fails with the daemons' logs."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = {name: proc.returncode for name, proc in daemons.items() if proc.poll() is not None}
        if dead or time.monotonic() > deadline:
            why = f"daemons exited: {dead}" if dead else f"not after {timeout:.0f} s"
            raise RuntimeError(f"local SLURM cluster: {what}: {why}\n{cluster.log_tail()}")
        time.sleep(0.2)


def start_munged(cluster: SlurmCluster, munge_socket: Path) -> subprocess.Popen:
    """munged on the cluster's key and socket. ``--force``: in a container /tmp and its parents may fail
    munged's permission checks, which are warnings it otherwise treats as fatal."""
    keys = cluster.root / "munge"
    command = [
        find("munged") or "munged",
        "--foreground",
        "--force",
        f"--socket={munge_socket}",
        f"--key-file={keys / 'munge.key'}",
        f"--pid-file={cluster.root / 'run' / 'munged.pid'}",
        f"--seed-file={keys / 'munged.seed'}",
    ]
    return start_daemon(command, cluster.root / "log" / "munged.log", os.environ)


def cancel_all_jobs(cluster: SlurmCluster, timeout: float = 30) -> None:
    """Cancel what is still queued or running (a test that failed half-way): slurmstepd and the job's processes
    outlive slurmd, so they must end before it does."""
    ids = cluster.run("squeue", "--noheader", "--format=%i", check=False).stdout.split()
    if not ids:
        return
    cluster.run("scancel", *ids, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.run("squeue", "--noheader", "--format=%i", check=False).stdout.split():
            return
        time.sleep(0.5)


def stop(daemons: dict[str, subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM to each daemon, the last started first; SIGKILL to one that does not exit in ``timeout``."""
    for proc in reversed(list(daemons.values())):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_cluster(root: Path, timeout: float = 60) -> Iterator[SlurmCluster]:
    """Configure a cluster under ``root``, start it, yield it once its node is idle; stop it whatever happens."""
    cluster, munge_socket = write_files(root)
    env = cluster.environ()
    daemons: dict[str, subprocess.Popen] = {}
    try:
        daemons["munged"] = start_munged(cluster, munge_socket)
        wait_until(munge_socket.exists, "munged's socket", daemons, cluster, timeout)
        daemons["slurmctld"] = start_daemon(
            [find("slurmctld") or "slurmctld", "-D", "-i", "-f", str(cluster.conf)],
            cluster.root / "log" / "slurmctld.log",
            env,
        )
        # slurmd names itself after the node line (the host's own name may be anything)
        daemons["slurmd"] = start_daemon(
            [find("slurmd") or "slurmd", "-D", "-N", NODE, "-f", str(cluster.conf)],
            cluster.root / "log" / "slurmd.log",
            env,
        )
        wait_until(lambda: cluster.node_state() == "idle", "node idle in sinfo", daemons, cluster, timeout)
        yield cluster
    finally:
        if "slurmctld" in daemons and daemons["slurmctld"].poll() is None:
            cancel_all_jobs(cluster)
        stop(daemons)


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node SLURM cluster for the session; skipped where SLURM is not installed. A test module imports
    ``slurm_cluster_fixture`` and asks for ``slurm_cluster`` (the import's name differs from the argument's)."""
    missing = missing_commands()
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}; Debian: apt-get install {PACKAGES})")
    with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
