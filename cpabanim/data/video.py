"""Reading and writing videos: frame folders and archives, .mp4/.mov/.avi (decord), .gif and wide PNG strips.

Every reader returns ``uint8 (T, H, W, 3)`` RGB and raises :class:`~cpabanim.errors.DataError` naming the
file when the input cannot be used (unreadable, empty, fewer than two frames, frames of different sizes, a
broken symlink or symlink loop), so that a bad video never surfaces as an opaque numpy/decord traceback.

One rule for grayscale: grayscale frames (PNG/JPG modes L, LA, 1, I;16, grayscale mp4/gif) are accepted
and converted to RGB by repeating the gray channel, whatever the container. One rule for size: source frames
smaller than :data:`MIN_SOURCE_SIDE` pixels on their short side are refused when preprocessing resizes them
(:func:`resize_frames`) rather than silently upscaled from too little detail (docs/reliability.md).

This module is longer than 350 lines because it is the one reader of every video format (frame folders and
archives, movies, gifs, strips) and the one frame writer: the rules above hold in one place for all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cpabanim import files
from cpabanim.data import archive
from cpabanim.data.movie import (
    Shrink,
    check_regular_file,
    movie_info,
    pick_indices,
    read_movie,
    shrink_one,
    within_budget,
)
from cpabanim.errors import CpabanimError, DataError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MOVIE_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
VIDEO_SUFFIXES = MOVIE_SUFFIXES + (".gif",) + FRAME_SUFFIXES
MIN_SOURCE_SIDE = 32  # px, short side of a source frame that preprocessing accepts (docs/reliability.md)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def is_video(path: Path) -> bool:
    """True for anything :func:`read_video` accepts: a folder of frames, a movie, a gif, a PNG/JPG strip."""
    path = Path(path)
    if path.is_dir():
        return any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())
    return path.is_file() and path.suffix.lower() in (*VIDEO_SUFFIXES, archive.SUFFIX)


def list_frame_files(folder: Path) -> list[Path]:
    """The frame images of a frame folder in temporal (lexicographic) order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def _to_rgb(frames: np.ndarray, path: Path) -> np.ndarray:
    """(T, H, W[, C]) any dtype -> uint8 (T, H, W, 3); RGBA loses alpha, grayscale (no channel axis, 1 channel,
    or gray + alpha) is repeated into R, G and B."""
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 2, 3, 4):
        raise DataError(f"{path}: frames of shape {frames.shape[1:]} are not RGB or grayscale images")
    if frames.shape[-1] <= 2:  # gray or gray + alpha: the same rule for every container
        frames = np.repeat(frames[..., :1], 3, axis=-1)
    frames = frames[..., :3]
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating) and frames.max(initial=0) <= 1.0:
            frames = frames * 255.0
        frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames)


def read_image(path: Path) -> np.ndarray:
    """One image as ``uint8 (H, W, 3)``: colour modes through PIL's RGB conversion, 16-bit grayscale scaled
    to 8 bits (PIL's own conversion would clip it), other grayscale modes repeated into three channels."""
    check_regular_file(Path(path))
    return _open_image(path, path)


def read_image_bytes(data: bytes, what: str) -> np.ndarray:
    """:func:`read_image` of an image file's bytes (a member of a zip copy); ``what`` names it in errors."""
    import io

    return _open_image(io.BytesIO(data), what)


def _open_image(source, what: str | Path) -> np.ndarray:
    """:func:`read_image`'s rules for a file or a file object ``source``, named ``what`` in errors."""
    from PIL import Image

    try:
        with Image.open(source) as img:
            if img.mode in _SIXTEEN_BIT_MODES:
                gray = np.asarray(img, dtype=np.float64) / 257.0  # 65535 -> 255
                return _to_rgb(np.clip(np.rint(gray), 0, 255).astype(np.uint8)[None], what)[0]
            return np.asarray(img.convert("RGB"))
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise DataError(f"{what}: cannot read image ({err})") from err


