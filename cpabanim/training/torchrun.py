"""``python -m cpabanim.training.torchrun <torchrun's arguments>``: torchrun, except that the stop signals (SIGTERM,
and the time-limit warnings SIGUSR1 and SIGURG: cpabanim/training/preemption.py) go on to its workers and do not
stop it (docs/model.md, "Several processes").

Why not torchrun's own handling: on SIGTERM torchrun raises in its main loop, sends the signal on and gives the
workers 30 s, but its handler raises again for a second SIGTERM during that wait (SLURM signals every process of
a job step and the launcher forwards the signal too, so two arrive), which can end torchrun early. The launcher
would then return, and SLURM end the job step, while rank 0 is still writing its checkpoint. SIGUSR1 torchrun
handles only when asked, and otherwise dies of it; SIGURG it ignores. Here all three go to every worker's process
group: torchrun starts each worker in a session of its own, and that group also holds the worker's DataLoader
processes, which ignore these signals. torchrun keeps supervising and exits when its workers have. The launcher
passes ``--signals-to-handle SIGINT,SIGHUP,SIGQUIT``, so that torchrun leaves SIGTERM to this module; Ctrl-C still
stops everything the usual way.
"""

from __future__ import annotations

import os
import runpy
import signal
from pathlib import Path

from cpabanim.training.preemption import STOP_SIGNALS

FORWARDED = STOP_SIGNALS


def child_pids(pid: int | None = None) -> list[int]:
    """The children of process ``pid`` (this one by default), from /proc: those of each of its threads."""
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    children: list[int] = []
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile, or a kernel without the children file
            continue
    return children


def forward(signum: int, frame=None) -> None:
    """Send ``signum`` to each worker's process group (or to the worker alone when it leads none)."""
    for child in child_pids():
        try:
            os.killpg(child, signum)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(child, signum)
            except ProcessLookupError:  # it has just exited
                pass


def main() -> None:
    for s in FORWARDED:
        signal.signal(s, forward)
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
