"""Decoding movie files (.mp4, .mov, .avi, .mkv, .webm) for :mod:`cpabanim.data.video`, within a pixel budget.

A decoded frame larger than :data:`MAX_FRAME_PIXELS` is decoded downscaled (decord asks ffmpeg's scaler for the
smaller size), so an 8000x8000 clip is never held at its own resolution: one such frame is 192 MB, 48 of them 9 GB
(docs/reliability.md). Preprocessing never needs more, as it crops and resizes every frame to ``data.frame_size``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cpabanim.errors import DataError, first_line

log = logging.getLogger(__name__)
MAX_FRAME_PIXELS = 1920 * 1088  # a larger frame is decoded downscaled to this many pixels (decode_size)
DECODE_CHUNK = 8  # frames decoded at a time before a shrink (read_video's): memory holds one chunk at full size
Shrink = Callable[[np.ndarray], np.ndarray]  # uint8 (n, H, W, 3) -> (n, H', W', 3), each frame on its own


def listed_frames(meta: dict) -> int | None:
    """The frame count a movie's index lists (imageio's ffmpeg metadata): ``nframes``, else duration x fps."""
    count = meta.get("nframes")
    if isinstance(count, (int, float)) and np.isfinite(count):
        return int(count)
    duration, fps = meta.get("duration"), meta.get("fps")
    if isinstance(duration, (int, float)) and isinstance(fps, (int, float)) and duration > 0 and fps > 0:
        return round(duration * fps)
    return None


def check_regular_file(path: Path) -> None:
    """:class:`DataError` for a path that is not a regular file: opening a FIFO blocks until someone writes to it,
    a device may never end."""
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a pipe, socket or device?): skipped")


def pick_indices(count: int, max_frames: int | None, stride: int) -> list[int]:
    """Indices ``0, stride, 2 stride ... < count``, at most ``max_frames`` of them (all for None or 0)."""
    indices = list(range(0, count, max(1, stride)))
    return indices[:max_frames] if max_frames else indices


def decode_size(height: int, width: int, max_pixels: int | None = None) -> tuple[int, int]:
    """``(height, width)`` a frame of ``height x width`` is decoded at: itself within :data:`MAX_FRAME_PIXELS`
    (or ``max_pixels``), else scaled down to it, aspect kept. Preprocessing never needs more: faces are cropped
    and every frame resized to ``data.frame_size`` afterwards, and one 8000x8000 frame alone is 192 MB."""
    budget = MAX_FRAME_PIXELS if max_pixels is None else max_pixels
    if height * width <= budget:
        return height, width
    scale = (budget / (height * width)) ** 0.5
    return max(1, int(height * scale)), max(1, int(width * scale))


def within_budget(frame: np.ndarray) -> np.ndarray:
    """One ``(H, W, C)`` frame, downscaled (area interpolation) to the pixel budget of :func:`decode_size`."""
    height, width = frame.shape[:2]
    target = decode_size(height, width)
    if target == (height, width):
        return frame
    import cv2

    return cv2.resize(frame, (target[1], target[0]), interpolation=cv2.INTER_AREA)


def header_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of a movie's video stream from its header (``ffmpeg -i``, which decodes nothing), or
    None where ffmpeg does not say. Asking decord means decoding a frame at full size: 580 MB of peak memory for
    one 8000x8000 frame, before the pixel budget could apply (``cpabanim bench preprocess``)."""
    import re

    found = re.search(r"Stream #[^\n]*?Video: [^\n]*?(\d{2,5})x(\d{2,5})", header_text(path))
    return (int(found.group(2)), int(found.group(1))) if found else None


def header_frames(path: Path) -> int | None:
    """The frame count a movie's header implies (duration x frame rate, ``ffmpeg -i``), or None where it says
    neither: what a file cut short no longer holds, whatever a decoder then counts."""
    import re

    text = header_text(path)
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    fps = re.search(r"Stream #[^\n]*?Video: [^\n]*?(\d+(?:\.\d+)?) fps", text)
    if not duration or not fps:
        return None
    hours, minutes, seconds = (float(part) for part in duration.groups())
    return round((hours * 3600 + minutes * 60 + seconds) * float(fps.group(1)))


def header_comment(path: Path) -> str | None:
    """The ``comment`` metadata a movie's header holds (``ffmpeg -metadata comment=...`` wrote it), or None."""
    import re

    found = re.search(r"^\s*comment\s*:\s*(.*?)\s*$", header_text(path), re.M)
    return found.group(1) if found else None