def read_video(
    path: str | Path,
    frame_shape: Sequence[int] | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    shrink: Shrink | None = None,
) -> np.ndarray:
    """Read a video as ``uint8 (T, H, W, 3)``.

    Args:
        path: a folder of frames, a frame archive (``.zip`` of PNG frames, :mod:`cpabanim.data.archive`), an
            .mp4/.mov/.avi/.mkv/.webm (decord), a .gif, or a PNG/JPG strip of frames concatenated horizontally
            (H x T*W x 3, the field's format for stored predictions).
        frame_shape: (H, W[, 3]) of one frame of a strip; by default frames of a strip are taken square (W = H).
        max_frames: keep at most this many frames (after ``stride``); long clips are not decoded in full.
        stride: keep every ``stride``-th frame.
        start: the first frame read (an index into the whole video, before ``stride``); a movie is not decoded
            before it.
        shrink: applied to the frames as they are decoded, a few at a time (``uint8 (n, H, W, 3) -> (n, H', W',
            3)``, each frame on its own, e.g. crop and resize): the clip is never held at its decoded size.
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():  # exists() follows links: a loop or a dangling link lands here
            raise DataError(f"{path}: broken symlink or symlink loop (-> {os.readlink(path)})")
        raise DataError(f"{path}: no such video")
    if path.is_dir():
        frame_files = list_frame_files(path)
        if not frame_files:
            raise DataError(f"{path}: frame folder holds no images ({', '.join(FRAME_SUFFIXES)})")
        picked = (len(frame_files), max_frames, stride, start)
        frames = _read_stills(path, "frame folder", lambda i: read_image(frame_files[i]), picked, shrink_one(shrink))
    elif path.suffix.lower() == archive.SUFFIX and path.is_file():
        with archive.FrameArchive(path) as stored:
            image_at = lambda i: _to_rgb(stored.image(i)[None], path)[0]  # noqa: E731
            frames = _read_stills(
                path, "frame archive", image_at, (len(stored), max_frames, stride, start), shrink_one(shrink)
            )
    elif not path.is_file():
        check_regular_file(path)
    elif path.suffix.lower() in MOVIE_SUFFIXES:
        frames = read_movie(path, max_frames, stride, start, shrink=shrink)
    elif path.suffix.lower() == ".gif":
        frames = _read_gif(path, max_frames, stride, start, shrink_one(shrink))
    elif path.suffix.lower() in FRAME_SUFFIXES:
        strip = read_image(path)
        height = int(frame_shape[0]) if frame_shape else strip.shape[0]
        width = int(frame_shape[1]) if frame_shape else strip.shape[0]
        if strip.shape[0] != height or strip.shape[1] % width:
            raise DataError(
                f"{path}: a strip of {strip.shape[1]}x{strip.shape[0]} pixels is not a row of {width}x{height} frames"
            )
        frames = strip.reshape(height, -1, width, 3).transpose(1, 0, 2, 3)
        frames = frames[start:][pick_indices(max(0, len(frames) - start), max_frames, stride)]
        frames = frames if shrink is None or not len(frames) else shrink(frames)
    else:
        raise DataError(f"{path}: unsupported video format (use a frame folder, {', '.join(VIDEO_SUFFIXES)})")
    frames = _to_rgb(np.asarray(frames), path)
    if frames.shape[0] < 2:
        raise DataError(f"{path}: {frames.shape[0]} frame(s); a video needs at least two")
    return frames


def frame_count(path: str | Path) -> int:
    """How many frames the video ``path`` has (any :func:`read_video` format); a movie's from its index, without
    decoding it; :class:`DataError` when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    if path.suffix.lower() in MOVIE_SUFFIXES and path.is_file():
        return movie_info(path)[1]
    if path.suffix.lower() == archive.SUFFIX and path.is_file():
        with archive.FrameArchive(path) as frames:
            return len(frames)
    return len(read_video(path))


