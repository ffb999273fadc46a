"""GPUs per job (cpabanim/pipeline/resources.py; docs/cluster.md, "GPUs"): each stage asks for a GPU only where its
work runs on one, and on one machine the machine's GPU count caps the GPU jobs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cpabanim.config.layers import resolve
from cpabanim.pipeline import all_stages
from cpabanim.pipeline.resources import gpu_request, local_gpus

from .conftest import BIN, copy_project, tool_env


@pytest.mark.parametrize(
    ("visible", "count"), [("0", 1), ("0,1", 2), ("", 0), ("-1", 0), ("0,-1,1", 1), ("GPU-3f2a,GPU-77b1", 2)]
)
def test_visible_devices_count_as_cuda_reads_them(visible: str, count: int, tmp_path: Path) -> None:
    assert local_gpus({"CUDA_VISIBLE_DEVICES": visible}, tmp_path / "no-driver") == count


def test_without_the_variable_the_driver_s_gpus_count(tmp_path: Path) -> None:
    assert local_gpus({}, tmp_path / "no-driver") == 0
    for address in ("0000:17:00.0", "0000:65:00.0"):
        (tmp_path / address).mkdir()
    assert local_gpus({}, tmp_path) == 2


def requests(available: int | None, **values) -> dict[str, int]:
    """Stage name -> GPUs one of its jobs asks for, with the defaults and ``values`` (dotted keys)."""
    params = resolve({}, values)
    return {name: gpu_request(stage, params, available) for name, stage in all_stages().items()}


def test_a_machine_without_a_gpu_asks_for_none() -> None:
    assert set(requests(0).values()) == {0}
    assert set(requests(0, **{"masks.source": "sam"}).values()) == {0}


def test_on_a_gpu_only_the_work_that_runs_on_one_asks() -> None:
    with_gpu = requests(2)
    assert with_gpu["reconstruct"] == with_gpu["avd"] == with_gpu["animate"] == 1
    assert with_gpu["train"] == 2  # train.processes: auto, one process per GPU of the machine
    assert requests(2, **{"train.processes": 1})["train"] == 1
    assert with_gpu["download"] == with_gpu["preprocess"] == with_gpu["report"] == 0
    assert with_gpu["masks"] == 0  # SLIC superpixels (the default) run on the CPU
    assert requests(2, **{"masks.source": "sam"})["masks"] == 1
    assert with_gpu["evaluate"] == 0  # pixel metrics and the default extractors run on the CPU
    assert requests(2, **{"evaluate.metrics": ["l1", "lpips"]})["evaluate"] == 1
    assert requests(2, **{"evaluate.keypoints": "face_alignment"})["evaluate"] == 1
    assert set(requests(2, device="cpu").values()) == {0}


def test_under_a_cluster_auto_asks_since_the_job_runs_on_a_node() -> None:
    """The submit host has no GPU; the node the job lands on may: `auto` asks, `cpu` does not."""
    assert requests(None)["train"] == 1
    assert requests(None, device="cpu")["train"] == 0


def snakemake(root: Path, visible: str, *args: str) -> str:
    """Snakemake's output in ``root`` with CUDA_VISIBLE_DEVICES=``visible``."""
    env = {**tool_env(root), "CUDA_VISIBLE_DEVICES": visible}
    out = subprocess.run(
        [str(BIN / "snakemake"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_snakemake_plans_and_caps_the_gpus_the_machine_has(tmp_path: Path) -> None:
    """Where CUDA sees 2 GPUs each training asks for both (`train.processes: auto`, one process per GPU), and the
    run's `gpu` resource is 2: no two GPU jobs share one (on a machine without a GPU, as in every other pipeline test, no job asks: they run as many at once as the
    cores allow). `--resources gpu=N` sets another cap."""
    root = copy_project(tmp_path / "project")
    plan = snakemake(root, "0,1", "-n", "--config", "experiments=[cpab,tps]")
    assert re.findall(r"rule train:(?:\n\s+.*)*?\n\s+resources:.*gpu=(\d+)", plan) == ["2", "2"], plan[-3000:]
    tiny = "data={frame_size: 16, synthetic: {num_train: 4, num_test: 1, num_frames: 2}}"
    ran = snakemake(root, "0,1", "--cores", "1", "--until", "download", "--config", tiny)
    assert re.search(r"Provided resources: .*gpu=Resource\(\"gpu\", 2\)", ran), ran[-3000:]
