"""Stage ``cpabanim reconstruct``: video reconstruction, the field's quantitative benchmark (paper §4.1).

For every test video, the source is frame 0 and every frame (frame 0 included) drives it. Writes

- ``{paths.outputs}/reconstruction/<video>/<00000>.png``: the predictions, lossless, one per driving frame
  (CPABMM's released code wrote only lossy 15 fps MP4; the metrics read these PNGs);
- ``{paths.outputs}/reconstruction/<video>.mp4`` / ``.gif``: source | driving | prediction, for viewing;
- ``{paths.outputs}/reconstruction/index.json``: animator, videos, frame counts, per-video L1;
- ``{paths.outputs}/reconstruction/l1_per_frame.csv``: L1 of each predicted frame against its driving frame.

**Shards** (``reconstruct.shards``; docs/pipeline.md, "Sharded stages"): the test videos are split by a hash of
their names (:func:`cpabanim.data.layout.shard_of`); :func:`reconstruct_shard` writes shard k's videos into
``shards/reconstruct/<kkk>/`` of the run (``frames/<video>/``, ``viewing/<video>.mp4|gif``, ``explain/`` for the
first video, and ``records/<video>.npz``, the video's L1 per frame, written last) and the shard's record
``done.json`` at the end; :func:`cpabanim.animation.reconstruct_gather.gather_reconstruction` lays the folder above
out from them (hard links) with its index. **Resume**: a video whose record was made by the same parameters, code,
checkpoint and test frames is kept; a killed shard redoes only the video it was on. 1 and N shards give the same
bytes: each video is reconstructed alone, with the RNG seeded for it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim import files
from cpabanim.animation.animator import Animator, ModelAnimator, load_animator
from cpabanim.animation.reconstruct_records import (
    EXPLAIN_DIR,
    FRAMES,
    MLFLOW_IMAGES,
    OWNER,
    RECORDS,
    VIEWING,
    ReconstructJob,
    read_record,
)
from cpabanim.config.paths import CHECKPOINT_NAME
from cpabanim.data import layout
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
from cpabanim.data.video import frames_digest
from cpabanim.evaluation import formulas
from cpabanim.progress import progress_bar
from cpabanim.runtime import resolve_device

log = logging.getLogger(__name__)


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
    occlusion, which transform moves which region) into ``folder/<video>/``, under the video's safe name
    (:func:`cpabanim.data.names.safe_name`); the gather logs them to MLflow."""
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


def reconstruct_shard(job: ReconstructJob, shard: int, device: str = "cpu") -> dict[str, Any]:
    """Reconstruct the test videos of shard ``shard`` (of ``reconstruct.shards``) into its folder, keeping every
    video already made for the same inputs; its record ``done.json`` last. Returns the record."""
    layout.check_shard(shard, job.count, "reconstruct.shards")
    s = job.settings
    videos = test_videos(job.processed, s["max_videos"])  # every shard sees the whole list: "first N" is global
    names = [video_name(v) for v in videos]
    mine = [number for number, name in enumerate(names) if layout.shard_of(name, job.count) == shard]
    folder = layout.claim_shard(job.shards_root, shard, OWNER)
    (folder / layout.SHARD_MARKER).unlink(missing_ok=True)  # not done until this run writes it again
    torch_device = resolve_device(device)
    chosen = checkpoint_path(s["checkpoint"], job.checkpoints)
    runner, info = load_animator(s["animator"], chosen, torch_device, "reconstruct")
    made_with = files.sha256_file(chosen) if s["animator"] == "checkpoint" and chosen.is_file() else None
    config = {"params": job.params(), "code": job.code, "checkpoint_sha256": made_with}
    kept = 0
    for number in progress_bar(mine, desc=f"reconstruct shard {shard}/{job.count}", unit="video"):
        roles = {
            "viewing": not s["viewing_videos"] or number < s["viewing_videos"],
            "preview": number < MLFLOW_IMAGES,
            "explain": number == 0 and isinstance(runner, ModelAnimator),
        }
        kept += reconstruct_one(runner, job, videos[number], folder, config, roles, torch_device)
    remove_stale(folder, {names[number] for number in mine}, explain=0 in mine)
    record = {
        "config": config,
        "shards": job.count,
        "info": [list(item) for item in info.items()],  # a list keeps the keys' order, which index.json shows
        "device": str(torch_device),
        "videos": [names[number] for number in mine],
    }
    files.write_json(folder / layout.SHARD_MARKER, record)
    log.info("reconstruct shard %d/%d: %d videos (%d kept from an earlier run)", shard, job.count, len(mine), kept)
    return record