def read_frame_at(path: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video as uint8 (H, W, 3), the last one for an index past the end: only that frame is
    decoded from a frame folder or archive (a figure's sample), the clip from anything else."""
    path = Path(path)
    if path.is_dir():
        frames = list_frame_files(path)
        if not frames:
            raise DataError(f"{path}: frame folder holds no images ({', '.join(FRAME_SUFFIXES)})")
        return read_image(frames[min(index, len(frames) - 1)])
    if path.suffix.lower() == archive.SUFFIX and path.is_file():
        with archive.FrameArchive(path) as frames:
            return _to_rgb(frames.image(min(index, len(frames) - 1))[None], path)[0]
    frames = read_video(path)
    return frames[min(index, len(frames) - 1)]


def _read_stills(
    path: Path,
    kind: str,
    image_at: Callable[[int], np.ndarray],
    picked: tuple,
    shrink: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The stills ``start, start + stride, ...`` (at most ``max_frames``; ``picked``: ``(count, max_frames, stride,
    start)``) of a frame folder or archive, ``image_at(i)`` -> uint8 (H, W, 3), each within the pixel budget and
    shrunk as it is read."""
    count, max_frames, stride, start = picked
    shapes, images = set(), []
    for i in pick_indices(max(0, count - start), max_frames, stride):
        image = within_budget(image_at(start + i))
        shapes.add(image.shape)  # the frames as stored must agree, before any shrink makes them
        images.append(shrink(image))
    if not images:
        raise DataError(f"{path}: the {kind} has no frames from frame {start} on")
    if len(shapes) > 1:
        raise DataError(f"{path}: frames of different sizes {sorted(shapes)}")
    return np.stack(images)


def read_movie_range(path: str | Path, start: int, stop: int, shrink: Shrink | None = None) -> np.ndarray:
    """Frames [start, stop) of a movie as ``uint8 (T, H, W, 3)`` (without decoding the rest where possible), each
    chunk of frames through ``shrink`` as it is decoded (as :func:`read_video`'s)."""
    path = Path(path)
    return _to_rgb(read_movie(path, None, 1, start, stop, shrink=shrink), path)


def _read_gif(
    path: Path, max_frames: int | None, stride: int, start: int, shrink: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The frames ``start, start + stride, ...`` of a gif (at most ``max_frames``), each shrunk as it is read."""
    from PIL import Image, ImageSequence

    picked, count, step = [], 0, max(1, stride)
    try:
        with Image.open(path) as img:
            for index, frame in enumerate(ImageSequence.Iterator(img)):
                count = index + 1
                wanted = index >= start and (index - start) % step == 0
                if wanted and not (max_frames and len(picked) >= max_frames):
                    picked.append(shrink(within_budget(np.asarray(frame.convert("RGB")))))
    except DataError:  # the shrink's (a frame below the minimum size)
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot read gif ({err})") from err
    if not count:
        raise DataError(f"{path}: the gif has no frames")
    if not picked:
        raise DataError(f"{path}: the gif has no frames from frame {start} on")
    return np.stack(picked)


def write_frames(frames: np.ndarray, folder: str | Path, compress_level: int = 6) -> Path:
    """Write ``uint8 (T, H, W, 3)`` as ``folder/00000.png, ...``; byte-identical for identical frames.

    The one frame writer of the project (datasets, reconstructions, animations, the demo; chunk by chunk:
    :class:`FrameFolderWriter`). ``compress_level``: PNG stays lossless at every level; 1 writes several times
    faster (model outputs), 6 is smaller (datasets).
    """
    with FrameFolderWriter(folder, compress_level) as writer:
        writer.write(frames)
    return Path(folder)


class FrameFolderWriter:
    """Writes frames as ``00000.png, ...`` chunk by chunk (:meth:`write`) into ``.<name>.tmp`` beside ``folder``,
    renamed into place when the ``with`` block ends without error, so an interrupted run never leaves a
    half-written video that a later run would take as done. The temporary folder is hidden from DVC
    (.dvcignore) and from the dataset and masks listings (they skip ``*.tmp``). A failed write (full or
    read-only disk) removes it and raises one :class:`CpabanimError` line naming the folder; a folder holding
    files this writer did not write is never replaced (:func:`check_frame_folder`)."""

    def __init__(self, folder: str | Path, compress_level: int = 6) -> None:
        self.folder = Path(folder)
        check_frame_folder(self.folder)
        self.tmp = self.folder.with_name(f".{self.folder.name}.tmp")
        self.compress_level = compress_level
        self.count = 0

    def __enter__(self) -> FrameFolderWriter:
        with self._failures():
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(parents=True)
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 (T, H, W, 3) frames: fixed compression level and no metadata, so the same pixels give the
        same bytes (DVC hashes these files)."""
        from PIL import Image

        with self._failures():
            for frame in frames:
                image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
                image.save(self.tmp / f"{self.count:05d}.png", compress_level=self.compress_level)
                self.count += 1

    def __exit__(self, kind, error, trace) -> None:
        if error is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        with self._failures():
            if self.folder.exists():
                shutil.rmtree(self.folder)
            os.replace(self.tmp, self.folder)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """An OSError (a full or read-only disk) -> one :class:`CpabanimError` line; the temporary folder removed."""
        try:
            yield
        except OSError as err:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise CpabanimError(
                f"cannot write {self.folder}: {err.strerror or err} (a full or read-only disk?)"
            ) from err


FRAME_FILE = re.compile(r"^\d{5}\.png$")  # what write_frames writes into a folder, and nothing else


def check_frame_folder(folder: Path) -> None:
    """:class:`CpabanimError` unless ``folder`` is absent or a folder of frames :func:`write_frames` could have
    written (``00000.png``...): replacing it must never delete a user's files (``--frames ~/Pictures``)."""
    files.check_output_folder(folder, "choose a new or empty folder for the frames", own=FRAME_FILE.match)


def frames_digest(frames: np.ndarray) -> str:
    """sha256 of the raw pixels (shape included): what the manifests record per video."""
    digest = hashlib.sha256(str(frames.shape).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    return digest.hexdigest()


def check_source_size(frames: np.ndarray, source: str | Path) -> None:
    """:class:`DataError` when ``uint8 (T, H, W, 3)`` frames are smaller than :data:`MIN_SOURCE_SIDE` on
    their short side: such a video has too little detail to be upscaled into a training clip."""
    height, width = frames.shape[1:3]
    if min(height, width) < MIN_SOURCE_SIDE:
        raise DataError(
            f"{source}: frames of {width}x{height} pixels are below the {MIN_SOURCE_SIDE} px minimum "
            "(short side) for a source video; use a larger video or crop"
        )


def resize_frames(frames: np.ndarray, size: int, source: str | Path = "video") -> np.ndarray:
    """``uint8 (T, H, W, 3)`` -> ``uint8 (T, size, size, 3)``; area interpolation (anti-aliased) when shrinking.

    Source frames below :data:`MIN_SOURCE_SIDE` px on their short side raise :class:`DataError` naming
    ``source`` (see :func:`check_source_size`).
    """
    import cv2

    check_source_size(frames, source)
    if frames.shape[1:3] == (size, size):
        return frames
    shrink = frames.shape[1] > size or frames.shape[2] > size
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])
