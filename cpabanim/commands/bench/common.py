"""What the benchmarks share: their parameters and a small set of training frames written for them."""

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
