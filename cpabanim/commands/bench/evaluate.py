"""``cpabanim bench evaluate``: the evaluation of a study, 2 experiments x 2 seeds, with the extraction cache of
each run (the path before the cache was shared: every run extracts the test videos again) against one cache for
the whole study (docs/evaluation.md, "Caching and cost"), and sharded 1 vs 4 ways: how many test frames each
extracts, its seconds, and whether the metrics are the same, byte for byte.

The data are the embedded default's synthetic test videos (written by the real preprocess); the extractor is the
one the embedded default uses, ``synthetic_moments`` (``evaluate.keypoints: auto``): dlib's weights cannot be
downloaded here. Each run's "model" is a stand-in (its predictions are the driving frames darkened by its own
amount: the runs' frames differ, the test videos are the same), so the figures are the evaluation's alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.commands.bench.common import bench_params, write_figures

STUDY = [("default", 0), ("default", 1), ("tps", 0), ("tps", 1)]
METRICS_FILES = ("metrics.json", "metrics_unavailable.json", "metrics_per_video.csv")


def write_study_run(processed: Path, run: Path, amount: float, num_pairs: int, seed: int) -> None:
    """A run's ``reconstruction/`` and ``animation/`` (relative mode), as the stages lay them out, its predictions
    each driving frame times ``1 - amount``."""
    from cpabanim.animation.pairs import choose_pairs
    from cpabanim.data.frames import read_frames, test_videos, write_frames, write_image
    from cpabanim.data.layout import video_name

    videos = test_videos(processed)
    darker = {video_name(v): (read_frames(v) * (1 - amount)).round().astype(np.uint8) for v in videos}
    index = {"animator": "bench", "videos": {}}
    for name, frames in darker.items():
        write_frames(frames, run / "reconstruction" / name)
        index["videos"][name] = {"frames": len(frames)}
    (run / "reconstruction" / "index.json").write_text(json.dumps(index))
    pairs = choose_pairs(videos, num_pairs, seed)
    for pair in pairs:
        source = read_frames(next(v for v in videos if video_name(v) == pair["source"]))[pair["source_frame"]]
        write_image(source, run / "animation" / pair["name"] / "source.png")
        write_frames(darker[pair["driving"]], run / "animation" / pair["name"] / "relative")
        pair["frames"] = len(darker[pair["driving"]])
    (run / "animation" / "pairs.json").write_text(json.dumps({"pairs": pairs, "modes": ["relative"]}))


def evaluate_study(root: Path, params: dict[str, Any], shards: int, cache: str) -> dict[str, Any]:
    """Evaluate every run of the study under ``root`` (``cache``: ``per run`` or ``shared``); its figures."""
    from cpabanim.evaluation.gather import evaluate_all, extraction_counts
    from cpabanim.evaluation.records import CACHE_FOLDER, EvaluateJob

    settings = {k: v for k, v in params["evaluate"].items() if k not in ("cache", "cache_dir")} | {"shards": shards}
    outputs = root / "outputs"
    records, started, cpu = [], time.perf_counter(), time.process_time()
    for experiment, seed in STUDY:
        run = outputs / experiment / f"seed{seed}"
        shutil.rmtree(run / "shards", ignore_errors=True)
        job = EvaluateJob(
            processed=root / "processed",
            reconstruction=run / "reconstruction",
            animation=run / "animation",
            shards_root=run / "shards" / "evaluate",
            outputs={"metrics": run / "metrics.json", "unavailable": run / "u.json", "per_video": run / "v.csv"},
            settings=settings,
            cache_dir=(run if cache == "per run" else outputs) / CACHE_FOLDER,
            device="cpu",
            code="bench",
            command="evaluate",
        )
        evaluate_all(job)
        records += [json.loads((job.folder(k) / "done.json").read_text()) for k in range(shards)]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    counts = extraction_counts(records)
    metrics = {f"{e}/seed{s}": (outputs / e / f"seed{s}" / "metrics.json").read_bytes() for e, s in STUDY}
    for folder in outputs.rglob(CACHE_FOLDER):
        shutil.rmtree(folder)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "reference": counts["reference"],
        "generated": counts["generated"],
        "m": metrics,
    }


def bench_evaluate(json_path: str | None, videos: int, frames: int, size: int, quick: bool) -> int:
    from cpabanim.data.preprocess import preprocess

    synthetic = [
        f"data.synthetic.num_test={videos}",
        f"data.synthetic.num_frames={frames}",
        "data.synthetic.num_train=2",
    ]
    params = bench_params(None, [f"data.frame_size={size}", "train.batch_size=2", *synthetic])
    root = Path(tempfile.mkdtemp(prefix="cpabanim-bench-evaluate-"))
    try:
        preprocess(params["data"], params["data"]["seed"], root / "raw", root / "processed")
        for number, (experiment, seed) in enumerate(STUDY):
            run = root / "outputs" / experiment / f"seed{seed}"
            write_study_run(root / "processed", run, 0.02 * (number + 1), params["animate"]["num_pairs"], 0)
        evaluate_study(root, params, 1, "shared")  # warm-up: imports, the extractor's backgrounds
        cases = {
            "per run, 1 shard": evaluate_study(root, params, 1, "per run"),
            "shared, 1 shard": evaluate_study(root, params, 1, "shared"),
            "shared, 4 shards": evaluate_study(root, params, 4, "shared"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    same = all(case["m"] == cases["per run, 1 shard"]["m"] for case in cases.values())
    test_frames = videos * frames
    print(
        f"evaluate, a study of 2 experiments x 2 seeds: {videos} test videos of {frames} frames at {size} px "
        f"({test_frames} test frames); extractor synthetic_moments (keypoints: auto), metrics "
        f"{', '.join(params['evaluate']['metrics'])}; each case from an empty cache, after a warm-up run"
    )
    print(
        f"  {'extraction cache':<18} {'test frames extracted':>22} {'calls':>6} {'generated frames':>17} "
        f"{'CPU s':>7} {'wall s':>7}"
    )
    for label, case in cases.items():
        reference, generated = case["reference"], case["generated"]
        print(
            f"  {label:<18} {reference['frames']:>22} {reference['misses']:>6} {generated['frames']:>17} "
            f"{case['cpu_seconds']:>7.2f} {case['seconds']:>7.2f}"
        )
    print(f"  the same metrics.json in every case, byte for byte: {'yes' if same else 'NO'}")
    results = {
        "videos": videos,
        "frames": frames,
        "frame_size": size,
        "extractor": "synthetic_moments",
        "same_metrics": same,
        **{
            label.replace(", ", "_").replace(" ", "_"): {k: v for k, v in case.items() if k != "m"}
            for label, case in cases.items()
        },
    }
    if quick:
        results["quick"] = True
    write_figures(json_path, results)
    return 0
