"""What the benchmarks share: their parameters, a small set of training frames written for them, the table of a
peak-memory benchmark and its JSON."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def bench_params(preset: str | None, overrides: list[str]) -> dict[str, Any]:
    """params.yaml (when present, else the built-in defaults) with the preset and overrides of a benchmark."""
    from cpabanim.config.layers import load_params

    path = Path("params.yaml")
    if not path.is_file():  # outside the project: the built-in defaults
        path = Path(tempfile.mkdtemp(prefix="cpabanim-bench-")) / "params.yaml"
        path.write_text("{}\n")
    return load_params(path, preset=preset, overrides=overrides)


def write_bench_frames(
    root: Path, frame_size: int, videos: int = 6, frames: int = 8, masks: Path | None = None
) -> Path:
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


def print_peaks(title: str, label: str, rows: list[tuple[str, float, float, float]], ratio: str) -> None:
    """The table of a peak-memory benchmark: ``rows`` of (case, frames, peak RSS MB, seconds), then ``ratio``."""
    print(title)
    print(f"  {label:<11} {'frames':>7} {'peak RSS MB':>12} {'seconds':>8}")
    for case, frames, peak, seconds in rows:
        print(f"  {case:<11} {frames:>7.0f} {peak:>12.1f} {seconds:>8.1f}")
    print(f"  {ratio}")


def write_figures(json_path: str | None, results: dict) -> None:
    """``--json FILE``: the benchmark's figures as JSON."""
    if json_path:
        import json

        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
