"""CUDA training paths (`make test-gpu`; skipped without a GPU): bf16 AMP training with pinned-memory loader
workers and channels_last, torch.compile of the networks, and 2-process nccl DDP when two GPUs exist."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpabanim.models.checkpoint import load_checkpoint
from tests.conftest import requires_cuda
from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cuda, requires_cuda]


def _cuda_params(tmp_path, **train):
    params = tiny_params(tmp_path, motion="cpab", **train)
    params["device"] = "cuda"
    return params


def test_loader_pins_memory_and_copies_without_blocking(tmp_path):
    from cpabanim.data.loader import EpochBatchSampler, make_loader, to_device

    sampler = EpochBatchSampler(8, batch_size=4, seed=0)
    loader = make_loader(MovingBlobDataset(8), sampler, num_workers=2, device=torch.device("cuda"))
    batch = next(iter(loader))
    assert batch["source"].is_pinned()
    moved = to_device(batch, torch.device("cuda"), channels_last=True)
    assert moved["source"].is_cuda and moved["source"].is_contiguous(memory_format=torch.channels_last)


def test_bf16_amp_training_with_workers_and_channels_last(tmp_path):
    from cpabanim.training.loop import train

    params = _cuda_params(tmp_path, max_steps=3, amp="bf16", num_workers=2, channels_last=True)
    result = train(job_of(params), dataset=MovingBlobDataset(8))
    assert result["step"] == 3 and all(math.isfinite(v) for v in result["losses"].values())
    assert torch.backends.cudnn.benchmark
    _, extra = load_checkpoint(result["checkpoint"])
    assert extra["complete"]


def test_compiled_networks_train_and_keep_their_parameter_names(tmp_path):
    from cpabanim.training.loop import train

    params = _cuda_params(tmp_path, max_steps=2, compile=True)
    result = train(job_of(params), dataset=MovingBlobDataset(8))
    assert all(math.isfinite(v) for v in result["losses"].values())
    model, _ = load_checkpoint(result["checkpoint"])  # the names of an uncompiled model: loads as is
    assert not any("_orig_mod" in name for name in model.state_dict())


DDP_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from cpabanim.training.loop import train
from tests.train.helpers import MovingBlobDataset, job_of, tiny_params
params = tiny_params(Path({tmp!r}), motion="cpab", max_steps=2, num_workers=1)
params["device"] = "cuda"
result = train(job_of(params), dataset=MovingBlobDataset(num_items=8))
Path({tmp!r}, "result_" + os.environ["RANK"]).write_text(str(result["step"]))
"""


@pytest.mark.skipif("__import__('torch').cuda.device_count() < 2", reason="needs two CUDA devices")
def test_ddp_two_gpus_nccl(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), tmp=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"result_{rank}").read_text() for rank in (0, 1)] == ["2", "2"]
    _, extra = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert extra["step"] == 2 and extra["complete"]
