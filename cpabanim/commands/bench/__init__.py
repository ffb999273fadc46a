"""``cpabanim bench <what>``: benchmarks that print figures measured side by side in one run.

    cpabanim bench cpab  [--json FILE] [--device cpu|cuda]   CPAB fit (fast vs paper's Adam) and dense warp vs libcpab
    cpabanim bench train [--json FILE] [--device D] [--preset P] [--frame-size S] [--batch-size B] [--profile]
                                                            training step time / peak memory, CPAB vs TPS motion;
                                                            --profile: where a step's time goes, per phase
    cpabanim bench data  [--json FILE] [--frame-size S] [--workers N] [--batch-size B] [--repeats R]
                                                            training items/s of the input pipeline, 0 vs N workers
    cpabanim bench avd   [--json FILE] [--frame-size S] [--workers N] [--batch-size B] [--repeats R] [--device D]
                                                            the avd stage's steps/s (256 px), 0 vs N loader workers
    cpabanim bench demo  [--json FILE] [--frame-size S] [--clip VIDEO] [--quick]
                                                            the demo's peak memory on a 10 s and a 60 s driving video
    cpabanim bench preprocess [--json FILE] [--clip VIDEO] [--quick]
                                                            preprocess's peak memory on an 8000x8000 clip,
                                                            data.folder.max_frames 12 vs 48 (--clip: that
                                                            video scaled up, with face crops)

    cpabanim bench dataset [--json FILE] [--videos N] [--frames F] [--frame-size S] [--old-videos M] [--quick]
                                                            the data stages at scale: frame folders against
                                                            sharded frame archives (throughput, files, bytes,
                                                            random reads, dvc add, planning, a kill)
    cpabanim bench masks [--json FILE] [--frame-size S] [--batch-size B] [--frames F] [--device D] [--quick]
                                                            seconds per frame of SLIC and SAM (encoder batch 1
                                                            vs B), and VoxCeleb's device-days
    cpabanim bench evaluate [--json FILE] [--videos N] [--frames F] [--frame-size S] [--quick]
                                                            a study of 2 experiments x 2 seeds evaluated with a
                                                            cache per run vs one shared cache, 1 vs 4 shards: test
                                                            frames extracted, seconds, the same metrics
    cpabanim bench motion [--json FILE] [--frame-size S] [--quick]
                                                            the motion models alone (CPAB, TPS, affine) from exact
                                                            keypoints against the synthetic data's true warp, per
                                                            data.synthetic.motion size (--quick: no Adam fit)

Figures are never asserted in tests (docs/model.md, "Training step profile").
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "cpab": "cpabanim.commands.bench.cpab",
    "train": "cpabanim.commands.bench.train",
    "data": "cpabanim.commands.bench.data",
    "avd": "cpabanim.commands.bench.avd",
    "demo": "cpabanim.commands.bench.demo",
    "preprocess": "cpabanim.commands.bench.preprocess",
    "dataset": "cpabanim.commands.bench.dataset",
    "masks": "cpabanim.commands.bench.masks",
    "evaluate": "cpabanim.commands.bench.evaluate",
    "motion": "cpabanim.commands.bench.motion",
}
MOTION_VIDEOS, MOTION_FRAMES = 8, 24  # bench motion: test videos and frames per video (--quick: 2 and 6)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON here")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--preset", default=None, help="train/data: a preset of presets/ (e.g. vox-256)")
    parser.add_argument("--frame-size", type=int, default=None, help="train/data: frame side in pixels")
    parser.add_argument("--batch-size", type=int, default=None, help="train/data: batch size")
    parser.add_argument(
        "--workers", type=int, default=2, help="data, avd: compare 0 workers with this many (default 2)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="data, avd: measure 0 and N workers in turn this many times, report the medians (default 3)",
    )
    parser.add_argument(
        "--clip",
        default=None,
        metavar="VIDEO",
        help="demo: a real talking-face clip, repeated to length (default: a synthetic video, --crop none); "
        "preprocess: a talking-face clip, scaled up to the huge clip and preprocessed with face crops",
    )
    parser.add_argument("--videos", type=int, default=2000, help="dataset: videos of the source (default 2000)")
    parser.add_argument("--frames", type=int, default=32, help="dataset: frames per video (default 32)")
    parser.add_argument(
        "--old-videos", type=int, default=200, help="dataset: videos the frame-folder path is timed on (default 200)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="train: time each phase of a step (data wait, keypoints, CPAB fit, dense warp, ...)",
    )


def run(args: argparse.Namespace) -> int:
    if args.what == "cpab":
        return importlib.import_module(BENCHMARKS["cpab"]).main(
            json_path=args.json_path, device=args.device, quick=args.quick
        )
    overrides = []
    if args.frame_size:
        overrides.append(f"data.frame_size={args.frame_size}")
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.what == "demo":
        from cpabanim.commands.bench.demo import bench_demo

        return bench_demo(args.json_path, args.preset, overrides, args.quick, args.device, args.clip)
    if args.what == "preprocess":
        from cpabanim.commands.bench.preprocess import bench_preprocess

        return bench_preprocess(args.json_path, args.preset, overrides, args.quick, args.clip)
    if args.what == "masks":
        from cpabanim.commands.bench.masks import bench_masks

        frames = 1 if args.quick else args.frames if args.frames != 32 else 4
        size = args.frame_size or (64 if args.quick else 256)
        return bench_masks(args.json_path, size, args.batch_size or 4, frames, args.quick, args.device)
    if args.what == "evaluate":
        from cpabanim.commands.bench.evaluate import bench_evaluate

        videos = 2 if args.quick else args.videos if args.videos != 2000 else 4  # the embedded default's test set
        frames = 6 if args.quick else args.frames if args.frames != 32 else 24
        return bench_evaluate(args.json_path, videos, frames, args.frame_size or (32 if args.quick else 64), args.quick)
    if args.what == "motion":
        from cpabanim.commands.bench.motion import bench_motion

        videos, frames = (2, 6) if args.quick else (MOTION_VIDEOS, MOTION_FRAMES)
        return bench_motion(args.json_path, args.frame_size or 64, videos, frames, args.quick)
    if args.what == "dataset":
        from cpabanim.commands.bench.dataset import bench_dataset

        videos = 60 if args.quick else args.videos
        return bench_dataset(
            args.json_path,
            videos,
            8 if args.quick else args.frames,
            args.frame_size or (64 if args.quick else 256),  # --quick: a smoke run, the sizes matter not
            min(args.old_videos, videos),
        )
    if args.what == "avd":
        from cpabanim.commands.bench.avd import bench_avd

        size = args.frame_size or (64 if args.quick else 256)  # 256 px: the AVD stage of the paper's datasets
        avd = [f"data.frame_size={size}", *([f"train.avd_batch_size={args.batch_size}"] if args.batch_size else [])]
        return bench_avd(args.json_path, args.preset, avd, args.workers, args.quick, args.repeats, args.device)
    if args.what == "data":
        from cpabanim.commands.bench.data import bench_data

        return bench_data(args.json_path, args.preset, overrides, args.workers, args.quick, args.repeats)
    from cpabanim.commands.bench import train as train_bench

    return train_bench.main(
        json_path=args.json_path,
        device=args.device,
        quick=args.quick,
        preset=args.preset,
        overrides=overrides,
        profile=args.profile,
    )
