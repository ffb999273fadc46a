"""``cpabanim bench data``: training items per second of the input pipeline, 0 loader workers against N, measured
in turn ``--repeats`` times (medians and every run's ratio)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from cpabanim.commands.bench.common import bench_params, write_bench_frames


def items_per_second(dataset, workers: int, batch_size: int, batches: int) -> dict[str, float]:
    """Items/s of the training DataLoader over ``batches`` batches after one warm-up batch (worker start-up and
    the first batch excluded), each batch made ready as the trainer does (``to_device``: float frames); the
    sampler and items are the trainer's."""
    import torch

    from cpabanim.data.loader import EpochBatchSampler, make_loader, to_device

    sampler = EpochBatchSampler(len(dataset), batch_size, seed=0)
    loader = make_loader(dataset, sampler, workers, torch.device("cpu"))
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    for _ in range(batches):
        to_device(next(iterator), torch.device("cpu"))
    elapsed = time.perf_counter() - first
    del iterator, loader
    return {"items_per_s": batches * batch_size / elapsed, "startup_s": first - start}


def bench_data(
    json_path: str | None, preset: str | None, overrides: list[str], workers: int, quick: bool, repeats: int = 3
) -> int:
    """Items/s of the training input pipeline (decode two PNG frames + augmentation + collate + float frames) with
    0 workers and with ``workers`` workers on synthetic frames at ``data.frame_size``: the two settings measured
    in turn ``repeats`` times (a load change on the machine hits both), the median of each reported."""
    import statistics

    import torch

    from cpabanim.data.dataset import FramesDataset

    torch.set_num_threads(1)
    params = bench_params(preset, overrides)
    size, batch_size = int(params["data"]["frame_size"]), int(params["train"]["batch_size"])
    batches, repeats = (4, 1) if quick else (64, max(1, repeats))
    serial, parallel = [], []
    with tempfile.TemporaryDirectory(prefix="cpabanim-bench-data-") as tmp:
        root = write_bench_frames(Path(tmp), size)
        dataset = FramesDataset(
            root, "train", frame_shape=(size, size, 3), augmentation=params["data"]["augmentation"], num_repeats=10_000
        )
        for _ in range(repeats):
            serial.append(items_per_second(dataset, 0, batch_size, batches))
            parallel.append(items_per_second(dataset, workers, batch_size, batches))
    ratios = [p["items_per_s"] / s["items_per_s"] for s, p in zip(serial, parallel)]
    results = {
        "frame_size": size,
        "batch_size": batch_size,
        "workers": workers,
        "items": batches * batch_size,
        "repeats": repeats,
        "items_per_s": statistics.median(p["items_per_s"] for p in parallel),
        "items_per_s_0_workers": statistics.median(s["items_per_s"] for s in serial),
        "speedup": statistics.median(ratios),
        "speedups": ratios,
        "startup_s": statistics.median(p["startup_s"] for p in parallel),
        "augmentation": params["data"]["augmentation"],
    }
    print(
        "\n".join(
            [
                f"training items ({size} px, batch {batch_size}, {results['items']} items after a warm-up batch, "
                f"median of {repeats} alternating runs):",
                f"  {'workers':<8} {'items/s':>9} {'ms/item':>8}",
                f"  {0:<8} {results['items_per_s_0_workers']:>9.1f} {1000 / results['items_per_s_0_workers']:>8.2f}",
                f"  {workers:<8} {results['items_per_s']:>9.1f} {1000 / results['items_per_s']:>8.2f}",
                f"  {workers} workers / 0 workers: {results['speedup']:.2f}x (runs: "
                f"{', '.join(f'{r:.2f}' for r in ratios)}; worker start-up {results['startup_s']:.2f} s)",
            ]
        )
    )
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2))
    return 0
