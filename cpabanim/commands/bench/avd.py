"""``cpabanim bench avd``: optimiser steps per second of the avd stage's training (cpabanim/training/avd.py), its
batches built in the training process (0 loader workers) against N workers, measured in turn ``--repeats`` times
(medians and every run's ratio).

A step is what the stage runs: a batch of ``train.avd_batch_size`` (source, driving) frame pairs decoded and
augmented, the keypoint detector on both (train mode, no gradients) and the AVD network's Adam step. The frames are
the embedded synthetic videos written as PNG frame folders at ``--frame-size`` (256 px by default).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path

from cpabanim.commands.bench.common import bench_params, write_bench_frames, write_figures

WARM_UP = 4  # steps before the clock starts: worker start-up, and the loader's queue of prefetched batches settles


def steps_per_second(model_state: dict, params: dict, dataset, workers: int, steps: int, device) -> dict[str, float]:
    """Steps/s of ``steps`` AVD steps after :data:`WARM_UP` steps (worker start-up and the first batches excluded),
    from the model state ``model_state`` (each measurement starts from the same weights)."""
    from cpabanim.config.typed import ModelConfig, TrainConfig
    from cpabanim.models.full import AnimationModel
    from cpabanim.training.avd import AVDTraining
    from cpabanim.training.avd_schedule import AVDSchedule

    model = AnimationModel(ModelConfig.from_mapping(params["model"])).to(device)
    model.load_state_dict(model_state)
    schedule = AVDSchedule.of(TrainConfig.from_mapping(params["train"]))
    repeats = math.ceil((steps + WARM_UP + 1) * schedule.batch_size / len(dataset))  # one epoch holds every step
    training = AVDTraining(model, dataclasses.replace(schedule, epochs=1, repeats=repeats), seed=0)
    clock: dict[str, float] = {}

    def after_step(t: AVDTraining) -> bool:
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)
        if t.progress.step == WARM_UP:
            clock["first"] = time.perf_counter()
        return t.progress.step >= WARM_UP + steps

    start = time.perf_counter()
    training.fit(dataset, device, workers=workers, after_step=after_step)
    elapsed = time.perf_counter() - clock["first"]
    return {"steps_per_s": steps / elapsed, "startup_s": clock["first"] - start}


def bench_avd(
    json_path: str | None,
    preset: str | None,
    overrides: list[str],
    workers: int,
    quick: bool,
    repeats: int = 3,
    device: str | None = None,
) -> int:
    """AVD steps/s with 0 and ``workers`` loader workers on synthetic frames at ``data.frame_size``: the two
    settings measured in turn ``repeats`` times (a load change on the machine hits both), the median of each."""
    import torch

    from cpabanim.config.typed import ModelConfig
    from cpabanim.data.dataset import FramesDataset
    from cpabanim.models.full import AnimationModel
    from cpabanim.runtime import resolve_device

    torch.set_num_threads(1)
    params = bench_params(preset, overrides)
    size, batch_size = int(params["data"]["frame_size"]), int(params["train"]["avd_batch_size"])
    steps, repeats = (2, 1) if quick else (24, max(1, repeats))
    torch_device = resolve_device(device or "auto")
    torch.manual_seed(0)
    state = AnimationModel(ModelConfig.from_mapping(params["model"])).state_dict()
    serial, parallel = [], []
    with tempfile.TemporaryDirectory(prefix="cpabanim-bench-avd-") as tmp:
        root = write_bench_frames(Path(tmp), size)
        dataset = FramesDataset(
            root, "train", frame_shape=(size, size, 3), augmentation=params["data"]["augmentation"], num_repeats=1
        )
        for _ in range(repeats):
            serial.append(steps_per_second(state, params, dataset, 0, steps, torch_device))
            parallel.append(steps_per_second(state, params, dataset, workers, steps, torch_device))
    ratios = [p["steps_per_s"] / s["steps_per_s"] for s, p in zip(serial, parallel)]
    results = {
        "frame_size": size,
        "batch_size": batch_size,
        "backbone": params["model"]["backbone"],
        "device": str(torch_device),
        "workers": workers,
        "steps": steps,
        "repeats": repeats,
        "steps_per_s": statistics.median(p["steps_per_s"] for p in parallel),
        "steps_per_s_0_workers": statistics.median(s["steps_per_s"] for s in serial),
        "speedup": statistics.median(ratios),
        "speedups": ratios,
        "startup_s": statistics.median(p["startup_s"] for p in parallel),
    }
    print_figures(results)
    write_figures(json_path, results)
    return 0


def print_figures(results: dict) -> None:
    size, batch, workers = results["frame_size"], results["batch_size"], results["workers"]
    serial, parallel = results["steps_per_s_0_workers"], results["steps_per_s"]
    print(
        "\n".join(
            [
                f"AVD steps ({size} px, batch {batch}, {results['backbone']} detector on {results['device']}, "
                f"{results['steps']} steps after {WARM_UP} warm-up steps, median of {results['repeats']} alternating "
                "runs):",
                f"  {'workers':<8} {'steps/s':>9} {'s/step':>8}",
                f"  {0:<8} {serial:>9.3f} {1 / serial:>8.3f}",
                f"  {workers:<8} {parallel:>9.3f} {1 / parallel:>8.3f}",
                f"  {workers} workers / 0 workers: {results['speedup']:.2f}x (runs: "
                f"{', '.join(f'{r:.2f}' for r in results['speedups'])}; worker start-up {results['startup_s']:.2f} s)",
            ]
        )
    )
