"""``cpabanim bench preprocess``: the peak memory of preprocessing one huge clip (8000x8000 frames), with
``data.folder.max_frames`` 12 and 48, each run in its own process.

A decoded 8000x8000 frame is 192 MB; holding a clip at that resolution would need ``max_frames`` times that. Frames
over the pixel budget are decoded downscaled (:mod:`cpabanim.data.movie`) and, without face crops, cropped and
resized a chunk at a time as they are decoded (``read_video``'s ``shrink``), so the peak should not depend on
``max_frames`` and stay under 1 GB (issue 24's goal). The clip is ffmpeg's ``testsrc2`` pattern, written by the
ffmpeg that imageio-ffmpeg ships (H.264); a second, small clip is there because a folder needs two videos (train
and test).

With ``--clip VIDEO`` (a talking face), the huge clip is that video scaled up into the 8000x8000 frame and face
crops are on: tracked in one decoding pass, cropped in a second (:func:`cpabanim.data.faces.face_crop_streamed`),
so the peak should not depend on ``max_frames`` either.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = 8000
QUICK_SIZE = 2400
FRAMES = 60
MAX_FRAMES = (12, 48)
# Run in the child: preprocess the folder, then its own peak RSS in KiB.
CHILD = (
    "import json, resource, sys\n"
    "from cpabanim.data.preprocess import preprocess\n"
    "data = json.loads(sys.argv[1])\n"
    "manifest = preprocess(data, 0, sys.argv[2], sys.argv[3])\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "frames = sum(v['frames'] for split in manifest['videos'].values() for v in split.values())\n"
    "print('BENCH_RSS ' + json.dumps({'self_kb': usage, 'frames': frames, 'skipped': len(manifest['skipped'])}))\n"
)


def write_clip(path: Path, size: int, frames: int, source: str | None = None) -> Path:
    """An H.264 clip of ``frames`` frames of ``size`` x ``size``: ffmpeg's moving test pattern, or the video
    ``source`` scaled to fit (its aspect kept, black bars)."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y"]
    if source is None:
        command += ["-f", "lavfi", "-i", f"testsrc2=size={size}x{size}:rate=24"]
    else:
        fit = f"scale={size}:{size}:force_original_aspect_ratio=decrease,pad={size}:{size}:(ow-iw)/2:(oh-ih)/2"
        command += ["-i", source, "-vf", fit]
    command += ["-frames:v", str(frames)]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=900)
    return path


def run_preprocess(data: dict, raw: Path, out: Path) -> dict[str, float]:
    """:func:`cpabanim.data.preprocess.preprocess` in a fresh Python process -> peak RSS (MB), frames, time."""
    start = time.perf_counter()
    args = [sys.executable, "-c", CHILD, json.dumps(data), str(raw), str(out)]
    done = subprocess.run(args, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RSS ")]
    if done.returncode or not lines:
        raise RuntimeError(f"preprocess failed: {' | '.join(done.stderr.strip().splitlines()[-3:])}")
    usage = json.loads(lines[-1][10:])
    return {
        "peak_rss_mb": usage["self_kb"] / 1024,
        "frames": usage["frames"],
        "skipped": usage["skipped"],
        "seconds": time.perf_counter() - start,
    }


def bench_preprocess(
    json_path: str | None, preset: str | None, overrides: list[str], quick: bool, clip: str | None = None
) -> int:
    """Peak RSS of preprocessing a folder holding one huge clip, at each of :data:`MAX_FRAMES`, printed; with
    ``clip``, the huge clip is that video scaled up, preprocessed with face crops."""
    from cpabanim.commands.bench.common import bench_params, print_peaks, write_figures

    params = bench_params(preset, overrides)
    size = QUICK_SIZE if quick else SIZE
    faces = clip is not None
    results: dict[str, float] = {"clip_px": size, "frame_size": int(params["data"]["frame_size"]), "faces": faces}
    with tempfile.TemporaryDirectory(prefix="cpabanim-bench-preprocess-") as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        write_clip(videos / "huge.mp4", size, FRAMES, clip)
        write_clip(videos / "small.mp4", 256 if faces else 128, 8, clip)
        for max_frames in MAX_FRAMES:
            folder = {**params["data"]["folder"], "dir": str(videos), "max_frames": max_frames, "faces": faces}
            data = {**params["data"], "source": "folder", "folder": folder}
            measured = run_preprocess(data, root / "raw", root / f"processed_{max_frames}")
            for key, value in measured.items():
                results[f"{key}_{max_frames}"] = value
    low, high = MAX_FRAMES
    results["rss_ratio"] = results[f"peak_rss_mb_{high}"] / results[f"peak_rss_mb_{low}"]
    rows = [(str(n), results[f"frames_{n}"], results[f"peak_rss_mb_{n}"], results[f"seconds_{n}"]) for n in MAX_FRAMES]
    what = f"{Path(clip).name} scaled up, face crops" if faces else "test pattern"
    title = f"preprocess peak memory, one {size}x{size} clip ({what}, {FRAMES} frames) -> {results['frame_size']} px:"
    ratio = f"ratio {high} / {low}: {results['rss_ratio']:.3f} (goal: independent of max_frames, under 1 GB)"
    print_peaks(title, "max_frames", rows, ratio)
    write_figures(json_path, results)
    return 0
