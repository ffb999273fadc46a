"""Where a process runs: the one owner of the device, the (torchrun) ranks and the training precision.

- :func:`resolve_device` turns the ``device`` parameter into a torch device (and says clearly when it cannot);
- :class:`Runtime` is this process's place in a job: device, rank, world size, local rank, and the AMP policy
  of ``train.amp`` (the autocast context, the GradScaler). :meth:`Runtime.start` sets it up and tears it
  down in one place: it reads torchrun's environment, sets the CUDA device and cuDNN autotuning, joins the
  process group when the world has more than one process (nccl on CUDA, gloo on CPU), and leaves the group it
  joined on exit. The training entry point opens it once; everything below receives it;
- :meth:`Runtime.agree` is how the ranks decide together, e.g. to stop at the same step after a signal reached
  some of them (docs/model.md, "Preemption"): one tiny all_reduce on the CPU.

    with Runtime.start(cfg.device, cfg.train.amp) as runtime:
        train(job, runtime=runtime)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from cpabanim.errors import ConfigError

Precision = Literal["off", "bf16", "fp16"]


def resolve_device(choice: str = "auto", local_rank: int | None = None):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` -> this process's GPU (``LOCAL_RANK`` under torchrun),
    or a clear error when there is none; ``cpu`` -> CPU. Returns a ``torch.device``."""
    import torch

    if choice not in ("auto", "cpu", "cuda") and not str(choice).startswith("cuda:"):
        raise ConfigError(f"device {choice!r}: use auto, cpu or cuda")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {choice} was asked for but no CUDA device is available (use device: auto or cpu)")
    if str(choice).startswith("cuda:"):
        return torch.device(choice)
    rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    return torch.device("cuda", rank)


def resolve_precision(amp: str, device) -> Precision:
    """``train.amp`` on ``device``: auto = bf16 on CUDA; always off on CPU."""
    if device.type != "cuda" or amp == "off":
        return "off"
    return "fp16" if amp == "fp16" else "bf16"


@dataclass(frozen=True)
class Runtime:
    """This process's device, place in the job and precision. Build it with :meth:`start`."""

    device: Any  # torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    precision: Precision = "off"
    scaler: Any = None  # torch.amp.GradScaler under fp16 (its state lives as long as the runtime), else None
    cpu_group: Any = None  # under nccl: a gloo group of the same ranks, for :meth:`agree`; None = the default group

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of a training forward (a fresh one per use): bf16 / fp16 on CUDA, else nothing."""
        import torch

        if self.precision == "off":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in a one-process job)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, value: int) -> int:
        """The largest of every rank's ``value`` (``value`` itself in a one-process job); every rank must call it
        at the same point. Cheap enough for every step: one int64 all_reduce over gloo, on the CPU even under
        nccl (a side group), so it never waits for the GPU's queue of work."""
        if not self.distributed:
            return int(value)
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(value)], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.cpu_group)
        return int(flag.item())

    @classmethod
    @contextlib.contextmanager
    def start(cls, device: str = "auto", amp: str = "off") -> Iterator[Runtime]:
        """Set up this process from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE;
        absent: a one-process job) and tear down on exit what it set up (the process group it joined)."""
        import torch

        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch_device = resolve_device(device, local_rank)
        precision = resolve_precision(amp, torch_device)
        runtime = cls(
            torch_device,
            rank=int(os.environ.get("RANK", "0")),
            world=world,
            local_rank=local_rank,
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
            precision=precision,
            scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
        )
        if runtime.device.type == "cuda":
            torch.cuda.set_device(runtime.device)
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
        joined = False
        if runtime.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if runtime.device.type == "cuda" else "gloo")
                joined = True
            if dist.get_backend() != "gloo":  # every rank creates it, in the same order
                runtime = replace(runtime, cpu_group=dist.new_group(backend="gloo"))
        try:
            yield runtime
        finally:
            if joined:
                import torch.distributed as dist

                dist.destroy_process_group()
