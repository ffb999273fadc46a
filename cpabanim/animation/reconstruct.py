"""Stage ``cpabanim reconstruct``: video reconstruction, the field's quantitative benchmark (paper §4.1).

For every test video, the source is frame 0 and every frame (frame 0 included) drives it. Writes

- ``{paths.outputs}/reconstruction/<video>/<00000>.png``: the predictions, lossless, one per driving frame
  (CPABMM's released code wrote only lossy 15 fps MP4; the metrics read these PNGs);
- ``{paths.outputs}/reconstruction/<video>.mp4`` / ``.gif``: source | driving | prediction, for viewing;
- ``{paths.outputs}/reconstruction/index.json``: animator, videos, frame counts, per-video L1;
- ``{paths.outputs}/reconstruction/l1_per_frame.csv``: L1 of each predicted frame against its driving frame.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch

from cpabanim import files
from cpabanim.animation.animator import Animator, ModelAnimator, load_animator
from cpabanim.config.paths import CHECKPOINT_NAME
from cpabanim.data.frames import (
    read_frames,
    side_by_side,
    test_videos,
    to_frames,
    to_tensor,
    write_frames,
    write_viewing_videos,
)
from cpabanim.data.layout import video_name
from cpabanim.data.names import safe_name
from cpabanim.evaluation import formulas
from cpabanim.progress import progress_bar
from cpabanim.runtime import resolve_device

log = logging.getLogger(__name__)

MLFLOW_IMAGES = 4  # videos whose middle frame (source | driving | prediction) is logged to MLflow
EXPLAIN_DIR = "explain"  # pictures that explain the motion of the first video (cpabanim/viz/explain.py)


def checkpoint_path(chosen: str | None, checkpoints: Path) -> Path:
    """The checkpoint a stage evaluates: ``chosen`` (``<stage>.checkpoint``), else the experiment's ``last.pt``."""
    return Path(chosen) if chosen else Path(checkpoints) / CHECKPOINT_NAME


@torch.no_grad()
def reconstruct_video(animator: Animator, frames: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Source = frame 0, driving = every frame: (T, 3, H, W) in [0, 1] -> predictions (T, 3, H, W) on the CPU."""
    source = frames[:1].to(device)
    predictions = []
    for driving in frames.split(batch_size):
        driving = driving.to(device)
        out = animator.reconstruct(source.expand(len(driving), -1, -1, -1), driving)["prediction"]
        predictions.append(out.float().clamp(0, 1).cpu())
    return torch.cat(predictions)


@torch.no_grad()
def explain_first_video(model, video: Path, folder: Path, device: torch.device) -> None:
    """Labelled pictures of how the middle frame of ``video`` was made (keypoints per CPAB group, dense flow,
    occlusion, which transform moves which region) into ``folder/<video>/``, and into the stage's MLflow run as
    ``explain/<video>/<figure>.png``, under the video's safe name (:func:`cpabanim.data.names.safe_name`)."""
    from cpabanim.tracking import log_artifact
    from cpabanim.viz.explain import write_explanation
    from cpabanim.viz.motion import explanation_from_output

    frames = to_tensor(read_frames(video))
    middle = len(frames) // 2
    source, driving = frames[:1].to(device), frames[middle : middle + 1].to(device)
    out = model.reconstruct(source, driving)
    explanation = explanation_from_output(
        out,
        0,
        source[0],
        driving[0],
        model.params["motion"],
        model.num_groups,
        title=f"{video_name(video)}, frame {middle}",
    )
    write_explanation(explanation, folder / safe_name(video_name(video)))
    log_artifact(folder, "explain")


def reconstruct_all(
    *,
    processed: Path,
    checkpoints: Path,
    out_root: Path,
    animator: str,
    checkpoint: str | None,
    max_videos: int,
    max_frames: int,
    batch_size: int,
    fps: float,
    mp4: bool,
    gif: bool,
    viewing_videos: int,
    device: str,
    seed: int,
) -> float:
    """Reconstruct every test video of ``processed`` (the first ``max_videos``, 0 = all; their first
    ``max_frames``, 0 = all) into ``out_root``; returns the L1 pooled over frames.

    ``animator``: ``checkpoint`` (the model at ``checkpoint``, else ``checkpoints/last.pt``) | ``identity``;
    ``batch_size``: driving frames per forward pass; ``fps``, ``mp4``, ``gif``: the viewing videos, written for
    the first ``viewing_videos`` videos (0 = all); ``device``: ``auto`` | ``cpu`` | ``cuda[:N]``.
    """
    torch.manual_seed(seed)
    torch_device = resolve_device(device)
    runner, info = load_animator(animator, checkpoint_path(checkpoint, checkpoints), torch_device, "reconstruct")
    videos = test_videos(processed, max_videos)
    files.fresh_output_folder(out_root, "cpabanim reconstruct")

    from cpabanim.tracking import log_artifact, log_image, log_metrics, set_tags

    index = {**info, "device": str(torch_device), "videos": {}}
    all_l1 = []
    set_tags({"cpabanim.animator": info["animator"]})
    with open(out_root / "l1_per_frame.csv", "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["video", "frame", "l1"])
        for video in progress_bar(videos, desc="reconstruct", unit="video"):
            name = video_name(video)
            frames_uint8 = read_frames(video)
            if max_frames:
                frames_uint8 = frames_uint8[:max_frames]
            frames = to_tensor(frames_uint8)
            predictions = reconstruct_video(runner, frames, batch_size, torch_device)
            predicted_uint8 = to_frames(predictions)
            write_frames(predicted_uint8, out_root / name)
            # L1 of what was saved (uint8 PNGs), so it equals what `cpabanim evaluate` recomputes.
            l1 = formulas.l1_per_frame(to_tensor(predicted_uint8), frames).numpy()
            table.writerows([name, t, f"{value:.6f}"] for t, value in enumerate(l1))
            all_l1.append(l1)
            index["videos"][name] = {"frames": len(frames), "l1": float(l1.mean())}
            strip = side_by_side(frames_uint8[0], frames_uint8, predicted_uint8)
            if not viewing_videos or len(index["videos"]) <= viewing_videos:
                write_viewing_videos(strip, out_root / name, fps, mp4, gif)
            if len(index["videos"]) <= MLFLOW_IMAGES:  # the middle frame, to browse runs in the MLflow UI
                log_image(strip[len(strip) // 2], f"reconstruction/{name}.png")
    if len(videos) > MLFLOW_IMAGES:  # not a silent cap: the run says what it holds and where the rest is
        set_tags(
            {
                "reconstruction.previews": f"the first {MLFLOW_IMAGES} of {len(videos)} videos (MLFLOW_IMAGES in "
                f"cpabanim/animation/reconstruct.py); every video is in index.json and in {out_root}"
            }
        )
    if videos and isinstance(runner, ModelAnimator):
        explain_first_video(runner.model, videos[0], out_root / EXPLAIN_DIR, torch_device)
    pooled = float(np.concatenate(all_l1).mean())
    index["l1"] = pooled
    (out_root / "index.json").write_text(json.dumps(index, indent=2))
    log_metrics({"recon/l1": pooled})
    log_artifact(out_root / "index.json")
    log.info("reconstructed %d videos into %s: L1 %.5f (pooled over frames)", len(videos), out_root, pooled)
    return pooled