def reconstruct_one(
    runner: Animator,
    job: ReconstructJob,
    video: Path,
    folder: Path,
    config: dict[str, Any],
    roles: dict[str, bool],
    device: torch.device,
) -> bool:
    """Reconstruct ``video`` into the shard's ``folder``, unless its record says the same inputs made it (then
    True). ``roles``: whether it gets viewing videos, an MLflow preview, the explanation pictures."""
    s, name = job.settings, video_name(video)
    frames_uint8 = read_frames(video)
    if s["max_frames"]:
        frames_uint8 = frames_uint8[: s["max_frames"]]
    made_by = files.digest_of_json({"config": config, "frames": frames_digest(frames_uint8), **roles})
    record = files.contained_path(folder, RECORDS, f"{name}.npz")
    if read_record(record, made_by) is not None and files.contained_path(folder, FRAMES, name).is_dir():
        return True
    torch.manual_seed(job.seed)  # each video alone: the same bytes whichever shard makes it, after whichever video
    frames = to_tensor(frames_uint8)
    predicted_uint8 = to_frames(reconstruct_video(runner, frames, int(s["batch_size"]), device))
    write_frames(predicted_uint8, files.contained_path(folder, FRAMES, name))
    # L1 of what was saved (uint8 PNGs), so it equals what `cpabanim evaluate` recomputes.
    l1 = formulas.l1_per_frame(to_tensor(predicted_uint8), frames).numpy()
    strip = side_by_side(frames_uint8[0], frames_uint8, predicted_uint8)
    if roles["viewing"]:
        write_viewing(strip, files.contained_path(folder, VIEWING, name), s)
    if roles["explain"]:
        torch.manual_seed(job.seed)
        write_explanation_pictures(runner.model, video, folder / EXPLAIN_DIR, device)
    values = {"l1": l1, "made_by": np.array(made_by)}
    if roles["preview"]:  # the middle frame, to browse runs in the MLflow UI (logged by the gather)
        values["preview"] = strip[len(strip) // 2]
    files.write_atomically(record, lambda handle: np.savez(handle, **values))
    return False


def write_viewing(strip: np.ndarray, stem: Path, settings: dict[str, Any]) -> None:
    """``<stem>.mp4`` / ``.gif`` (as ``reconstruct.mp4``, ``.gif`` say), each written beside and renamed into place:
    never rewritten in place, since the gather's folder holds hard links to them."""
    scratch = stem.parent / f".{stem.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        for path in write_viewing_videos(strip, scratch / "v", settings["fps"], settings["mp4"], settings["gif"]):
            os.replace(path, stem.with_name(stem.name + path.suffix))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_explanation_pictures(model, video: Path, folder: Path, device: torch.device) -> None:
    """:func:`explain_first_video` into ``folder``, written beside it and renamed into place."""
    scratch = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    explain_first_video(model, video, scratch, device)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(scratch, folder)


def remove_stale(folder: Path, names: set[str], explain: bool) -> None:
    """Remove what an earlier run left in a shard's folder for videos no longer in it (fewer videos, another shard
    count, temporary files of a killed write), and the explanation unless the shard has the first video."""
    for part in (FRAMES, VIEWING, RECORDS):
        for path in (folder / part).iterdir() if (folder / part).is_dir() else []:
            stem = path.name if part == FRAMES else path.name.rsplit(".", 1)[0]
            if stem not in names or path.name.startswith("."):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in (folder / EXPLAIN_DIR, folder / f".{EXPLAIN_DIR}.tmp"):
        if path.is_dir() and (not explain or path.name.startswith(".")):
            shutil.rmtree(path)
