"""``cpabanim bench dataset``: the data stages at the field's scale, today's frame folders against sharded frame
archives, side by side on one VoxCeleb-shaped source (docs/data.md, "Storage"; docs/cluster.md, "5. Data").

The source is a copy in the field's vox-png layout (``train/``, ``test/`` of PNG frame folders, 5 % test):
``--videos`` videos of ``--frames`` frames at ``--frame-size`` px, whose frames are the PNGs of a few rendered
synthetic videos, reused (the costs measured depend on the sizes and the format, not on the pictures). Printed:

- preprocess throughput (frames/s): frame folders as before (every frame decoded and written again, one process,
  on the first ``--old-videos`` videos), and frame archives with 1 shard and with 2 shards at once;
- files and bytes of the processed data, each layout;
- a random frame read (ms), from a PNG file and from an archive;
- ``dvc add`` of the processed data (s), each layout, with DVC's default ``cache.type`` (a copy) and with hard links,
  and ``dvc commit`` of the same data again (what ``cpabanim record`` does after a run);
- Snakemake's planning time (``snakemake -n``) of the whole pipeline with 8 and with 64 shards per data stage;
- the work redone after a SIGKILL in the middle of a shard: frame folders start over, archives redo the video in
  flight.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cpabanim.commands.bench.common import bench_params, write_figures


def make_source(root: Path, videos: int, frames: int, size: int) -> Path:
    """A vox-png copy: ``root/{train,test}/<id>.<clip>/<00000>.png`` (the last 5 % of the videos in test)."""
    from cpabanim.data.archive import encode_png
    from cpabanim.data.synthetic import generate

    pool = [[encode_png(f) for f in video] for _, video in generate("train", 8, frames, size, seed=0)]
    for index in range(videos):
        split = "test" if index >= videos * 0.95 else "train"
        folder = root / split / f"id{index // 10:05d}.clip{index % 10}"
        folder.mkdir(parents=True)
        for number, data in enumerate(pool[index % len(pool)]):
            (folder / f"{number:05d}.png").write_bytes(data)
    return root


def old_preprocess(source: Path, out: Path, videos: int) -> tuple[int, float]:
    """Before archives: each frame of a copy decoded and written again into a frame folder (one process)."""
    from cpabanim.data.video import read_video, write_frames

    folders = sorted((source / "train").iterdir())[:videos]
    started, count = time.perf_counter(), 0
    for folder in folders:
        frames = read_video(folder)
        write_frames(frames, out / "train" / folder.name)
        count += len(frames)
    return count, time.perf_counter() - started


def _shard(args: tuple[dict, str, int]) -> int:
    from cpabanim.data.preprocess import preprocess_shard

    data, out, shard = args
    record = preprocess_shard(data, 0, out, out, shard)
    return sum(v["frames"] for v in record["videos"])


def new_preprocess(data: dict, out: Path, shards: int) -> tuple[int, float]:
    """Frame archives with ``shards`` shards, each its own process, all at once (then the gather)."""
    from cpabanim.data.preprocess import gather

    data = {**data, "shards": shards}
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(shards) as pool:
        count = sum(pool.map(_shard, [(data, str(out), k) for k in range(shards)]))
    gather(data, 0, out)
    return count, time.perf_counter() - started


def footprint(root: Path) -> tuple[int, int, int]:
    """(files, bytes, bytes the disk holds: whole blocks) under ``root``."""
    found = [p.stat() for p in root.rglob("*") if p.is_file()]
    return len(found), sum(s.st_size for s in found), sum(s.st_blocks * 512 for s in found)


def random_reads(old: Path, new: Path, reads: int) -> tuple[float, float]:
    """ms per random frame read: a PNG file (the loader's OpenCV read), a frame of an archive (open, read, decode)."""
    from cpabanim.data.archive import FrameArchive
    from cpabanim.data.dataset import read_frame
    from cpabanim.data.layout import split_videos

    rng = random.Random(0)
    files = sorted(old.glob("train/*/*.png"))
    archives = list(split_videos(new, "train").values())
    picks_old = [rng.choice(files) for _ in range(reads)]
    picks_new = [(rng.choice(archives), rng.randrange(8)) for _ in range(reads)]
    started = time.perf_counter()
    for path in picks_old:
        read_frame(path)
    old_ms = (time.perf_counter() - started) * 1000 / reads
    started = time.perf_counter()
    for path, index in picks_new:
        with FrameArchive(path) as frames:
            frames.image(index)
    return old_ms, (time.perf_counter() - started) * 1000 / reads


def dvc_seconds(folder: Path, cache_type: str) -> tuple[float, float]:
    """``dvc add`` of ``folder`` in a fresh DVC repository beside it, with ``cache.type`` (``copy``: DVC's default;
    ``hardlink``: no second copy), and then ``dvc commit`` of the same data unchanged (what `cpabanim record` does
    after a run): seconds each. The repository is removed after."""
    repo = folder.parent
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def call(*args: str) -> float:
        started = time.perf_counter()
        subprocess.run([dvc, *args], cwd=repo, check=True, env=env, capture_output=True)
        return time.perf_counter() - started

    call("init", "--no-scm", "-q")
    call("config", "cache.type", cache_type)
    try:
        return call("add", "-q", folder.name), call("commit", "-f", "-q", f"{folder.name}.dvc")
    finally:
        call("unprotect", folder.name)  # hard links become files of their own again
        shutil.rmtree(repo / ".dvc", ignore_errors=True)
        (repo / f"{folder.name}.dvc").unlink(missing_ok=True)


def planning_seconds(shards: int) -> float | None:
    """``snakemake -n`` of the whole pipeline with ``shards`` shards per data stage, in the project (None outside)."""
    if not Path("workflow/Snakefile").is_file():
        return None
    snakemake = str(Path(sys.executable).parent / "snakemake")
    config = f"set=[data.shards={shards},masks.shards={shards},paths.processed=.bench/p,paths.masks=.bench/m]"
    started = time.perf_counter()
    subprocess.run([snakemake, "-n", "--quiet", "all", "--config", config], check=True, capture_output=True)
    return time.perf_counter() - started


def redone_after_kill(data: dict, out: Path) -> tuple[int, int, int]:
    """SIGKILL one shard job half-way and run it again: (videos in the shard, finished before the kill, written
    again by the second run)."""
    script = (
        "import json, sys\nfrom cpabanim.data.preprocess import preprocess_shard\n"
        "preprocess_shard(json.loads(sys.argv[1]), 0, sys.argv[2], sys.argv[2], 0)\n"
    )
    command = [sys.executable, "-c", script, json.dumps({**data, "shards": 1}), str(out)]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = sum(1 for _ in Path(data["source_dir"]).glob("*/*"))
    while job.poll() is None and len(list(out.glob("shards/000/*/*.zip"))) < total // 2:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = {p: p.stat().st_mtime_ns for p in out.glob("shards/000/*/*.zip")}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = {p: p.stat().st_mtime_ns for p in out.glob("shards/000/*/*.zip")}
    return len(after), len(before), sum(1 for p, t in before.items() if after.get(p) != t)


def bench_dataset(
    json_path: str | None, videos: int, frames: int, size: int, old_videos: int, keep: bool = False
) -> int:
    work = Path(tempfile.mkdtemp(prefix="cpabanim-bench-dataset-"))
    try:
        results = measure(work, videos, frames, size, old_videos)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    write_figures(json_path, results)
    return 0


def measure(work: Path, videos: int, frames: int, size: int, old_videos: int) -> dict[str, Any]:
    started = time.perf_counter()
    source = make_source(work / "source" / "vox-png", videos, frames, size)
    made = time.perf_counter() - started
    params = bench_params(None, [f"data.frame_size={size}", "data.source=vox", f"data.source_dir={source}"])
    data = dict(params["data"])
    old_frames, old_seconds = old_preprocess(source, work / "old" / "processed", old_videos)
    one_frames, one_seconds = new_preprocess(data, work / "one" / "processed", 1)
    two_frames, two_seconds = new_preprocess(data, work / "two" / "processed", 2)
    old_files, old_bytes, old_disk = footprint(source)  # the layout preprocess wrote before: one PNG per frame
    new_files, new_bytes, new_disk = footprint(work / "two" / "processed")
    old_read, new_read = random_reads(source, work / "two" / "processed", 2000)
    dvc = {
        cache: {"frame folders": dvc_seconds(source, cache), "archives": dvc_seconds(work / "two" / "processed", cache)}
        for cache in ("copy", "hardlink")
    }
    shard_videos, finished, rewritten = redone_after_kill(data, work / "killed" / "processed")
    return {
        "source": {"videos": videos, "frames": frames, "frame_size": size, "seconds_to_make": made},
        "preprocess_frames_per_s": {
            "frame folders (1 process)": old_frames / old_seconds,
            "archives, 1 shard": one_frames / one_seconds,
            "archives, 2 shards": two_frames / two_seconds,
        },
        "files": {"frame folders": old_files, "archives": new_files},
        "bytes": {"frame folders": old_bytes, "archives": new_bytes},
        "disk_bytes": {"frame folders": old_disk, "archives": new_disk},
        "random_read_ms": {"frame folders": old_read, "archives": new_read},
        "dvc_add_seconds": {layout: dvc["copy"][layout][0] for layout in ("frame folders", "archives")},
        "dvc_add_hardlink_seconds": {layout: dvc["hardlink"][layout][0] for layout in ("frame folders", "archives")},
        "dvc_recommit_seconds": {layout: dvc["copy"][layout][1] for layout in ("frame folders", "archives")},
        "snakemake_plan_seconds": {"8 shards": planning_seconds(8), "64 shards": planning_seconds(64)},
        "kill": {"videos_in_shard": shard_videos, "finished_before_kill": finished, "written_again": rewritten},
    }


def print_table(r: dict[str, Any]) -> None:
    s = r["source"]
    print(
        f"VoxCeleb-shaped source: {s['videos']} videos x {s['frames']} frames at {s['frame_size']} px "
        f"(made in {s['seconds_to_make']:.0f} s)"
    )
    rates = r["preprocess_frames_per_s"]
    base = rates["frame folders (1 process)"]
    print("preprocess, frames/s (measured):")
    for name, rate in rates.items():
        print(f"  {name:<28} {rate:8.1f}   x{rate / base:.2f} of frame folders")
    print(f"  2 shards / 1 shard: x{rates['archives, 2 shards'] / rates['archives, 1 shard']:.2f}")
    for key, label, unit in (
        ("files", "files", ""),
        ("bytes", "bytes", " MB"),
        ("disk_bytes", "on disk", " MB"),
        ("random_read_ms", "random frame read", " ms"),
        ("dvc_add_seconds", "dvc add (copy)", " s"),
        ("dvc_add_hardlink_seconds", "dvc add (hardlink)", " s"),
        ("dvc_recommit_seconds", "dvc commit again", " s"),
    ):
        old, new = r[key]["frame folders"], r[key]["archives"]
        scale = 1e6 if "bytes" in key else 1
        print(
            f"{label:<19} frame folders {old / scale:12.2f}{unit}   archives {new / scale:12.2f}{unit}   "
            f"ratio {new / old:.3f}"
        )
    plan = r["snakemake_plan_seconds"]
    if plan["8 shards"] is not None:
        print(
            f"snakemake -n, whole pipeline: {plan['8 shards']:.1f} s with 8 shards, {plan['64 shards']:.1f} s with 64"
        )
    k = r["kill"]
    print(
        f"SIGKILL half-way through a shard of {k['videos_in_shard']} videos: {k['finished_before_kill']} were "
        f"finished, {k['written_again']} written again by the next run (frame folders: all "
        f"{k['videos_in_shard']}, the manifest was written at the end)"
    )