def header_text(path: Path) -> str:
    """What ``ffmpeg -i`` says of a movie's header ("" where it cannot start). Asked once per file version: the
    segments of one clip (``data.folder.segments``) each read it."""
    stat = path.stat()
    return _probed_header(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _probed_header(path: str, size: int, mtime_ns: int) -> str:
    """:func:`header_text` of ``path`` at that size and modification time (the cache key)."""
    import subprocess

    import imageio_ffmpeg

    try:
        probe = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return probe.stderr


def shrink_one(shrink: Shrink | None) -> Callable[[np.ndarray], np.ndarray]:
    """``shrink`` for one ``(H, W, 3)`` frame (the identity for None)."""
    return (lambda frame: frame) if shrink is None else (lambda frame: shrink(frame[None])[0])


def decode_in_chunks(
    decode: Callable[[list[int]], np.ndarray], indices: list[int], shrink: Shrink | None
) -> np.ndarray:
    """``decode(indices)``, or with ``shrink`` each :data:`DECODE_CHUNK` of them decoded and shrunk in turn: the
    clip is held at its decoded size one chunk at a time, whatever ``max_frames`` asks."""
    if shrink is None:
        return decode(indices)
    return np.concatenate([shrink(decode(indices[i : i + DECODE_CHUNK])) for i in range(0, len(indices), DECODE_CHUNK)])


def read_movie(
    path: Path,
    max_frames: int | None,
    stride: int,
    start: int = 0,
    stop: int | None = None,
    shrink: Shrink | None = None,
) -> np.ndarray:
    """Frames ``start, start + stride, ... < stop`` of a movie, each within the pixel budget (:func:`decode_size`)
    and then through ``shrink``: decord, or imageio's ffmpeg where decord fails (decord refuses some frame widths,
    e.g. 48 px, with a buffer-size check, and some damaged files)."""
    check_regular_file(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        count = len(reader) if stop is None else min(stop, len(reader))
        if count <= start:
            raise DataError(f"{path}: the video has no frames in [{start}, {stop})")
        height, width = header_size(path) or reader[0].shape[:2]
        target = decode_size(height, width)
        if target != (height, width):  # decoded small by ffmpeg's scaler: the full-size clip is never held
            log.info("%s: %dx%d frames decoded at %dx%d (pixel budget)", path, width, height, target[1], target[0])
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, width=target[1], height=target[0])
        indices = [start + i for i in pick_indices(count - start, max_frames, stride)]
        frames = decode_in_chunks(lambda chunk: reader.get_batch(chunk).asnumpy(), indices, shrink)
        warn_if_cut_short(path, len(frames), header_frames(path), max_frames, stride, start, stop)
        return frames
    except DataError:
        raise
    except Exception as decord_error:  # DECORDError / RuntimeError: try the bundled ffmpeg before giving up
        return _read_movie_ffmpeg(path, max_frames, stride, start, stop, decord_error, shrink_one(shrink))


def _read_movie_ffmpeg(
    path: Path,
    max_frames: int | None,
    stride: int,
    start: int,
    stop: int | None,
    decord_error: Exception,
    shrink: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """:func:`_read_movie` through imageio's ffmpeg, frame by frame (each one downscaled to the pixel budget); a
    file that ends before its index says (a cut download) is kept with a warning naming how much was read."""
    import imageio.v2 as imageio

    frames: list[np.ndarray] = []
    listed = None
    try:
        with imageio.get_reader(str(path), "ffmpeg") as reader:
            listed = listed_frames(reader.get_meta_data())
            for index, frame in enumerate(reader):
                if stop is not None and index >= stop:
                    break
                if index >= start and (index - start) % max(1, stride) == 0:
                    frames.append(shrink(within_budget(np.asarray(frame))))
                    if max_frames and len(frames) >= max_frames:
                        break
    except Exception as err:
        if not frames:
            raise DataError(
                f"{path}: cannot decode video ({first_line(decord_error)}; ffmpeg: {first_line(err)})"
            ) from err
    if not frames:
        raise DataError(f"{path}: the video has no frames")
    warn_if_cut_short(path, len(frames), listed, max_frames, stride, start, stop)
    return np.stack(frames)


def warn_if_cut_short(
    path: Path, read: int, listed: int | None, max_frames: int | None, stride: int, start: int, stop: int | None
) -> None:
    """A warning naming how much was read when a movie gave fewer of the frames asked for than its index lists
    (a download cut short, a damaged file: kept, with what could be read). One frame short is not: a container's
    duration may round up a frame."""
    if listed is None:
        return
    last = int(listed) if stop is None else min(stop, int(listed))
    wanted = len(pick_indices(max(0, last - start), max_frames, stride))
    if read < wanted - 1:
        log.warning(
            "%s: read %d of the %d frames its index lists: the file is damaged or cut short", path, read, wanted
        )


def movie_info(path: str | Path) -> tuple[float, int, int, int]:
    """``(fps, frame_count, height, width)`` of a movie file."""
    path = Path(path)
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        height, width = reader[0].shape[:2]
        return float(reader.get_avg_fps()), len(reader), height, width
    except Exception:
        try:
            import imageio.v2 as imageio

            with imageio.get_reader(str(path), "ffmpeg") as reader:
                meta = reader.get_meta_data()
                width, height = meta["size"]
                return float(meta["fps"]), int(reader.count_frames()), int(height), int(width)
        except Exception as err:
            raise DataError(f"{path}: cannot decode video ({first_line(err)})") from err
