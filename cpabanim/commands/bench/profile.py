"""``cpabanim bench train --profile``: where one training step's time goes, phase by phase (data wait, keypoints,
CPAB fit, dense warp, networks, losses, backward, optimiser), CPAB against TPS (docs/model.md, "Training step
profile")."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from cpabanim.commands.bench.common import bench_params, write_bench_frames

PHASES = (
    "data wait",
    "keypoints",
    "background affine",
    "CPAB fit",
    "dense warp",
    "dense motion network",
    "generator",
    "losses",
    "backward",
    "optimizer",
    "other",
)


class PhaseClock:
    """Exclusive time per phase of one step: wall clock on CPU, CUDA events on GPU.

    Phases nest (the equivariance loss runs the keypoint detector inside ``losses``); a phase's time excludes
    the phases inside it, so the phases of a step add up to the step.
    """

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.records: list[list[Any]] = []  # [name, start mark, end mark, index of the enclosing phase]
        self.stack: list[int] = []

    def _mark(self):
        import torch

        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @contextlib.contextmanager
    def phase(self, name: str):
        index = len(self.records)
        self.records.append([name, self._mark(), None, self.stack[-1] if self.stack else None])
        self.stack.append(index)
        try:
            yield
        finally:
            self.stack.pop()
            self.records[index][2] = self._mark()

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Time every call of ``owner.attribute`` (a module's ``forward``, a method) as phase ``name``."""
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def collect(self) -> dict[str, float]:
        """{phase: exclusive seconds} of the phases recorded since the last call (synchronises CUDA)."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            durations = [start.elapsed_time(end) / 1000 for _, start, end, _ in self.records]
        else:
            durations = [end - start for _, start, end, _ in self.records]
        exclusive = list(durations)
        for index, (_, _, _, parent) in enumerate(self.records):
            if parent is not None:
                exclusive[parent] -= durations[index]
        totals: dict[str, float] = {}
        for (name, *_), seconds in zip(self.records, exclusive):
            totals[name] = totals.get(name, 0.0) + seconds
        self.records.clear()
        return totals


def instrument(model, objective, clock: PhaseClock) -> None:
    """Wrap the networks, the motion model's fit and grids, and the objective with phase timers."""
    clock.wrap(model.kp_detector, "forward", "keypoints")
    if model.bg_predictor is not None:
        clock.wrap(model.bg_predictor, "forward", "background affine")
    clock.wrap(model.motion, "forward", "dense warp")  # TPS: fit + grids; CPAB: grids, the fit is timed apart
    if hasattr(model.motion, "_fit"):
        clock.wrap(model.motion, "_fit", "CPAB fit")
    clock.wrap(model.dense_motion, "forward", "dense motion network")
    clock.wrap(model.generator, "forward", "generator")
    clock.wrap(objective, "forward", "losses")


def _offline_losses(params: dict[str, Any]) -> list[str]:
    """Switch losses whose pretrained weights are absent to their offline alternatives; -> what was switched."""
    from cpabanim.config.typed import LossConfig
    from cpabanim.errors import MissingWeightsError
    from cpabanim.losses.objective import GeneratorObjective

    switched = []
    for key, offline in (("perceptual", "pixel"), ("structure", "off")):
        try:
            GeneratorObjective(LossConfig.from_mapping(params["loss"]), params["paths"]["weights"])
            break
        except MissingWeightsError:
            if params["loss"][key] != offline:
                params["loss"][key] = offline
                switched.append(f"loss.{key}={offline}")
    return switched


def _profile_one(
    motion: str,
    device: str,
    steps: int,
    warmup: int,
    overrides: list[str],
    preset: str | None,
    data_root: str,
    masks_root: str,
    queue,
) -> None:
    """One configuration in its own process: the trainer's own build (loader, workers, autocast, optimisers) on
    synthetic frames, then ``warmup + steps`` instrumented steps; puts {phase: mean seconds, ...} on ``queue``."""
    import torch

    from cpabanim.data.dataset import FramesDataset
    from cpabanim.runtime import Runtime
    from cpabanim.training.job import TrainingJob
    from cpabanim.training.loop import build

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    params = bench_params(preset, [f"model.motion={motion}", f"device={device}", *overrides])
    offline = _offline_losses(params)
    size = int(params["data"]["frame_size"])
    dataset = FramesDataset(
        data_root,
        "train",
        frame_shape=(size, size, 3),
        augmentation=params["data"]["augmentation"],
        num_repeats=10_000,
        masks_root=masks_root if params["loss"]["semantic"] == "masks" else None,
    )
    job = TrainingJob.of(params, checkpoint=Path(data_root).parent / "last.pt")  # never written: no epochs run
    with Runtime.start(job.device, job.train.amp) as runtime:
        run = build(job, runtime, dataset)
        result = _profile_steps(run, steps, warmup)
    queue.put(
        {
            **result,
            "offline_losses": offline,
            "config": {
                "frame_size": size,
                "batch_size": job.train.batch_size,
                "num_cpab": job.model.num_cpab,
                "fit_method": job.model.fit_method,
                "integrator": job.model.integrator,
                "num_workers": run.loader.num_workers,
                "amp": job.train.amp,
                "backbone": job.model.backbone,
            },
        }
    )


