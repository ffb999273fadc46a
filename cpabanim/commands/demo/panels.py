"""The demo's output video: the result alone, or labelled ``source | driving | result`` panels, written as H.264
or a gif.

Contract: frames are uint8 (T, H, W, 3) throughout; a video that cannot be written is one
:class:`~cpabanim.errors.CpabanimError` line naming it. Each video carries :data:`VIDEO_MARK` as its comment, so
a later run knows it may replace the file (:func:`written_by_cpabanim`), and appears whole or not at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cpabanim.errors import CpabanimError
from cpabanim.files import temp_path_for

PANELS = ("all", "result")
PANEL_LABELS = ("source", "driving", "result")
VIDEO_MARK = "written by cpabanim"  # the comment of every video the demo writes (movie metadata, gif comment)


def written_by_cpabanim(path: Path) -> bool:
    """Whether the video ``path`` holds :data:`VIDEO_MARK`: one the demo wrote, which a new run may replace."""
    if path.suffix.lower() == ".gif":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                comment = image.info.get("comment", b"")
        except (OSError, UnidentifiedImageError):
            return False
        return comment == VIDEO_MARK.encode()
    from cpabanim.data.movie import header_comment

    return header_comment(path) == VIDEO_MARK


def _label_font(height: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(8, int(height * 0.75)))
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def label_panel(frames: np.ndarray, label: str, header: int) -> np.ndarray:
    """uint8 (T, S, S, 3) -> (T, header + S, S, 3): the frames under a black strip with ``label`` centred."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (frames.shape[2], header), "black")
    draw = ImageDraw.Draw(strip)
    draw.text((frames.shape[2] / 2, header / 2), label, fill="white", font=_label_font(header), anchor="mm")
    top = np.broadcast_to(np.asarray(strip), (len(frames), header, frames.shape[2], 3))
    return np.concatenate([top, frames], axis=1)


def panel_header(height: int) -> int:
    """The label strip's height for panels ``height`` px tall: about a tenth, even (H.264's 4:2:0 chroma)."""
    return max(12, 2 * round(height / 20))


def to_height(frames: np.ndarray, height: int) -> np.ndarray:
    """uint8 (T, h, w, 3) -> (T, height, round(w * height / h), 3), the aspect kept (the driving panel beside a
    pasted-back photo); unchanged when already ``height`` px tall."""
    import cv2

    if frames.shape[1] == height:
        return frames
    width = max(1, round(frames.shape[2] * height / frames.shape[1]))
    interp = cv2.INTER_AREA if height < frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def compose_panels(source: np.ndarray, driving: np.ndarray, result: np.ndarray, panels: str) -> np.ndarray:
    """The output video, uint8: ``result`` (T, H, W, 3), or labelled ``source | driving | result``
    (T, header + H, 2 W + w', 3) under a :func:`panel_header` strip; ``source`` (H, W, 3) is the photo as the
    result shows it, ``driving`` (T, h, w, 3) is scaled to the result's height (w' = w H / h)."""
    if panels == "result":
        return result
    height = result.shape[1]
    header = panel_header(height)
    videos = (np.broadcast_to(source, result.shape), to_height(driving, height), result)
    return np.concatenate([label_panel(v, name, header) for v, name in zip(videos, PANEL_LABELS)], axis=2)


class VideoWriter:
    """Writes a video chunk by chunk (memory does not grow with its length): H.264 through ffmpeg's pipe for
    movies, odd sizes padded by one edge pixel; a gif is kept until the end (gifs are short). A failure is one
    :class:`~cpabanim.errors.CpabanimError` line naming the file.

        with VideoWriter(path, fps) as writer:
            writer.write(frames)  # uint8 (T, H, W, 3), as many times as needed
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        # written beside under a temporary name (same suffix: ffmpeg picks the container by it), then renamed:
        # a failure or an interruption leaves the file that was there, never half a video
        temp = temp_path_for(self.path)
        self.partial = temp.with_name(temp.name + self.path.suffix)
        self.gif: list[np.ndarray] | None = [] if self.path.suffix.lower() == ".gif" else None
        self.writer = None
        self.frames = 0

    def __enter__(self) -> VideoWriter:
        import imageio.v2 as imageio

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.gif is None:
            with self._failures():
                self.writer = imageio.get_writer(
                    self.partial,
                    fps=self.fps,
                    codec="libx264",
                    quality=8,
                    macro_block_size=1,
                    output_params=["-metadata", f"comment={VIDEO_MARK}"],
                )
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 (T, H, W, 3) frames."""
        self.frames += len(frames)
        if self.gif is not None:
            self.gif.extend(frames)
            return
        pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
        with self._failures():
            for frame in np.pad(frames, pad, mode="edge"):
                self.writer.append_data(frame)

    def __exit__(self, kind, error, trace) -> None:
        import imageio.v2 as imageio

        try:
            with self._failures():
                if self.writer is not None:
                    self.writer.close()
                elif self.gif is not None and error is None:
                    imageio.mimwrite(
                        self.partial, self.gif, duration=1000.0 / self.fps, loop=0, comment=VIDEO_MARK.encode()
                    )
                if error is None:
                    self.partial.replace(self.path)
        finally:
            self.partial.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except Exception as err:  # noqa: BLE001 - ffmpeg reports many kinds of failure
            raise CpabanimError(f"{self.path}: cannot write the video ({err})") from err


def write_video(frames: np.ndarray, path: Path, fps: float) -> Path:
    """Write uint8 (T, H, W, 3) to ``path`` (H.264 for movies, odd sizes padded by one edge pixel; or a gif)."""
    with VideoWriter(path, fps) as writer:
        writer.write(frames)
    return path
