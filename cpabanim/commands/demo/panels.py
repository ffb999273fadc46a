"""The demo's output video: the result alone, or labelled ``source | driving | result`` panels, written as H.264
or a gif.

Contract: frames are uint8 (T, H, W, 3) throughout; a video that cannot be written is one
:class:`~cpabanim.errors.CpabanimError` line naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpabanim.errors import CpabanimError

PANELS = ("all", "result")
PANEL_LABELS = ("source", "driving", "result")


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


def compose_panels(source: np.ndarray, driving: np.ndarray, result: np.ndarray, panels: str) -> np.ndarray:
    """The output video, uint8: ``result`` (T, S, S, 3), or labelled ``source | driving | result``
    (T, header + S, 3 S, 3) with a header of about a tenth of S (even, for H.264's 4:2:0 chroma)."""
    if panels == "result":
        return result
    size = result.shape[1]
    header = max(12, 2 * round(size / 20))
    videos = (np.broadcast_to(source, result.shape), driving, result)
    return np.concatenate([label_panel(v, name, header) for v, name in zip(videos, PANEL_LABELS)], axis=2)


def write_video(frames: np.ndarray, path: Path, fps: float) -> Path:
    """Write uint8 (T, H, W, 3) to ``path`` (H.264 for movies, odd sizes padded by one edge pixel; or a gif)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.suffix.lower() == ".gif":
            imageio.mimwrite(path, list(frames), duration=1000.0 / fps, loop=0)
        else:
            pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
            with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
                for frame in np.pad(frames, pad, mode="edge"):
                    writer.append_data(frame)
    except Exception as err:  # noqa: BLE001 - ffmpeg reports many kinds of failure
        raise CpabanimError(f"{path}: cannot write the video ({err})") from err
    return path
