"""The demo's work: one photo animated by one driving video (:func:`animate_photo`), its inputs brought to the
checkpoint's resolution (face crop or centre square), the driving frame that best matches the photo, and the
animated crop pasted back into the whole photo.

Contract: every user error (a missing or unreadable file, no face found, an unknown choice) is one
:class:`~cpabanim.errors.CpabanimError` line naming the file or the flag. The driving video is streamed
(:mod:`cpabanim.commands.demo.stream`: read, cropped, animated and written a chunk at a time, so memory does not
grow with its length); the animation itself is :func:`cpabanim.animation.animate.animate_frames`, the crops
:mod:`cpabanim.commands.demo.crop`, the paste-back :mod:`cpabanim.commands.demo.paste`, the panels and the
video :mod:`cpabanim.commands.demo.panels`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim import files
from cpabanim.animation.animator import load_model
from cpabanim.commands.demo.crop import Prepare, driving_crop_boxes, face_prepare, photo_crop_box, square_prepare
from cpabanim.commands.demo.loop import animate_stream, best_frame, more_moving
from cpabanim.commands.demo.panels import PANELS, VideoWriter, compose_panels, written_by_cpabanim
from cpabanim.commands.demo.paste import paste_back as paste_into
from cpabanim.commands.demo.stream import CHUNK, DrivingVideo, open_driving
from cpabanim.config.paths import TRAIN_HINT
from cpabanim.data.video import MIN_SOURCE_SIDE, FrameFolderWriter
from cpabanim.errors import CpabanimError, DataError, first_line
from cpabanim.models.full import ANIMATION_MODES
from cpabanim.progress import progress_bar

log = logging.getLogger(__name__)

CROPS = ("face", "none")
# Frame folders and GIFs carry no reliable frame rate; 25 fps is the talking-head datasets' rate.
FALLBACK_FPS = 25.0
# Checkpoints that do not record their training resolution (data.frame_size) were trained as FOMM/TPSMM's.
FALLBACK_FRAME_SIZE = 256
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi")


@dataclass
class Inputs:
    """The photo and the driving video at the model's resolution (the whole video: for short clips and tests;
    the demo itself streams :class:`DemoInputs`)."""

    source: np.ndarray  # uint8 (S, S, 3)
    driving: np.ndarray  # uint8 (T, S, S, 3)
    fps: float


@dataclass
class DemoInputs:
    """The photo, where its crop is, and the driving video with the crop of its chunks."""

    photo: np.ndarray  # uint8 (H, W, 3), as read
    box: np.ndarray  # float (4,) square (x0, y0, x1, y1) in photo pixels: the crop the model animates
    source: np.ndarray  # uint8 (S, S, 3): the photo's crop at the model's resolution
    driving: DrivingVideo
    prepare: Prepare  # (first frame index, driving chunk uint8 (n, H', W', 3)) -> (n, S, S, 3)


def animate_photo(
    source: str | Path,
    driving: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    mode: str = "relative",
    crop: str = "face",
    find_best_frame: bool = False,
    frames_dir: str | Path | None = None,
    fps: float | None = None,
    device: str = "auto",
    panels: str = "all",
    explain_dir: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    paste_back: bool | None = None,
    face_index: int = 0,
    chunk_frames: int = CHUNK,
) -> Path:
    """Animate the photo ``source`` with the video ``driving`` and write the video ``out``; returns its path.

    Args:
        source: an image file (any size and aspect).
        driving: anything :func:`cpabanim.data.video.read_video` reads (a movie, a gif, a folder of frames).
        checkpoint: a cpabanim checkpoint (``cpabanim train`` writes ``{paths.checkpoints}/<experiment>/last.pt``).
        out: the video to write (.mp4/.mov/.mkv/.avi with H.264, or .gif).
        mode: ``relative`` | ``standard`` | ``avd`` (see :mod:`cpabanim.commands.demo`).
        crop: ``face`` (detect and crop the faces) | ``none`` (centre square).
        find_best_frame: relative motion from the driving frame whose face landmarks best match the source's.
        frames_dir: also write the result frames there as lossless PNGs (``00000.png``, ...): the frames of
            the video's result panel (the whole photo with ``paste_back``, else the model's crop).
        fps: frame rate of ``out``; default: the driving video's (25 for frame folders and gifs).
        device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        panels: ``all`` = labelled ``source | driving | result`` side by side; ``result`` = the result only.
        explain_dir: write the pictures of :mod:`cpabanim.viz.explain` there, for the frame that moves most.
        batch_size: driving frames per forward pass.
        progress: show a progress bar.
        paste_back: blend the animated crop back into the photo at its own resolution (feathered border), so
            the result is the whole photo; default (None): on with ``crop="face"``, off with ``crop="none"``.
        face_index: which face of the photo to animate with ``crop="face"``: 0 = the largest, 1 = the next, ...
        chunk_frames: driving frames read, animated and written at a time (memory grows with it, not with
            the video's length).
    """
    _check_choice("mode", mode, ANIMATION_MODES)
    _check_choice("crop", crop, CROPS)
    _check_choice("panels", panels, PANELS)
    if face_index < 0:
        raise CpabanimError(f"--face {face_index}: give 0 for the largest face, 1 for the next, ...")
    paste_back = crop == "face" if paste_back is None else paste_back
    out = Path(out)
    check_outputs(out, frames_dir, explain_dir, fps)
    torch_device = demo_device(device)
    model, extra = load_model(checkpoint, torch_device, missing=f"pass --checkpoint PATH, or {TRAIN_HINT}")
    size = training_resolution(extra, checkpoint)
    inputs = plan_inputs(Path(source), Path(driving), size, crop, _face_crop_options(extra), face_index, chunk_frames)
    start = 0
    if find_best_frame:
        start = best_frame(inputs, Path(source))
        log.info("best driving frame: %d (relative motion starts there)", start)
    frames = inputs.driving.count
    paste = (lambda crops: paste_into(inputs.photo, crops, inputs.box)) if paste_back else (lambda crops: crops)
    source_panel = inputs.photo if paste_back else inputs.source
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(progress_bar(total=frames, desc="demo", unit="frame", disable=not progress))
        writer = stack.enter_context(VideoWriter(out, fps or inputs.driving.fps))
        pngs = (
            stack.enter_context(FrameFolderWriter(Path(frames_dir), compress_level=1))
            if frames_dir is not None
            else None
        )
        explanation = None
        for crops, result, chunk_explanation in animate_stream(model, inputs, mode, start, torch_device, batch_size):
            result = paste(result)
            writer.write(compose_panels(source_panel, crops, result, panels))
            if pngs is not None:
                pngs.write(result)
            explanation = more_moving(explanation, chunk_explanation)
            bar.update(len(crops))
    if explain_dir is not None:
        from cpabanim.viz.explain import write_explanation

        explanation = _titled(explanation, f"{Path(source).name} driven by {Path(driving).name} ({mode} mode)")
        paths = write_explanation(explanation, files.claim_output_folder(explain_dir, "cpabanim demo --explain"))
        log.info("explanation pictures: %s", ", ".join(str(p) for p in paths.values()))
    height, width = (inputs.photo.shape[:2]) if paste_back else (size, size)
    log.info("wrote %s (%d frames, %dx%d px, %s mode)", out, frames, width, height, mode)
    return out


def check_outputs(out: Path, frames_dir: str | Path | None, explain_dir: str | Path | None, fps: float | None) -> None:
    """One line, before any work, for an output the demo cannot write or must not replace: an unknown video
    format, a frame rate that is not positive, a ``--frames`` or ``--explain`` folder holding files cpabanim did
    not write (or a file in its place), an ``--out`` file cpabanim did not write."""
    from cpabanim.data.video import check_frame_folder

    if out.suffix.lower() not in VIDEO_SUFFIXES + (".gif",):
        raise CpabanimError(f"{out}: unsupported output format (use {', '.join(VIDEO_SUFFIXES)} or .gif)")
    files.check_output_file(out, "--out", written_by_cpabanim)
    if fps is not None and not (fps > 0 and np.isfinite(fps)):
        raise CpabanimError(f"--fps {fps:g}: the frame rate must be a positive number")
    if frames_dir is not None:
        check_frame_folder(Path(frames_dir))
    if explain_dir is not None:
        files.check_output_folder(explain_dir, "choose a new or empty folder for the --explain pictures")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CpabanimError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def demo_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:N]`` -> a usable device, or a one-line error saying why not (in the flag's
    words: :func:`cpabanim.runtime.resolve_device` speaks of the ``device`` parameter)."""
    from cpabanim.runtime import resolve_device

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CpabanimError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    return resolve_device(name)


def training_resolution(extra: dict[str, Any], checkpoint: str | Path) -> int:
    """The square frame size the checkpoint was trained at (its params' ``data.frame_size``)."""
    size = ((extra.get("params") or {}).get("data") or {}).get("frame_size")
    if size:
        return int(size)
    log.warning(
        "checkpoint %s does not record its training resolution: using %d px (FOMM/TPSMM's)",
        checkpoint,
        FALLBACK_FRAME_SIZE,
    )
    return FALLBACK_FRAME_SIZE


def _face_crop_options(extra: dict[str, Any]) -> dict[str, Any]:
    """The face crop the checkpoint's training data used (``data.folder``), when it records one."""
    folder = ((extra.get("params") or {}).get("data") or {}).get("folder") or {}
    names = {"margin": "margin", "smooth_sigma": "sigma", "detect_every": "detect_every"}
    return {ours: folder[theirs] for theirs, ours in names.items() if theirs in folder}


def read_photo(path: Path) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) RGB; a :class:`DataError` naming the file when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{path}: no such image")
    try:
        with Image.open(path) as image:
            if min(image.size) < MIN_SOURCE_SIDE:  # said of the photo here, not of a "source video" in preprocess
                width, height = image.size
                raise DataError(
                    f"the photo {path} is {width}x{height} pixels: below the {MIN_SOURCE_SIDE} px minimum of its "
                    "short side; use a larger photo"
                )
            # phone photos store their rotation in EXIF: show the photo the way its owner sees it
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from err
    except Image.DecompressionBombError as err:  # PIL refuses images over twice its pixel limit before decoding
        raise DataError(f"{path}: refused, too many pixels to decode safely ({first_line(err)})") from None


