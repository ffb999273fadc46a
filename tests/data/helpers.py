"""Small videos the data tests make on the fly (no network, no fixtures on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def moving_square_video(num_frames: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (T, size, size, 3): a coloured square moving over a smooth gradient (easy to compress, real motion)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    base = np.stack([xs * 255 // size, ys * 255 // size, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    colour = rng.integers(120, 255, size=3)
    frames = []
    for t in range(num_frames):
        frame = base.copy()
        x0 = 2 + t * (size - 12) // max(1, num_frames - 1)
        frame[size // 3 : size // 3 + 8, x0 : x0 + 8] = colour
        frames.append(frame)
    return np.stack(frames)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        str(path), fps=fps, codec="libx264", quality=9, macro_block_size=1, ffmpeg_log_level="error"
    )
    for frame in frames:
        writer.append_data(frame)
    writer.close()
    return path


def write_gif(path: Path, frames: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    return path


def write_frame_folder(folder: Path, frames: np.ndarray) -> Path:
    from cpabanim.data.video import write_frames

    return write_frames(frames, folder)


def folder_source_params(folder: Path, test_fraction: float) -> tuple[dict, int]:
    """The folder source's data params over ``folder`` (32 px frames, no face crop, every frame) and the seed."""
    from cpabanim.config.layers import load_params

    from ..conftest import PROJECT_ROOT

    params = load_params(PROJECT_ROOT / "params.yaml")
    folder_params = {**params["data"]["folder"], "dir": str(folder), "faces": False, "stride": 1}
    data = {
        **params["data"],
        "source": "folder",
        "frame_size": 32,
        "folder": {**folder_params, "test_fraction": test_fraction},
    }
    return data, params["seed"]


def processed_archives(root: Path) -> dict[str, bytes]:
    """``{"<split>/<video>": the bytes of its frame archive}`` of a processed dataset, through its index (which
    shard holds a video does not matter: 1 and N shards must give the same bytes)."""
    from cpabanim.data.layout import split_videos

    return {
        f"{split}/{name}": path.read_bytes()
        for split in ("train", "test")
        for name, path in split_videos(root, split).items()
    }


def processed_video(root: Path, split: str, name: str) -> np.ndarray:
    """uint8 (T, H, W, 3) of one video of a processed dataset."""
    from cpabanim.data.layout import video_path
    from cpabanim.data.video import read_video

    return read_video(video_path(root, split, name))
