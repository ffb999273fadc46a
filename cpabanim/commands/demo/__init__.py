"""``cpabanim demo``: animate your own photo with a driving video (a command, not a pipeline stage).

    cpabanim demo --source photo.jpg --driving video.mp4 --out result.mp4 [--mode relative] [--crop face]
    cpabanim.commands.demo.animate_photo("photo.jpg", "video.mp4", "models/checkpoints/default/last.pt", "result.mp4")

What each mode computes (as TPSMM's demo; :meth:`cpabanim.models.full.AnimationModel.animation_keypoints`):
``relative`` moves the source's keypoints by the driving keypoints' motion since the driving video's first
frame (or, with ``--find-best-frame``, since the frame whose face landmarks are closest to the source's,
animating forwards and backwards from it), scaled by the ratio of the keypoints' hull sizes; ``standard``
uses the driving keypoints as they are; ``avd`` asks the AVD network. The background affine is never used:
the source and the driving video are different scenes (docs/model.md, "Behaviour kept as the released code ran").

Inputs of any size are brought to the checkpoint's training resolution: ``--crop face`` crops the photo's
face and tracks and crops the driving video's face with the detector and stable crop of the ``folder``
source (docs/data.md, "Sources"); ``--crop none`` takes the centre square of each, as that source does with
``faces: false``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.errors import CpabanimError, DataError, MissingWeightsError

log = logging.getLogger(__name__)

MODES = ("relative", "standard", "avd")
CROPS = ("face", "none")
PANELS = ("all", "result")
PANEL_LABELS = ("source", "driving", "result")
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


def animate_photo(source: str | Path, driving: str | Path, checkpoint: str | Path, out: str | Path,
                  mode: str = "relative", crop: str = "face", find_best_frame: bool = False,
                  frames_dir: str | Path | None = None, fps: float | None = None, device: str = "auto",
                  panels: str = "all", explain_dir: str | Path | None = None, batch_size: int = 8,
                  progress: bool = True) -> Path:
    """Animate the photo ``source`` with the video ``driving`` and write the video ``out``; returns its path.

    Args:
        source: an image file (any size and aspect).
        driving: anything :func:`cpabanim.data.video.read_video` reads (a movie, a gif, a folder of frames).
        checkpoint: a cpabanim checkpoint (``cpabanim train`` writes ``{paths.checkpoints}/<experiment>/last.pt``).
        out: the video to write (.mp4/.mov/.mkv/.avi with H.264, or .gif).
        mode: ``relative`` | ``standard`` | ``avd`` (see the module's docstring).
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
    _check_choice("mode", mode, MODES)
    _check_choice("crop", crop, CROPS)
    _check_choice("panels", panels, PANELS)
    out = Path(out)
    if out.suffix.lower() not in VIDEO_SUFFIXES + (".gif",):
        raise CpabanimError(f"{out}: unsupported output format (use {', '.join(VIDEO_SUFFIXES)} or .gif)")
    torch_device = demo_device(device)
    model, extra = load_model(checkpoint, torch_device)
    size = training_resolution(extra, checkpoint)
    inputs = prepare_inputs(Path(source), Path(driving), size, crop, _face_crop_options(extra))
    start = 0
    if find_best_frame:
        start = best_frame(inputs.source, inputs.driving, Path(source))
        log.info("best driving frame: %d (relative motion starts there)", start)
    from tqdm import tqdm

    frames = len(inputs.driving)
    with tqdm(total=frames + (1 if start else 0), desc="demo", unit="frame", disable=not progress) as bar:
        result, explanation = animate_frames(model, inputs.source, inputs.driving, mode, start, torch_device,
                                             batch_size, bar.update)
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


def load_model(checkpoint: str | Path, device: torch.device):
    """-> (AnimationModel in eval mode on ``device``, checkpoint extras); a clear error when the file is missing."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MissingWeightsError(f"checkpoint {checkpoint} not found: pass --checkpoint PATH, or train one with "
                                  "`cpabanim train`")
    from cpabanim.models.checkpoint import load_checkpoint

    model, extra = load_checkpoint(checkpoint, map_location=device)
    return model.to(device).eval(), extra


def training_resolution(extra: dict[str, Any], checkpoint: str | Path) -> int:
    """The square frame size the checkpoint was trained at (its params' ``data.frame_size``)."""
    size = ((extra.get("params") or {}).get("data") or {}).get("frame_size")
    if size:
        return int(size)
    log.warning("checkpoint %s does not record its training resolution: using %d px (FOMM/TPSMM's)", checkpoint,
                FALLBACK_FRAME_SIZE)
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


def driving_fps(path: Path) -> float:
    """The frame rate of a movie file; :data:`FALLBACK_FPS` for frame folders, gifs and strips."""
    from cpabanim.data.video import MOVIE_SUFFIXES, movie_info

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
        from cpabanim.data.preprocess import _centre_square  # the folder source's crop without faces

        photo = resize_frames(_centre_square(photo[None]), size)[0]
        video = resize_frames(_centre_square(video), size)
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


def normalised_landmarks(points: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks, centred and divided by sqrt(area of their convex hull): position and scale removed."""
    from scipy.spatial import ConvexHull

    centred = points - points.mean(axis=0, keepdims=True)
    return centred / np.sqrt(ConvexHull(centred).volume)


def best_frame(source: np.ndarray, driving: np.ndarray, source_path: Path) -> int:
    """The driving frame whose normalised landmarks are closest (squared distance) to the source's (FOMM's
    ``find_best_frame``); frames without a face are skipped, frame 0 when no frame has one."""
    marks = _landmarks(np.concatenate([source[None], driving]))
    if np.isnan(marks[0]).any():
        raise DataError(f"{source_path}: no face landmarks found in the photo (needed by --find-best-frame)")
    reference = normalised_landmarks(marks[0])
    distances = [np.inf if np.isnan(m).any() else float(((normalised_landmarks(m) - reference) ** 2).sum())
                 for m in marks[1:]]
    if not np.isfinite(distances).any():
        log.warning("no face landmarks in the driving video: --find-best-frame starts at frame 0")
        return 0
    return int(np.argmin(distances))


def _tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [0, 1] on ``device``."""
    from cpabanim.data.frames import to_tensor

    return to_tensor(frames).to(device)


def _animate_from(model, source: torch.Tensor, driving: torch.Tensor, mode: str, batch_size: int
                  ) -> Iterator[tuple[torch.Tensor, dict[str, Any], torch.Tensor]]:
    """Animate ``driving`` (T, 3, S, S) with motion relative to its frame 0: yields, chunk by chunk,
    (driving chunk (n, 3, S, S), the generator's output dict, keypoints detected on the chunk (n, K, 2))."""
    kp_source = model.kp_detector(source)
    kp_first = model.kp_detector(driving[:1])
    for chunk in driving.split(batch_size):
        n = chunk.shape[0]
        kp_detected = model.kp_detector(chunk)
        kp_driving = model.animation_keypoints(kp_source, kp_detected, kp_first, mode)
        # bg_param None: no background motion between two different scenes (as TPSMM's demo)
        out = model.generate(source.expand(n, -1, -1, -1), kp_source.expand(n, -1, -1), kp_driving, None)
        yield chunk, out, kp_detected


@torch.no_grad()
def animate_frames(model, source: np.ndarray, driving: np.ndarray, mode: str, start: int, device: torch.device,
                   batch_size: int = 8, on_frames: Callable[[int], Any] = lambda n: None
                   ) -> tuple[np.ndarray, Any]:
    """Animate uint8 source (S, S, 3) with driving (T, S, S, 3), relative motion from frame ``start``.

    From ``start > 0`` the video is animated forwards from ``start`` and backwards from it down to frame 0
    (FOMM's find_best_frame), then put back in order. Returns (uint8 (T, S, S, 3) result, the
    :class:`~cpabanim.viz.explain.FrameExplanation` of the frame whose keypoints moved most).
    ``on_frames(n)`` is called after each chunk of n frames (progress).
    """
    from cpabanim.data.frames import to_uint8
    from cpabanim.viz.explain import explanation_from_output

    source_t = _tensor(source[None], device)
    parts = [(list(range(start, len(driving))), False)]
    if start > 0:
        parts.insert(0, (list(range(start, -1, -1)), True))
    result = np.empty_like(driving)
    most_motion, explanation = -1.0, None
    for indices, backwards in parts:
        frames = _tensor(driving[indices], device)
        done = 0
        for chunk, out, kp_detected in _animate_from(model, source_t, frames, mode, batch_size):
            n = chunk.shape[0]
            result[indices[done:done + n]] = to_uint8(out["prediction"].float())
            motion = (out["kp_driving"] - out["kp_source"]).norm(dim=-1).mean(dim=-1)  # (n,)
            best = int(motion.argmax())
            if float(motion[best]) > most_motion:
                most_motion = float(motion[best])
                explanation = explanation_from_output(
                    out, best, source_t[0], chunk[best], model.params["motion"], model.num_groups,
                    kp_detected=kp_detected[best], title=f"frame {indices[done + best]}")
            done += n
            on_frames(n)
    return result, explanation


def _titled(explanation, title: str):
    from dataclasses import replace

    return replace(explanation, title=f"{title}, {explanation.title}" if explanation.title else title)


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


def _default(name: str) -> Any:
    """The default of :func:`animate_photo`'s parameter ``name``: the CLI shows the library's defaults."""
    return inspect.signature(animate_photo).parameters[name].default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpabanim.config.layers import add_params_arguments

    parser.add_argument("--source", required=True, help="the photo to animate (any size and aspect)")
    parser.add_argument("--driving", required=True, help="the driving video: a movie, a gif or a folder of frames")
    parser.add_argument("--out", default="result.mp4", help="the video to write (default: result.mp4)")
    parser.add_argument("--checkpoint", default=None,
                        help="a cpabanim checkpoint (default: the experiment's {paths.checkpoints}/<experiment>/last.pt)")
    parser.add_argument("--mode", choices=MODES, default=_default("mode"),
                        help="relative: motion since the first (or best) driving frame, applied to the source; "
                             "standard: the driving keypoints as they are; avd: via the AVD network")
    parser.add_argument("--crop", choices=CROPS, default=_default("crop"),
                        help="face: crop the photo's face and track the driving video's; none: centre square")
    parser.add_argument("--find-best-frame", action="store_true",
                        help="start relative motion at the driving frame whose face landmarks best match the "
                             "photo's, animating forwards and backwards from it")
    parser.add_argument("--frames", default=None, metavar="DIR", help="also write the result frames (the result only, at the model's resolution) as lossless PNGs")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the driving video's)")
    parser.add_argument("--device", default=_default("device"), help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--panels", choices=PANELS, default=_default("panels"),
                        help="all: labelled source | driving | result; result: the result only")
    parser.add_argument("--explain", default=None, metavar="DIR",
                        help="write pictures of the motion (keypoints, flow, occlusion, contribution maps)")
    add_params_arguments(parser)


def default_checkpoint(args: argparse.Namespace) -> Path:
    """The experiment's ``last.pt`` (``{paths.checkpoints}/<experiment>/last.pt``) of the resolved params
    (--params, --preset, --experiment, --set): what ``cpabanim train`` wrote."""
    from cpabanim.config.layers import params_from_args
    from cpabanim.config.paths import ExperimentPaths

    params = params_from_args(args)
    return ExperimentPaths.of(params["paths"], params["experiment"]).checkpoint


def run(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args)
    animate_photo(args.source, args.driving, checkpoint, args.out, mode=args.mode, crop=args.crop,
                  find_best_frame=args.find_best_frame, frames_dir=args.frames, fps=args.fps, device=args.device,
                  panels=args.panels, explain_dir=args.explain)
    return 0