def driving_fps(path: Path) -> float:
    """The frame rate of a movie file; :data:`FALLBACK_FPS` for frame folders, gifs and strips."""
    from cpabanim.data.movie import movie_info
    from cpabanim.data.video import MOVIE_SUFFIXES

    if path.is_file() and path.suffix.lower() in MOVIE_SUFFIXES:
        rate = movie_info(path)[0]
        if rate > 0:
            return rate
    return FALLBACK_FPS


def plan_inputs(
    source: Path,
    driving: Path,
    size: int,
    crop: str,
    face_options: dict[str, Any],
    face_index: int = 0,
    chunk_frames: int = CHUNK,
) -> DemoInputs:
    """Read the photo and crop it, check the driving video and (``crop="face"``) track its face in one
    streaming pass: what :func:`animate_photo` animates, chunk by chunk."""
    from cpabanim.data.faces import DEFAULT_MARGIN, crop_frames

    photo = read_photo(source)
    video = open_driving(driving, driving_fps(driving), chunk_frames)
    if crop == "face":
        log.info("finding the faces in %s and in the %d frames of %s", source.name, video.count, driving.name)
        box = photo_crop_box(photo, face_index, face_options.get("margin", DEFAULT_MARGIN), source)
        return DemoInputs(
            photo,
            box,
            crop_frames(photo[None], box[None], size)[0],
            video,
            face_prepare(driving_crop_boxes(video, face_options), size),
        )
    from cpabanim.data.listing import centre_square  # the folder source's crop without faces
    from cpabanim.data.video import resize_frames

    height, width = photo.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    box = np.array([left, top, left + side, top + side], dtype=np.float64)
    return DemoInputs(
        photo,
        box,
        resize_frames(centre_square(photo[None]), size, source=source)[0],
        video,
        square_prepare(size, driving),
    )


def prepare_inputs(source: Path, driving: Path, size: int, crop: str, face_options: dict[str, Any]) -> Inputs:
    """Both inputs at ``size`` x ``size`` (face crop, or centre square), uint8, the whole driving video held."""
    inputs = plan_inputs(source, driving, size, crop, face_options)
    frames = np.concatenate([inputs.prepare(start, chunk) for start, chunk in inputs.driving.chunks()])
    return Inputs(source=inputs.source, driving=frames, fps=inputs.driving.fps)


def _titled(explanation, title: str):
    from dataclasses import replace

    return replace(explanation, title=f"{title}, {explanation.title}" if explanation.title else title)
