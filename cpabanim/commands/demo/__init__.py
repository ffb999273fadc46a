"""``cpabanim demo``: animate your own photo with a driving video (a command, not a pipeline stage).

    cpabanim demo --source photo.jpg --driving video.mp4 --out result.mp4 [--mode relative] [--crop face]
    from cpabanim.commands.demo.photo import animate_photo
    animate_photo("photo.jpg", "video.mp4", "models/checkpoints/default/avd/seed0/last.pt", "result.mp4")

What each mode computes (as TPSMM's demo; :meth:`cpabanim.models.full.AnimationModel.animation_keypoints`):
``relative`` moves the source's keypoints by the driving keypoints' motion since the driving video's first
frame (or, with ``--find-best-frame``, since the frame whose face landmarks are closest to the source's,
animating forwards and backwards from it), scaled by the ratio of the keypoints' hull sizes; ``standard``
uses the driving keypoints as they are; ``avd`` asks the AVD network. The background affine is never used:
the source and the driving video are different scenes (docs/model.md, "Behaviour kept as the released code ran").

Inputs of any size are brought to the checkpoint's training resolution: ``--crop face`` crops the photo's
face and tracks and crops the driving video's face with the detector and stable crop of the ``folder``
source (docs/data.md, "Sources"); ``--crop none`` takes the centre square of each, as that source does with
``faces: false``. The photo's face is found at any size from ~30 px (the largest, or ``--face N``: 0 = the
largest, 1 = the next...), and with ``--paste-back`` (the default with ``--crop face``) the animated crop is
blended back into the whole photo at its own resolution, so the result is the photo with its face moving.

The driving video is streamed (read, cropped, animated and written a chunk at a time): memory does not grow
with its length (``cpabanim bench demo`` measures it).
"""

from __future__ import annotations

import argparse
import inspect
import logging
from pathlib import Path
from typing import Any

from cpabanim.commands.demo.panels import PANELS
from cpabanim.commands.demo.photo import CROPS, animate_photo
from cpabanim.models.full import ANIMATION_MODES

log = logging.getLogger(__name__)


def _default(name: str) -> Any:
    """The default of :func:`animate_photo`'s parameter ``name``: the CLI shows the library's defaults."""
    return inspect.signature(animate_photo).parameters[name].default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpabanim.config.layers import add_params_arguments

    parser.add_argument("--source", required=True, help="the photo to animate (any size and aspect)")
    parser.add_argument("--driving", required=True, help="the driving video: a movie, a gif or a folder of frames")
    parser.add_argument("--out", default="result.mp4", help="the video to write (default: result.mp4)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="a cpabanim checkpoint (default: the run's model with its AVD network, "
        "{paths.checkpoints}/<experiment>/avd/seed<seed>/last.pt, else its trained model .../seed<seed>/last.pt)",
    )
    parser.add_argument(
        "--mode",
        choices=ANIMATION_MODES,
        default=_default("mode"),
        help="relative: motion since the first (or best) driving frame, applied to the source; "
        "standard: the driving keypoints as they are; avd: via the AVD network",
    )
    parser.add_argument(
        "--crop",
        choices=CROPS,
        default=_default("crop"),
        help="face: crop the photo's face and track the driving video's; none: centre square",
    )
    parser.add_argument(
        "--face",
        type=int,
        default=_default("face_index"),
        metavar="N",
        help="with --crop face, which face of the photo to animate: 0 = the largest (default), 1 = the next, ...",
    )
    parser.add_argument(
        "--paste-back",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="blend the animated face back into the whole photo at its own size (default: on with --crop face; "
        "--no-paste-back writes the model's crop)",
    )
    parser.add_argument(
        "--find-best-frame",
        action="store_true",
        help="start relative motion at the driving frame whose face landmarks best match the "
        "photo's, animating forwards and backwards from it",
    )
    parser.add_argument(
        "--frames",
        default=None,
        metavar="DIR",
        help="also write the result frames (the result only: the whole photo with --paste-back, else the "
        "model's crop) as lossless PNGs",
    )
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the driving video's)")
    parser.add_argument("--device", default=_default("device"), help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--panels",
        choices=PANELS,
        default=_default("panels"),
        help="all: labelled source | driving | result; result: the result only",
    )
    parser.add_argument(
        "--explain",
        default=None,
        metavar="DIR",
        help="write pictures of the motion (keypoints, flow, occlusion, contribution maps)",
    )
    add_params_arguments(parser)


def default_checkpoint(args: argparse.Namespace) -> Path:
    """The run's model of the resolved params (--params, --preset, --experiment, --set seed=N): what ``cpabanim
    avd`` wrote (``{paths.checkpoints}/<experiment>/avd/seed<seed>/last.pt``, the model animate uses), else,
    before that stage ran, what ``cpabanim train`` wrote (``.../seed<seed>/last.pt``: its AVD network untrained)."""
    from cpabanim.config.layers import params_from_args
    from cpabanim.config.paths import ExperimentPaths

    params = params_from_args(args)
    paths = ExperimentPaths.of(params["paths"], params["experiment"], params["seed"])
    if paths.avd_checkpoint.is_file() or not paths.checkpoint.is_file():
        return paths.avd_checkpoint
    if args.mode == "avd":
        log.warning(
            "no %s yet: the trained model's AVD network is untrained (run `cpabanim avd`)", paths.avd_checkpoint
        )
    return paths.checkpoint


def run(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args)
    animate_photo(
        args.source,
        args.driving,
        checkpoint,
        args.out,
        mode=args.mode,
        crop=args.crop,
        find_best_frame=args.find_best_frame,
        frames_dir=args.frames,
        fps=args.fps,
        device=args.device,
        panels=args.panels,
        explain_dir=args.explain,
        paste_back=args.paste_back,
        face_index=args.face,
    )
    return 0
