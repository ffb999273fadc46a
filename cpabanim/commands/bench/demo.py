"""``cpabanim bench demo``: the demo's peak memory on a 10 s and a 60 s driving video (25 fps), each run in its own
process; the demo streams the driving video, so the two peaks should be within ~10 % of each other.

The model is the params' (``--preset``, ``--frame-size``) with random weights: memory and speed do not depend on
training. The driving video is synthetic (a disc gliding over a gradient, ``--crop none`` with paste-back into a
larger photo) or, with ``--clip FILE``, a real clip repeated to length (``--crop face``: tracking, face crop and
paste-back measured too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cpabanim.commands.bench.common import bench_params, print_peaks, write_figures

FPS = 25.0
SECONDS = (10, 60)
QUICK_SECONDS = (2, 4)
# --quick: a model small enough for a smoke run (as the tests' tiny model)
QUICK_MODEL = [
    "model.num_cpab=1",
    "model.generator={block_expansion: 8, max_features: 32, num_down_blocks: 2}",
    "model.dense_motion={block_expansion: 8, max_features: 32, num_blocks: 2, scale_factor: 0.5}",
    "model.avd={id_bottle_size: 8, pose_bottle_size: 8}",
    "data.frame_size=32",
]
# Run in the child: the demo through the CLI, then its own peak RSS in KiB (ffmpeg's encoder, a process of its own,
# is not counted: its RUSAGE_CHILDREN figure includes the forked Python's pages, so it says nothing).
CHILD = (
    "import json, resource, sys\n"
    "from cpabanim.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print('BENCH_RSS ' + json.dumps({'code': code, 'self_kb': usage}))\n"
)


def synthetic_frames(count: int, size: int = 256, chunk: int = 64):
    """uint8 (n, size, size, 3) chunks of a disc gliding over a colour gradient (``count`` frames in all)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.stack([xs, ys, 1 - xs], axis=-1) * 200 + 30
    for start in range(0, count, chunk):
        frames = np.repeat(background[None], min(chunk, count - start), axis=0)
        for k, frame in enumerate(frames):
            t = (start + k) / FPS
            cx, cy = 0.5 + 0.25 * np.sin(t * 2.1), 0.5 + 0.2 * np.cos(t * 1.3)
            frame[(xs - cx) ** 2 + (ys - cy) ** 2 < 0.02] = (250, 220, 40)
        yield frames.astype(np.uint8)


def repeated_clip(clip: Path, count: int):
    """Chunks of the clip ``clip``, played forwards then backwards (no jump), repeated to ``count`` frames."""
    from cpabanim.commands.demo.stream import open_driving

    video = open_driving(clip, FPS)
    done, forwards = 0, True
    while done < count:
        chunks = list(video.bounds())
        for start, stop in chunks if forwards else chunks[::-1]:
            frames = video.read(start, stop)[:: 1 if forwards else -1][: count - done]
            done += len(frames)
            yield frames
            if done >= count:
                return
        forwards = not forwards


def write_driving(path: Path, count: int, clip: Path | None) -> Path:
    """The driving video of ``count`` frames at 25 fps, written chunk by chunk (H.264)."""
    from cpabanim.commands.demo.panels import VideoWriter

    with VideoWriter(path, FPS) as writer:
        for frames in repeated_clip(clip, count) if clip else synthetic_frames(count):
            writer.write(frames)
    return path


def write_photo(path: Path, clip: Path | None) -> Path:
    """The photo: the clip's first frame, or a 480x360 synthetic picture (a disc on a gradient)."""
    from PIL import Image

    if clip:
        frame = next(repeated_clip(clip, 1))[0]
    else:
        frame = next(synthetic_frames(1, size=480))[0][60:420]
    Image.fromarray(frame).save(path)
    return path


def run_demo(args: list[str]) -> dict[str, float]:
    """``cpabanim demo ARGS`` in a fresh Python process -> its peak RSS (MB) and its time (s)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "demo", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RSS ")]
    if done.returncode or not lines or json.loads(lines[-1][10:])["code"]:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"the demo failed: {' | '.join(tail)}")
    usage = json.loads(lines[-1][10:])
    return {"peak_rss_mb": usage["self_kb"] / 1024, "seconds": seconds}


def bench_demo(
    json_path: str | None,
    preset: str | None,
    overrides: list[str],
    quick: bool,
    device: str | None = None,
    clip: str | None = None,
) -> int:
    """Peak RSS of the demo on a short and a long driving video (:data:`SECONDS`), printed with their ratio."""
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.checkpoint import save_checkpoint
    from cpabanim.models.full import AnimationModel

    params = bench_params(preset, (QUICK_MODEL if quick else []) + overrides)
    seconds = QUICK_SECONDS if quick else SECONDS
    source = Path(clip) if clip else None
    results: dict[str, float] = {"frame_size": int(params["data"]["frame_size"]), "fps": FPS}
    with tempfile.TemporaryDirectory(prefix="cpabanim-bench-demo-") as tmp:
        root = Path(tmp)
        model = AnimationModel(ModelConfig.from_mapping(params["model"]))
        checkpoint = save_checkpoint(root / "model.pt", model, params=params)
        photo = write_photo(root / "photo.png", source)
        crop = ["--crop", "face"] if source else ["--crop", "none", "--paste-back"]
        for length in seconds:
            driving = write_driving(root / f"driving_{length}s.mp4", round(length * FPS), source)
            args = ["--source", str(photo), "--driving", str(driving), "--checkpoint", str(checkpoint)]
            args += ["--out", str(root / f"out_{length}s.mp4"), "--device", device or "cpu", *crop]
            for key, value in run_demo(args).items():
                results[f"{key}_{length}s"] = value
    short, long = seconds
    results["rss_ratio"] = results[f"peak_rss_mb_{long}s"] / results[f"peak_rss_mb_{short}s"]
    rows = [
        (f"{length} s", round(length * FPS), results[f"peak_rss_mb_{length}s"], results[f"seconds_{length}s"])
        for length in seconds
    ]
    title = f"cpabanim demo peak memory ({results['frame_size']} px model, {'clip ' + clip if clip else 'synthetic'}):"
    print_peaks(title, "driving", rows, f"ratio {long} s / {short} s: {results['rss_ratio']:.3f} (goal: within 10 %)")
    write_figures(json_path, results)
    return 0
