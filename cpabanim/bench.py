"""``cpabanim bench <what>``: benchmarks that print figures measured side by side in one run.

    cpabanim bench cpab  [--json FILE] [--device cpu|cuda]   CPAB fit (fast vs paper's Adam) and dense warp vs libcpab
    cpabanim bench train [--json FILE] [--device D] [--preset P] [--frame-size S] [--batch-size B] [--profile]
                                                            training step time / peak memory, CPAB vs TPS motion;
                                                            --profile: where a step's time goes, per phase
    cpabanim bench data  [--json FILE] [--frame-size S] [--workers N] [--batch-size B] [--repeats R]
                                                            training items/s of the input pipeline, 0 vs N workers

Figures are never asserted in tests (docs/model.md, "Training step profile").
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS = {
    "cpab": "cpabanim.cpab.bench",
    "train": "cpabanim.models.bench",
    "data": "cpabanim.bench",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON here")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--preset", default=None, help="train/data: a preset of presets/ (e.g. vox-256)")
    parser.add_argument("--frame-size", type=int, default=None, help="train/data: frame side in pixels")
    parser.add_argument("--batch-size", type=int, default=None, help="train/data: batch size")
    parser.add_argument("--workers", type=int, default=2, help="data: compare 0 workers with this many (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="data: measure 0 and N workers in turn this many times, report the medians (default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="train: time each phase of a step (data wait, keypoints, CPAB fit, dense warp, ...)")


def run(args: argparse.Namespace) -> int:
    if args.what == "cpab":
        return importlib.import_module(BENCHMARKS["cpab"]).main(json_path=args.json_path, device=args.device,
                                                                 quick=args.quick)
    overrides = []
    if args.frame_size:
        overrides.append(f"data.frame_size={args.frame_size}")
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.what == "data":
        return bench_data(args.json_path, args.preset, overrides, args.workers, args.quick, args.repeats)
    from cpabanim.models import bench as train_bench

    return train_bench.main(json_path=args.json_path, device=args.device, quick=args.quick, preset=args.preset,
                            overrides=overrides, profile=args.profile)


def bench_params(preset: str | None, overrides: list[str]) -> dict[str, Any]:
    """params.yaml (when present, else the built-in defaults) with the preset and overrides of a benchmark."""
    from cpabanim.config import load_params

    path = Path("params.yaml")
    if not path.is_file():  # outside the project: the built-in defaults
        path = Path(tempfile.mkdtemp(prefix="cpabanim-bench-")) / "params.yaml"
        path.write_text("{}\n")
    return load_params(path, preset=preset, overrides=overrides)


def write_bench_frames(root: Path, frame_size: int, videos: int = 6, frames: int = 8, masks: Path | None = None) -> Path:
    """The embedded synthetic videos as PNG frame folders under ``root/train`` (what preprocess writes), and
    with ``masks`` a region map per video (a 4x4 grid of regions: the semantic loss's input). -> ``root``."""
    import numpy as np

    from cpabanim.data.synthetic import generate
    from cpabanim.data.video import write_frames

    for name, video in generate("train", videos, frames, frame_size, seed=0):
        write_frames(video, root / "train" / name)
        if masks is not None:
            ys, xs = np.mgrid[0:frame_size, 0:frame_size] * 4 // frame_size
            labels = np.broadcast_to((ys * 4 + xs + 1).astype(np.uint8), (frames, frame_size, frame_size))
            (masks / "train").mkdir(parents=True, exist_ok=True)
            np.savez_compressed(masks / "train" / f"{name}.npz", labels=labels)
    return root


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


def bench_data(json_path: str | None, preset: str | None, overrides: list[str], workers: int,
               quick: bool, repeats: int = 3) -> int:
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
        dataset = FramesDataset(root, "train", frame_shape=(size, size, 3), augmentation=params["data"]["augmentation"],
                                num_repeats=10_000)
        for _ in range(repeats):
            serial.append(items_per_second(dataset, 0, batch_size, batches))
            parallel.append(items_per_second(dataset, workers, batch_size, batches))
    ratios = [p["items_per_s"] / s["items_per_s"] for s, p in zip(serial, parallel)]
    results = {"frame_size": size, "batch_size": batch_size, "workers": workers, "items": batches * batch_size,
               "repeats": repeats,
               "items_per_s": statistics.median(p["items_per_s"] for p in parallel),
               "items_per_s_0_workers": statistics.median(s["items_per_s"] for s in serial),
               "speedup": statistics.median(ratios), "speedups": ratios,
               "startup_s": statistics.median(p["startup_s"] for p in parallel),
               "augmentation": params["data"]["augmentation"]}
    print("\n".join([
        f"training items ({size} px, batch {batch_size}, {results['items']} items after a warm-up batch, "
        f"median of {repeats} alternating runs):",
        f"  {'workers':<8} {'items/s':>9} {'ms/item':>8}",
        f"  {0:<8} {results['items_per_s_0_workers']:>9.1f} {1000 / results['items_per_s_0_workers']:>8.2f}",
        f"  {workers:<8} {results['items_per_s']:>9.1f} {1000 / results['items_per_s']:>8.2f}",
        f"  {workers} workers / 0 workers: {results['speedup']:.2f}x (runs: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; worker start-up {results['startup_s']:.2f} s)",
    ]))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2))
    return 0
