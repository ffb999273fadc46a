"""The demo's work: one photo animated by one driving video (:func:`animate_photo`), its inputs brought to the
checkpoint's resolution (face crop or centre square) and the driving frame that best matches the photo.

Contract: every user error (a missing or unreadable file, no face found, an unknown choice) is one
:class:`~cpabanim.errors.CpabanimError` line naming the file or the flag; the animation itself is
:func:`cpabanim.animation.animate.animate_frames`, the panels and the video :mod:`cpabanim.commands.demo.panels`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.animation.animate import animate_frames
from cpabanim.animation.animator import load_model
from cpabanim.commands.demo.panels import PANELS, compose_panels, write_video
from cpabanim.errors import CpabanimError, DataError, MissingWeightsError, first_line
from cpabanim.evaluation.formulas import pose_distance_per_frame
from cpabanim.models.full import ANIMATION_MODES
from cpabanim.progress import progress_bar

log = logging.getLogger(__name__)

CROPS = ("face", "none")
# Frame folders and GIFs carry no reliable frame rate; 25 fps is the talking-head datasets' rate.
FALLBACK_FPS = 25.0
# Checkpoints that do not record their training resolution (data.frame_size) were trained as FOMM/TPSMM's.
FALLBACK_FRAME_SIZE = 256
# dlib's HOG detector misses faces below ~80 px: landmarks for --find-best-frame are taken on upscaled frames.
LANDMARK_MIN_SIDE = 256
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi")


@dataclass
class Inputs:
    """The photo and the driving video at the model's resolution."""

    source: np.ndarray  # uint8 (S, S, 3)
    driving: np.ndarray  # uint8 (T, S, S, 3)
    fps: float


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
        frames_dir: also write the result frames there as lossless PNGs (``00000.png``, ...).
        fps: frame rate of ``out``; default: the driving video's (25 for frame folders and gifs).
        device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        panels: ``all`` = labelled ``source | driving | result`` side by side; ``result`` = the result only.
        explain_dir: write the pictures of :mod:`cpabanim.viz.explain` there, for the frame that moves most.
        batch_size: driving frames per forward pass.
        progress: show a progress bar.
    """
    _check_choice("mode", mode, ANIMATION_MODES)
    _check_choice("crop", crop, CROPS)
    _check_choice("panels", panels, PANELS)
    out = Path(out)
    check_outputs(out, frames_dir, explain_dir, fps)
    torch_device = demo_device(device)
    model, extra = load_model(
        checkpoint, torch_device, missing="pass --checkpoint PATH, or train one with `cpabanim train`"
    )
    size = training_resolution(extra, checkpoint)
    inputs = prepare_inputs(Path(source), Path(driving), size, crop, _face_crop_options(extra))
    start = 0
    if find_best_frame:
        start = best_frame(inputs.source, inputs.driving, Path(source))
        log.info("best driving frame: %d (relative motion starts there)", start)
    frames = len(inputs.driving)
    with progress_bar(total=frames + (1 if start else 0), desc="demo", unit="frame", disable=not progress) as bar:
        result, explanation = animate_frames(
            model, inputs.source, inputs.driving, mode, start, torch_device, batch_size, bar.update
        )
    write_video(compose_panels(inputs.source, inputs.driving, result, panels), out, fps or inputs.fps)
    if frames_dir is not None:
        from cpabanim.data.frames import write_frames

        write_frames(result, Path(frames_dir))
    if explain_dir is not None:
        from cpabanim.viz.explain import write_explanation

        explanation = _titled(explanation, f"{Path(source).name} driven by {Path(driving).name} ({mode} mode)")
        paths = write_explanation(explanation, explain_dir)
        log.info("explanation pictures: %s", ", ".join(str(p) for p in paths.values()))
    log.info("wrote %s (%d frames, %dx%d px, %s mode)", out, frames, size, size, mode)
    return out


def check_outputs(out: Path, frames_dir: str | Path | None, explain_dir: str | Path | None, fps: float | None) -> None:
    """One line, before any work, for an output the demo cannot write or must not replace: an unknown video
    format, a frame rate that is not positive, a ``--frames`` folder holding files cpabanim did not write, an
    ``--explain`` path that is a file."""
    from cpabanim.data.video import check_frame_folder

    if out.suffix.lower() not in VIDEO_SUFFIXES + (".gif",):
        raise CpabanimError(f"{out}: unsupported output format (use {', '.join(VIDEO_SUFFIXES)} or .gif)")
    if out.is_dir():
        raise CpabanimError(f"--out {out} is a folder: give the video's file name")
    if fps is not None and not (fps > 0 and np.isfinite(fps)):
        raise CpabanimError(f"--fps {fps:g}: the frame rate must be a positive number")
    if frames_dir is not None:
        check_frame_folder(Path(frames_dir))
    if explain_dir is not None and Path(explain_dir).exists() and not Path(explain_dir).is_dir():
        raise CpabanimError(f"--explain {explain_dir} is a file: give a folder for the pictures")


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


def prepare_inputs(source: Path, driving: Path, size: int, crop: str, face_options: dict[str, Any]) -> Inputs:
    """Read both inputs and bring them to ``size`` x ``size`` (face crop, or centre square), uint8."""
    from cpabanim.data.video import read_video, resize_frames

    photo = read_photo(source)
    try:
        video = read_video(driving)
    except DataError as err:
        # decoders append their whole stderr (ffmpeg: its banner, ~20 lines); the first line says what failed
        lines = str(err).strip().splitlines()
        raise DataError(lines[0] + (" ...)" if len(lines) > 1 else "")) from err
    if crop == "face":
        log.info("finding the faces in %s and in the %d frames of %s", source.name, len(video), driving.name)
        photo = _face_crop(photo[None], size, face_options, source)[0]
        video = _face_crop(video, size, face_options, driving)
    else:
        from cpabanim.data.preprocess import centre_square  # the folder source's crop without faces

        photo = resize_frames(centre_square(photo[None]), size, source=source)[0]
        video = resize_frames(centre_square(video), size, source=driving)
    return Inputs(source=photo, driving=video, fps=driving_fps(driving))


def _face_crop(frames: np.ndarray, size: int, options: dict[str, Any], path: Path) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, size, size, 3) face crops, or a :class:`DataError` naming ``path``."""
    from cpabanim.data.faces import face_crop_video

    try:
        return face_crop_video(frames, size, **options)[0]
    except DataError as err:
        raise DataError(f"{path}: {err} (use --crop none to animate it uncropped)") from err


