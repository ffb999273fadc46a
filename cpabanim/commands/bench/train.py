"""``cpabanim bench train``: one training step (forward + losses + backward + Adam) of the same model with CPAB
motion and with TPS motion, side by side: median step time and peak memory; with ``--profile``, where the time
of a step goes, phase by phase (docs/model.md, "Training step profile").

Each configuration runs in its own spawned process so that its peak memory (CUDA: ``max_memory_allocated``;
CPU: the process's peak RSS) is its own. The model, losses and batch come from params.yaml, ``--preset``,
``--frame-size``, ``--batch-size`` and ``CPABANIM_BENCH_SET`` (``;``-separated overrides, e.g.
``CPABANIM_BENCH_SET="model.num_cpab=10;model.fit_method=lm"``).
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


def _bench_one(
    motion: str, device: str, steps: int, warmup: int, overrides: list[str], queue, preset: str | None = None
) -> None:
    import resource

    import torch

    from cpabanim.commands.bench.common import bench_params
    from cpabanim.config.typed import LossConfig, ModelConfig
    from cpabanim.losses.objective import GeneratorObjective
    from cpabanim.models.full import AnimationModel
    from cpabanim.training.step import TrainingStep

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    params = bench_params(preset, [f"model.motion={motion}", *overrides])
    size = int(params["data"]["frame_size"])
    batch_size = int(params["train"]["batch_size"])
    dev = torch.device(device)
    model = AnimationModel(ModelConfig.from_mapping(params["model"])).to(dev)
    objective = GeneratorObjective(LossConfig.from_mapping(params["loss"]), params["paths"]["weights"]).to(dev)
    step_module = TrainingStep(model, objective)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.5, 0.999))
    batch = {
        "source": torch.rand(batch_size, 3, size, size, device=dev),
        "driving": torch.rand(batch_size, 3, size, size, device=dev),
    }
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
    queue.put(
        {
            "step_s": statistics.median(times),
            "peak_mb": peak_mb,
            "batch_size": batch_size,
            "frame_size": size,
            "num_cpab": params["model"]["num_cpab"],
            "fit_method": params["model"]["fit_method"],
        }
    )


def run_benchmark(
    device: str, quick: bool, overrides: list[str] | None = None, preset: str | None = None
) -> dict[str, Any]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    steps, warmup = (3, 1) if quick else (10, 2)
    results: dict[str, Any] = {"device": device, "steps": steps}
    # name -> (motion, extra overrides); cpab_implicit: the same CPAB step with the implicit keypoint gradient
    # (docs/model.md, "Keypoints that learn through the CPAB fit")
    configs = {"cpab": ("cpab", []), "cpab_implicit": ("cpab", ["model.kp_gradient=implicit"]), "tps": ("tps", [])}
    for name, (motion, extra) in configs.items():
        queue = context.Queue()
        process = context.Process(
            target=_bench_one, args=(motion, device, steps, warmup, [*(overrides or []), *extra], queue, preset)
        )
        process.start()
        result = queue.get()
        process.join()
        results[f"{name}_step_s"] = result["step_s"]
        results[f"{name}_peak_mb"] = result["peak_mb"]
        results.update({k: result[k] for k in ("batch_size", "frame_size", "num_cpab", "fit_method")})
    results["cpab_over_tps"] = results["cpab_step_s"] / results["tps_step_s"]
    results["cpab_implicit_over_tps"] = results["cpab_implicit_step_s"] / results["tps_step_s"]
    return results


def main(
    json_path: str | None = None,
    device: str | None = None,
    quick: bool = False,
    preset: str | None = None,
    overrides: list[str] | None = None,
    profile: bool = False,
) -> int:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = [*(overrides or []), *(s for s in os.environ.get("CPABANIM_BENCH_SET", "").split(";") if s.strip())]
    if profile:
        from cpabanim.commands.bench.profile import profile_main

        return profile_main(json_path, device, quick, preset, overrides)
    results = run_benchmark(device, quick, overrides, preset)
    lines = [
        f"training step ({device}, batch {results['batch_size']}, {results['frame_size']} px, "
        f"num_cpab {results['num_cpab']}, fit {results['fit_method']}):",
        f"  {'motion':<13} {'step (s)':>10} {'peak (MB)':>10}",
        f"  {'cpab':<13} {results['cpab_step_s']:>10.4f} {results['cpab_peak_mb']:>10.1f}",
        f"  {'cpab implicit':<13} {results['cpab_implicit_step_s']:>10.4f} {results['cpab_implicit_peak_mb']:>10.1f}",
        f"  {'tps':<13} {results['tps_step_s']:>10.4f} {results['tps_peak_mb']:>10.1f}",
        f"  cpab / tps step time: {results['cpab_over_tps']:.2f}x (goal <= 1.5x)",
        f"  cpab implicit / tps step time: {results['cpab_implicit_over_tps']:.2f}x (goal <= 1.5x)",
    ]
    print("\n".join(lines))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2))
    return 0


# ------------------------------------------------------------------------------------------------ --profile
