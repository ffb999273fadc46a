"""``cpabanim bench train``: one training step (forward + losses + backward + Adam) of the same model with CPAB
motion and with TPS motion, side by side: median step time and peak memory.

Each configuration runs in its own spawned process so that its peak memory (CUDA: ``max_memory_allocated``;
CPU: the process's peak RSS) is its own. The model, losses and batch come from params.yaml (the embedded CPU
default unless ``--preset``-like overrides are given through ``CPABANIM_BENCH_SET``, e.g.
``CPABANIM_BENCH_SET="model.num_cpab=10;data.frame_size=256"``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _bench_one(motion: str, device: str, steps: int, warmup: int, overrides: list[str], queue) -> None:
    import resource

    import torch

    from cpabanim.config import load_params
    from cpabanim.losses.objective import GeneratorObjective
    from cpabanim.models.full import AnimationModel
    from cpabanim.train import TrainingStep

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    params = load_params(overrides=[f"model.motion={motion}", *overrides])
    size = int(params["data"].get("frame_size", 64))
    batch_size = int(params["train"]["batch_size"])
    dev = torch.device(device)
    model = AnimationModel(params["model"]).to(dev)
    objective = GeneratorObjective(params["loss"], params["paths"]["weights"]).to(dev)
    step_module = TrainingStep(model, objective)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.5, 0.999))
    batch = {"source": torch.rand(batch_size, 3, size, size, device=dev),
             "driving": torch.rand(batch_size, 3, size, size, device=dev)}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(i)
        losses, _ = step_module(batch, True, 0.1, generator)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    queue.put({"step_s": statistics.median(times), "peak_mb": peak_mb, "batch_size": batch_size,
               "frame_size": size, "num_cpab": params["model"]["num_cpab"],
               "fit_method": params["model"]["fit_method"]})


def run_benchmark(device: str, quick: bool, overrides: list[str] | None = None) -> dict[str, Any]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    steps, warmup = (3, 1) if quick else (10, 2)
    results: dict[str, Any] = {"device": device, "steps": steps}
    for motion in ("cpab", "tps"):
        queue = context.Queue()
        process = context.Process(target=_bench_one, args=(motion, device, steps, warmup, overrides or [], queue))
        process.start()
        result = queue.get()
        process.join()
        results[f"{motion}_step_s"] = result["step_s"]
        results[f"{motion}_peak_mb"] = result["peak_mb"]
        results.update({k: result[k] for k in ("batch_size", "frame_size", "num_cpab", "fit_method")})
    results["cpab_over_tps"] = results["cpab_step_s"] / results["tps_step_s"]
    return results


def main(json_path: str | None = None, device: str | None = None, quick: bool = False) -> int:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = [s for s in os.environ.get("CPABANIM_BENCH_SET", "").split(";") if s.strip()]
    results = run_benchmark(device, quick, overrides)
    lines = [
        f"training step ({device}, batch {results['batch_size']}, {results['frame_size']} px, "
        f"num_cpab {results['num_cpab']}, fit {results['fit_method']}):",
        f"  {'motion':<6} {'step (s)':>10} {'peak (MB)':>10}",
        f"  {'cpab':<6} {results['cpab_step_s']:>10.4f} {results['cpab_peak_mb']:>10.1f}",
        f"  {'tps':<6} {results['tps_step_s']:>10.4f} {results['tps_peak_mb']:>10.1f}",
        f"  cpab / tps step time: {results['cpab_over_tps']:.2f}x (goal <= 1.5x)",
    ]
    print("\n".join(lines))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2))
    return 0