def _landmarks(frames: np.ndarray) -> np.ndarray:
    """dlib's 68 face landmarks of uint8 (T, S, S, 3) frames -> (T, 68, 2), NaN where no face is found."""
    from cpabanim.data.video import resize_frames
    from cpabanim.evaluation.extractors import DlibFaceLandmarks, ExtractorUnavailable

    try:
        extractor = DlibFaceLandmarks()
    except ExtractorUnavailable as err:
        raise MissingWeightsError(f"--find-best-frame needs face landmarks: {err}") from err
    return extractor(resize_frames(frames, max(frames.shape[1], LANDMARK_MIN_SIDE)))


def best_frame(source: np.ndarray, driving: np.ndarray, source_path: Path) -> int:
    """The driving frame whose normalised landmarks are closest (squared distance) to the source's (FOMM's
    ``find_best_frame``); frames without a face are skipped, frame 0 when no frame has one."""
    marks = _landmarks(np.concatenate([source[None], driving]))
    if np.isnan(marks[0]).any():
        raise DataError(f"{source_path}: no face landmarks found in the photo (needed by --find-best-frame)")
    distances = pose_distance_per_frame(marks[1:], marks[0])
    distances = np.where(np.isnan(distances), np.inf, distances)  # a frame without a face is never the best
    if not np.isfinite(distances).any():
        log.warning("no face landmarks in the driving video: --find-best-frame starts at frame 0")
        return 0
    return int(np.argmin(distances))


def _titled(explanation, title: str):
    from dataclasses import replace

    return replace(explanation, title=f"{title}, {explanation.title}" if explanation.title else title)
