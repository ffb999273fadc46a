"""Stopping cleanly when the cluster says so (docs/model.md, "Preemption").

SLURM warns a job before its time limit with the signal ``sbatch --signal=<signal>@<seconds>`` asks for, and sends
SIGTERM on preemption, on cancellation and at the limit itself (SIGKILL follows KillWait seconds later, 30 by
default). Training takes either as "stop after this optimiser step":

- :func:`stop_on_signals` turns the warning (SIGUSR1, or SIGURG) and SIGTERM into a :class:`StopRequest` (the
  handler only records the signal: nothing is interrupted, so a signal that lands during the checkpoint write
  cannot cut it short);
- the loop reads it after every step, all ranks together (:meth:`cpabanim.runtime.Runtime.agree`), writes the
  checkpoint as it always does (atomically: a temporary file, fsync, rename) and the record
  :data:`INTERRUPTED_NAME` beside it, which tells the launcher of several processes what happened;
- the stage exits with :data:`PREEMPTED_EXIT` (:class:`TrainingInterrupted`), and the completion marker is not
  written, so the next run of the stage resumes;
- after the time-limit warning, under SLURM, the job can requeue itself (:func:`requeue_command`, :func:`requeue_job`).

Why SIGURG too: SLURM sends the warning to every process of the job step (or, with ``B:``, to the batch shell only),
and under the Snakemake SLURM executor those include a Snakemake process (or the batch shell) without a SIGUSR1
handler, which SIGUSR1 kills. SIGURG's default action is to be ignored, so ``--signal=URG@<seconds>`` reaches
training and nothing else notices it (tried on SLURM 22.05: docs/model.md, "Preemption").

Why exit code 3: the CLI already gives 1 to an error the user can fix, 2 to a usage error and 130 to Ctrl-C; 124 is
what ``timeout(1)`` returns when *it* killed a command, and 128 + N reads, to shells and to SLURM's accounting, as
"killed by signal N" (the checkpoint would look lost). 3 says something else: the stage stopped on purpose, its
checkpoint is written and not complete, and running it again resumes. The same code for every stop signal,
because the one thing the caller has to do is the same: run it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREEMPTED_EXIT = 3
# Least urgent first: when ranks saw different ones, the later one in this tuple wins (SIGTERM: never requeue).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGURG, signal.SIGUSR1, signal.SIGTERM)
# the time-limit warnings: the job would come back to the same state, so it may requeue itself
WARNING_SIGNALS = ("SIGURG", "SIGUSR1")
# Written beside the checkpoint by rank 0 when it stops on a signal; removed when the stage starts again.
INTERRUPTED_NAME = "interrupted.json"
REQUEUE_TIMEOUT_S = 60


def signal_name(level: int) -> str:
    """The name of the stop signal of urgency ``level`` (1 + its index in :data:`STOP_SIGNALS`)."""
    return STOP_SIGNALS[level - 1].name


@dataclass
class StopRequest:
    """The most urgent stop signal this process received: ``level`` 0 = none, else 1 + its index in
    :data:`STOP_SIGNALS` (a number the ranks can reduce with MAX, whatever the platform numbers signals)."""

    level: int = 0

    def handle(self, signum: int, frame: Any = None) -> None:
        """The signal handler: record, nothing else (it may run in the middle of any Python line)."""
        self.level = max(self.level, STOP_SIGNALS.index(signal.Signals(signum)) + 1)

    @property
    def requested(self) -> bool:
        return self.level > 0


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Record ``signals`` in a :class:`StopRequest` for the block instead of dying of them. The previous handlers
    come back after it unless a stop was requested: then the process is on its way out, and a further SIGTERM (the
    rest of the job step's, torchrun stopping the other ranks) must not cut its exit short. Outside the main thread
    (where Python cannot set handlers) the request stays empty."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in signals}
    try:
        yield request
    finally:
        if not request.requested:
            for s, handler in previous.items():
                signal.signal(s, handler)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """SIG_IGN for the stop signals. The DataLoader's ``worker_init_fn``: a batch worker belongs to its training
    process, which shuts it down itself; dying of the SIGTERM that SLURM (or torchrun) sends to every process would
    make the training process raise "DataLoader worker exited unexpectedly" in the middle of its checkpoint. Also
    what a stopping process calls last, so that the SIGTERM of the rest of the job cannot cut its exit short."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal with its checkpoint written: the process exits with :data:`PREEMPTED_EXIT`
    (a SystemExit, so the CLI passes the code on; its message is what MLflow's ``error`` tag records)."""

    def __init__(self, by: str, step: int):
        super().__init__(PREEMPTED_EXIT)
        self.by, self.step = by, step

    def __str__(self) -> str:
        return f"training interrupted by {self.by} at step {self.step} (exit code {PREEMPTED_EXIT})"


def exit_stopped(by: str, step: int, requeue_enabled: bool, requeue: bool = True) -> None:
    """A stage stopped on signal ``by`` with its checkpoint written: requeue the SLURM job when that is asked for
    (``requeue_enabled``: ``train.requeue``) and this process is the one to do it (``requeue``: the outermost),
    then exit with :data:`PREEMPTED_EXIT` (:class:`TrainingInterrupted`)."""
    ignore_stop_signals()  # the process is ending: the rest of the job's SIGTERMs must not cut its exit short
    command = requeue_command(by, requeue_enabled, os.environ) if requeue else None
    if command:
        requeue_job(command)
    raise TrainingInterrupted(by, step)


# ------------------------------------------------------------------------------------------------ the record


def write_interrupted(folder: Path, signal_level: int, step: int, epoch: int) -> None:
    """``folder/interrupted.json``: which signal stopped the run at which step (after the checkpoint is written)."""
    from cpabanim.files import write_json

    write_json(folder / INTERRUPTED_NAME, {"signal": signal_name(signal_level), "step": step, "epoch": epoch})


def read_interrupted(folder: Path) -> dict[str, Any] | None:
    """The record of :func:`write_interrupted`, or None when the last run did not stop on a signal."""
    from cpabanim.files import read_json

    return read_json(folder / INTERRUPTED_NAME, corrupt_ok=True) or None  # {} when there is no such file


def clear_interrupted(folder: Path) -> None:
    (folder / INTERRUPTED_NAME).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ requeue


def requeue_command(by: str, enabled: bool, env: Mapping[str, str]) -> list[str] | None:
    """``scontrol requeue <job id>`` when this stop should bring the same job back, else None.

    Only after the time-limit warning (SIGUSR1 or SIGURG): the job would hit its limit, and comes back as PENDING then
    RUNNING under the same id, which the Snakemake SLURM executor keeps waiting for. Never after SIGTERM: a
    cancellation must stay cancelled, and a preemption is requeued by SLURM itself where its PreemptMode says so.
    Only under SLURM (``SLURM_JOB_ID``) and with ``train.requeue``.
    """
    job = env.get("SLURM_JOB_ID")
    if not enabled or not job or by not in WARNING_SIGNALS:
        return None
    return ["scontrol", "requeue", job]


def requeue_job(command: list[str], run: Callable[..., Any] = subprocess.run) -> bool:
    """Run the requeue command; False (with a warning: the stage still exits 3, and the next submission
    resumes) when it fails, e.g. a job submitted without ``--requeue`` or past SLURM's MaxBatchRequeue."""
    try:
        done = run(command, capture_output=True, text=True, timeout=REQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("could not requeue SLURM job %s (%s); resubmit to resume", command[-1], err)
        return False
    if done.returncode != 0:
        reason = (done.stderr or done.stdout or "").strip().splitlines()
        log.warning(
            "could not requeue SLURM job %s (%s); resubmit to resume",
            command[-1],
            reason[0] if reason else f"exit code {done.returncode}",
        )
        return False
    log.info("requeued SLURM job %s: it resumes from the checkpoint when it runs again", command[-1])
    return True


# ------------------------------------------------------------------------------------------------ the loop's side


def agreed_stop(stop: StopRequest | None, runtime) -> int:
    """The most urgent stop signal level any rank received (0 = go on). Every rank calls it after the same steps,
    so they all stop after the same one; ``stop`` None (library use) never stops and costs nothing."""
    if stop is None:
        return 0
    stop.level = runtime.agree(stop.level)  # a rank that saw no signal takes the others' (it stops too)
    return stop.level


def report_interrupted(folder: Path, level: int, step: int, epoch: int, is_main: bool) -> str:
    """After the checkpoint of a stopped run: rank 0 writes the record and logs the one line; -> the signal's name."""
    name = signal_name(level)
    if is_main:
        write_interrupted(folder, level, step, epoch)
        log.info("training interrupted by %s at step %d; checkpoint written; resubmit to resume", name, step)
    return name
