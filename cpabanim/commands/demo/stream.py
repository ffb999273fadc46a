"""The demo's streaming: the driving video read in chunks and the result frames written as they come, so the
demo's memory does not grow with the driving video's length (``cpabanim bench demo`` measures it).

Contract: :func:`open_driving` checks the video before any work (one :class:`~cpabanim.errors.DataError` line
naming it); :meth:`DrivingVideo.chunks` may be iterated several times (one pass per use: face boxes, landmarks,
animation), each time decoding the video again rather than holding it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpabanim.errors import DataError, first_line

# Driving frames decoded, cropped, animated and written at a time: 32 frames of 512 px are 25 MB.
CHUNK = 32


@dataclass(frozen=True)
class DrivingVideo:
    """A driving video read chunk by chunk: its path, frame count and frame rate."""

    path: Path
    count: int
    fps: float
    chunk: int = CHUNK

    def bounds(self) -> list[tuple[int, int]]:
        """[start, stop) of each chunk; a last chunk of one frame joins the one before (the frame folder and
        gif readers refuse single frames)."""
        starts = list(range(0, self.count, self.chunk))
        bounds = [(a, min(a + self.chunk, self.count)) for a in starts]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
            bounds[-2:] = [(bounds[-2][0], self.count)]
        return bounds

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as uint8 (n, H, W, 3)."""
        from cpabanim.data.video import MOVIE_SUFFIXES, read_movie_range, read_video

        if self.path.is_file() and self.path.suffix.lower() in MOVIE_SUFFIXES:
            return read_movie_range(self.path, start, stop)
        if stop - start < 2:  # the readers of folders and gifs want two frames: read one more, keep one
            first = max(0, min(start, self.count - 2))
            return read_video(self.path, max_frames=2, start=first)[start - first : stop - first]
        return read_video(self.path, max_frames=stop - start, start=start)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(start, uint8 (n, H, W, 3)) for each chunk, in order."""
        for start, stop in self.bounds():
            frames = self.read(start, stop)
            if len(frames):
                yield start, frames


def open_driving(path: Path, fps: float, chunk: int = CHUNK) -> DrivingVideo:
    """The driving video ``path`` checked (its frame count known, its first chunk decoded), or one
    :class:`DataError` line naming it."""
    from cpabanim.data.video import frame_count

    try:
        count = frame_count(path)
        if count < 2:
            raise DataError(f"{path}: {count} frame(s); a video needs at least two")
        video = DrivingVideo(path, count, fps, max(2, int(chunk)))
        video.read(*video.bounds()[0])
    except DataError as err:
        # decoders append their whole stderr (ffmpeg: its banner, ~20 lines); the first line says what failed
        multiline = len(str(err).strip().splitlines()) > 1
        raise DataError(first_line(err) + (" ...)" if multiline else "")) from err
    return video
