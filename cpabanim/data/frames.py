"""Frame folders and viewing videos for the reconstruct / animate / evaluate stages.

Frames are stored losslessly as ``<folder>/<00000>.png`` (the evaluation reads them back bit-exactly);
MP4 and GIF files are written beside the folders, for viewing only, never for metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from cpabanim.data.video import read_image
from cpabanim.errors import DataError

log = logging.getLogger(__name__)


def frame_paths(folder: Path) -> list[Path]:
    """The ``<00000>.png`` files of a frame folder, in frame order."""
    return sorted(Path(folder).glob("*.png"))


def read_frames(path: str | Path) -> np.ndarray:
    """Read a frame folder (or a video file) into uint8 (T, H, W, 3).

    Uses the data package's reader when it exists (the shared convention), else reads PNG folders and
    video files here, so the evaluation works on its own.
    """
    path = Path(path)
    try:
        from cpabanim.data.video import read_video
    except ImportError:
        read_video = None
    if read_video is not None:
        return np.asarray(read_video(path))
    if path.is_dir():
        files = frame_paths(path)
        if not files:
            raise DataError(f"no PNG frames in {path}")
        from PIL import Image

        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    if not path.is_file():
        raise DataError(f"{path} is neither a frame folder nor a video file")
    import imageio.v3 as iio

    frames = np.asarray(iio.imread(path, index=None))
    if frames.ndim == 3:
        frames = frames[None]
    return np.ascontiguousarray(frames[..., :3])


def read_still(path: str | Path) -> np.ndarray:
    """One image file as a one-frame video: uint8 (1, H, W, 3) (:func:`cpabanim.data.video.read_image`)."""
    if not Path(path).is_file():
        raise DataError(f"image {path} not found")
    return read_image(Path(path))[None]


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, H, W) in [0, 1]."""
    frames = np.ascontiguousarray(frames)
    if not frames.flags.writeable:  # torch warns on read-only arrays (memory-mapped / cached readers)
        frames = frames.copy()
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [0, 1], any shape -> uint8 of the same shape and device: clamped to [0, 1], scaled by 255 and
    rounded to the nearest level (ties to even, ``torch.round``). The project's one float -> 8-bit conversion
    of model outputs: what the PNGs hold and the metrics read back."""
    return images.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8)


def to_frames(images: torch.Tensor) -> np.ndarray:
    """float (T, 3, H, W) in [0, 1] -> uint8 numpy (T, H, W, 3) through :func:`to_uint8`: the inverse of
    :func:`to_tensor` (frames as the writers and readers of this module hold them)."""
    return to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()


def write_frames(frames: np.ndarray, folder: Path) -> Path:
    """Model outputs as lossless PNGs, atomically, through the project's one frame writer (fast compression)."""
    from cpabanim.data.video import write_frames as write_video_frames

    return write_video_frames(frames, folder, compress_level=1)


def side_by_side(*videos: np.ndarray) -> np.ndarray:
    """Concatenate uint8 (T, H, W, 3) videos (or single frames (H, W, 3), repeated) along the width."""
    length = max(v.shape[0] for v in videos if v.ndim == 4)
    parts = [np.broadcast_to(v, (length, *v.shape)) if v.ndim == 3 else v for v in videos]
    return np.concatenate(parts, axis=2)


def write_image(frame: np.ndarray, path: Path) -> None:
    """Write one uint8 (H, W, 3) frame as a lossless PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, compress_level=1)


def write_viewing_videos(frames: np.ndarray, stem: Path, fps: float, mp4: bool, gif: bool) -> list[Path]:
    """Write ``<stem>.mp4`` (H.264 via imageio-ffmpeg) and/or ``<stem>.gif`` for viewing; returns the paths.

    A failing encoder is logged and skipped: viewing files never make a stage fail.
    """
    import imageio.v2 as imageio

    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if mp4:
        path = stem.parent / f"{stem.name}.mp4"
        try:
            # yuv420p needs even sizes: pad by edge replication instead of letting ffmpeg rescale.
            pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
            padded = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            imageio.mimwrite(path, list(padded), fps=fps, codec="libx264", quality=8, macro_block_size=1)
            written.append(path)
        except Exception as err:  # noqa: BLE001 - viewing output only
            log.warning("could not write %s: %s", path, err)
    if gif:
        path = stem.parent / f"{stem.name}.gif"
        try:
            imageio.mimwrite(path, list(frames), duration=1000.0 / fps, loop=0)
            written.append(path)
        except Exception as err:  # noqa: BLE001 - viewing output only
            log.warning("could not write %s: %s", path, err)
    return written


def test_videos(processed: str | Path, max_videos: int = 0) -> list[Path]:
    """The test split's videos (frame archives, or frame folders of a dataset laid out by hand) in name order (the
    first ``max_videos``): :func:`cpabanim.data.layout.split_videos`; a video's name is ``layout.video_name``."""
    from cpabanim.data.layout import split_videos

    videos = list(split_videos(processed, "test").values())
    if not videos:
        raise DataError(f"no test videos in {processed}: run `cpabanim preprocess`")
    return videos[:max_videos] if max_videos else videos
