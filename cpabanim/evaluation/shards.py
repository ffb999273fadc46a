"""One shard of ``cpabanim evaluate`` (docs/evaluation.md, "Shards and resume"): the per-frame values of its test
videos' reconstructions and of the animated pairs they drive, one record per video or pair, for the gather to pool.

A video's shard is a hash of its name (:func:`cpabanim.data.layout.shard_of`), a pair's that of its driving video,
so a shard reads only its own test videos. In the run's ``shards/evaluate/<kkk>/``:

    recon/<video>.npz   the per-frame values of the model and of the copy-source baseline (and FID features), and
                        each frame's motion size (:mod:`cpabanim.evaluation.motion_size`)
    anim/<pair>.npz     the per-frame values of the source-unchanged baseline and of each mode, and the motion size
                        of each driving frame
    done.json           the shard's record, written last: what it was made with, its videos and pairs, the reasons
                        why metrics are missing, and how many extractions it made or read from the cache

**Resume**: each item's record is written whole, last, with the digest of what made it (the parameters, the
code, the extractors and every frame it read); a shard run again keeps each item whose digest is unchanged, so a
killed shard redoes only the item it was on.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpabanim import files
from cpabanim.data import layout
from cpabanim.data.layout import split_videos
from cpabanim.data.video import frames_digest
from cpabanim.errors import DataError
from cpabanim.evaluation.animation_metrics import pair_metrics, read_pair
from cpabanim.evaluation.cache import ExtractionCache
from cpabanim.evaluation.evaluate import copy_source_metrics, read_reconstruction, video_metrics
from cpabanim.evaluation.extractors import resolve_keypoints
from cpabanim.evaluation.formulas import KEYPOINT_METRICS
from cpabanim.evaluation.metric_networks import Extractors, OptionalNetworkMetrics
from cpabanim.evaluation.motion_size import MOTION_SIZE, MotionMeasure
from cpabanim.evaluation.records import ANIM, RECON, EvaluateJob, kept_record, write_record
from cpabanim.progress import progress_bar
from cpabanim.runtime import resolve_device

log = logging.getLogger(__name__)

OWNER = "cpabanim evaluate"


def setup(job: EvaluateJob) -> tuple[dict[str, Any], Extractors, OptionalNetworkMetrics, dict[str, str]]:
    """(the shard's config, the extractors, the optional networks, why each unavailable metric is missing)."""
    s = job.settings
    keypoints, not_applicable = resolve_keypoints(s["keypoints"], job.processed)
    metrics = list(s["metrics"])
    known = {name: not_applicable for name in KEYPOINT_METRICS if not_applicable and name in metrics}
    extractor_metrics = [name for name in metrics if name not in known]
    options = {key: s[key] for key in ("face_upsample", "pose_min_visibility", "reid_weights")}
    cache = ExtractionCache(job.cache_dir)
    extractors = Extractors(extractor_metrics, keypoints, s["identity"], options, resolve_device(job.device), cache)
    networks = OptionalNetworkMetrics(metrics)
    reasons = {**known, **extractors.reasons, **networks.reasons}
    config = {"params": job.params(), "keypoints": keypoints, "code": job.code}
    return config, extractors, networks, reasons


@dataclass(frozen=True)
class ShardWork:
    """What a shard's items are scored with and where their records go."""

    folder: Path
    tests: dict[str, Path]  # test video name -> its file
    wanted: list[str]  # evaluate.metrics
    made_with: dict[str, Any]  # what every record's digest covers besides the frames: config, extractors, reasons
    extractors: Extractors
    networks: OptionalNetworkMetrics
    motion: MotionMeasure  # the motion size of each test frame (model-independent)


def shard_items(job: EvaluateJob, shard: int) -> tuple[list[str], list[tuple[int, dict]], list[str]]:
    """Shard ``shard``'s test videos (by name), its pairs (their number in pairs.json, the pair: those its videos
    drive) and the animation modes."""
    index = read_index(job.reconstruction / "index.json", "reconstruct")
    pairs_record = read_index(job.animation / "pairs.json", "animate")
    videos = [v for v in sorted(index["videos"]) if layout.shard_of(v, job.count) == shard]
    pairs = [
        (number, pair)
        for number, pair in enumerate(pairs_record["pairs"])
        if layout.shard_of(pair["driving"], job.count) == shard
    ]
    return videos, pairs, list(pairs_record["modes"])


def evaluate_shard(job: EvaluateJob, shard: int) -> dict[str, Any]:
    """Store the per-frame values of shard ``shard``'s videos and pairs, keeping each item an earlier run made from
    the same inputs; its record ``done.json`` last. Returns the record."""
    layout.check_shard(shard, job.count, "evaluate.shards")
    videos, pairs, modes = shard_items(job, shard)
    config, extractors, networks, reasons = setup(job)
    folder = layout.claim_shard(job.shards_root, shard, OWNER)
    (folder / layout.SHARD_MARKER).unlink(missing_ok=True)  # not done until this run writes it again
    motion = MotionMeasure(job.processed, config["keypoints"], extractors)
    made_with = {"config": config, "extractors": extractors.names(), "reasons": reasons, "motion": motion.name}
    tests = split_videos(job.processed, "test")
    work = ShardWork(folder, tests, list(job.settings["metrics"]), made_with, extractors, networks, motion)
    kept = 0
    for video in progress_bar(videos, desc=f"evaluate reconstruction, shard {shard}/{job.count}", unit="video"):
        kept += evaluate_video(job, video, work)
    for _, pair in progress_bar(pairs, desc=f"evaluate animation, shard {shard}/{job.count}", unit="pair"):
        kept += evaluate_pair(job, pair, modes, work)
    remove_stale(folder, {RECON: set(videos), ANIM: {pair["name"] for _, pair in pairs}})
    done = {
        "config": config,
        "shards": job.count,
        "reasons": reasons,
        "videos": videos,
        "pairs": [{"number": number, "name": pair["name"]} for number, pair in pairs],
        "modes": modes,
        "motion": motion.name,
        "extraction": extractors.cache.counts,
    }
    files.write_json(folder / layout.SHARD_MARKER, done)
    counts = json.dumps(extractors.cache.counts)
    log.info(
        "evaluate shard %d/%d: %d videos, %d pairs (%d kept from an earlier run); extractions %s",
        *(shard, job.count, len(videos), len(pairs), kept, counts),
    )
    return done


def evaluate_video(job: EvaluateJob, video: str, work: ShardWork) -> bool:
    """The record of one reconstructed video: the model's per-frame values and the copy-source baseline's (and
    FID features); True when the one there was made from the same inputs (kept)."""
    generated, reference = read_reconstruction(job.reconstruction, video, work.tests)
    inputs = {"generated": frames_digest(generated), "reference": frames_digest(reference)}
    made_by = files.digest_of_json({**work.made_with, **inputs})
    record = files.contained_path(work.folder, RECON, f"{video}.npz")
    if kept_record(record, made_by):
        return True
    values = video_metrics(generated, reference, work.wanted, work.extractors, work.networks)
    features = {k: values.pop(k) for k in ("fid_real", "fid_fake") if k in values}
    groups = {"model": values, "baseline": copy_source_metrics(reference, work.wanted, work.extractors)}
    groups[MOTION_SIZE] = {MOTION_SIZE: work.motion(video, reference)}
    write_record(record, made_by, groups, features, len(generated))
    return False


def evaluate_pair(job: EvaluateJob, pair: dict[str, Any], modes: list[str], work: ShardWork) -> bool:
    """The record of one animated pair: each mode's per-frame values and the source-unchanged baseline's; True
    when the one there was made from the same inputs (kept)."""
    frames = read_pair(job.animation, pair, modes, work.tests)
    made_by = files.digest_of_json({**work.made_with, **{k: frames_digest(v) for k, v in frames.items()}})
    record = files.contained_path(work.folder, ANIM, f"{pair['name']}.npz")
    if kept_record(record, made_by):
        return True
    groups = pair_metrics(frames, modes, work.wanted, work.extractors)
    groups[MOTION_SIZE] = {MOTION_SIZE: work.motion(pair["driving"], frames["driving"])}
    write_record(record, made_by, groups, {}, len(frames["driving"]))
    return False


def read_index(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} not found: run `cpabanim {stage}` first")
    return files.read_json(path, f"run `cpabanim {stage}` again")


def remove_stale(folder: Path, kept: dict[str, set[str]]) -> None:
    """Remove the records an earlier run left for items no longer in this shard, and temporary files."""
    for part, names in kept.items():
        for path in (folder / part).iterdir() if (folder / part).is_dir() else []:
            if path.name.startswith(".") or path.name.removesuffix(".npz") not in names:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