def _profile_steps(run, steps: int, warmup: int) -> dict[str, Any]:
    """``warmup + steps`` instrumented steps of the built ``run`` -> {phases: mean seconds, peak_mb, timer}."""
    import resource
    import statistics

    import torch

    from cpabanim.data.loader import step_seed, to_device

    dev, tp = run.runtime.device, run.job.train
    step_module = run.step_module
    clock = PhaseClock(dev)
    instrument(run.model, step_module.objective, clock)
    run.model.train()
    run.sampler.set_epoch(0)
    iterator = iter(run.loader)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    per_step: list[dict[str, float]] = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        with clock.phase("data wait"):
            batch = to_device(next(iterator), dev, tp.channels_last)
        generator = torch.Generator().manual_seed(step_seed(0, index))
        with run.runtime.autocast():
            losses, _ = step_module(batch, True, 0.1, generator)
            total = sum(losses.values())
        for optimizer in run.optimization.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        with clock.phase("backward"):
            run.optimization.backward(total)
        with clock.phase("optimizer"):
            run.optimization.clip_and_step(True)
        phases = clock.collect()
        phases["step"] = time.perf_counter() - start
        phases["other"] = phases["step"] - sum(v for k, v in phases.items() if k != "step")
        if index >= warmup:
            per_step.append(phases)
    del iterator
    result = {name: statistics.mean(p.get(name, 0.0) for p in per_step) for name in (*PHASES, "step")}
    peak_mb = (
        torch.cuda.max_memory_allocated(dev) / 2**20
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"phases": result, "peak_mb": peak_mb, "timer": "CUDA events" if dev.type == "cuda" else "wall clock"}


def profile_main(json_path: str | None, device: str, quick: bool, preset: str | None, overrides: list[str]) -> int:
    """Profile a CPAB step and a TPS step side by side and print the per-phase table."""
    import multiprocessing
    import tempfile

    steps, warmup = (3, 1) if quick else (10, 2)
    size = int(bench_params(preset, overrides)["data"]["frame_size"])
    context = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {"device": device, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="cpabanim-bench-profile-") as tmp:
        root, masks = Path(tmp) / "processed", Path(tmp) / "masks"
        write_bench_frames(root, size, masks=masks)
        for motion in ("cpab", "tps"):
            queue = context.Queue()
            process = context.Process(
                target=_profile_one,
                args=(motion, device, steps, warmup, overrides, preset, str(root), str(masks), queue),
            )
            process.start()
            results[motion] = queue.get()
            process.join()
    cpab, tps = results["cpab"]["phases"], results["tps"]["phases"]
    results["cpab_step_s"], results["tps_step_s"] = cpab["step"], tps["step"]
    results["cpab_over_tps"] = cpab["step"] / tps["step"]
    results["data_wait_share"] = cpab["data wait"] / cpab["step"]
    config = results["cpab"]["config"]
    lines = [
        f"training step profile ({device}, {results['cpab']['timer']}, mean of {steps} steps after {warmup}): "
        + ", ".join(f"{k} {v}" for k, v in config.items())
    ]
    if results["cpab"]["offline_losses"]:
        lines.append(f"  pretrained loss weights absent: profiled with {', '.join(results['cpab']['offline_losses'])}")
    lines.append(f"  {'phase':<22} {'cpab (ms)':>10} {'share':>6} {'tps (ms)':>10} {'share':>6}")
    for name in (*PHASES, "step"):
        lines.append(
            f"  {name:<22} {cpab[name] * 1000:>10.1f} {cpab[name] / cpab['step']:>6.1%} "
            f"{tps[name] * 1000:>10.1f} {tps[name] / tps['step']:>6.1%}"
        )
    biggest = max((n for n in PHASES if n != "other"), key=lambda n: cpab[n])
    lines.append(
        f"  cpab / tps step: {results['cpab_over_tps']:.2f}x; data wait {results['data_wait_share']:.1%} of the "
        f"cpab step (goal <= 5%); biggest cpab phase: {biggest}"
    )
    results["biggest_phase"] = biggest
    print("\n".join(lines))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2))
    return 0
