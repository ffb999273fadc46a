"""Pooling per-frame values into the metrics (docs/evaluation.md, "Metrics"): the part of ``cpabanim evaluate``
its gather job runs, which imports no torch (the gather is a small job; :func:`fid_of_features` imports it only
for FID).

Every metric is the mean over all frames of all videos (or pairs), computed from the per-frame values concatenated
in one order (the videos' names, then the pairs of pairs.json), never from means of parts; the per-video CSV
holds each video's (or pair's and mode's) means, and the baselines' as ``baseline_<metric>``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.evaluation import formulas
from cpabanim.evaluation.baselines import BASELINE_PREFIX, SOURCE_UNCHANGED
from cpabanim.evaluation.formulas import KEYPOINT_METRICS
from cpabanim.evaluation.motion_size import MOTION_SIZE

PIXEL_METRICS = ("l1", "psnr", "ssim")
ALL_METRICS = (*PIXEL_METRICS, *KEYPOINT_METRICS, "aed", "lpips", "fid")
# transfer score -> the per-frame distance it is computed from
TRANSFER_METRICS = {"transfer_akd": "akd_driving", "transfer_motion": "akd_motion"}


def reconstruction_row(video: str, frames: int, values: dict[str, np.ndarray], copied: dict[str, np.ndarray]):
    """The per-video CSV row of one reconstruction: its means, and the copy-source baseline's as ``baseline_*``."""
    return {
        "part": "reconstruction",
        "video": video,
        "mode": "",
        "frames": frames,
        **{name: formulas.nanmean(v) for name, v in values.items()},
        **{f"baseline_{name}": formulas.nanmean(v) for name, v in copied.items()},
    }


def pair_row(name: str, mode: str, frames: int, values: dict[str, np.ndarray], unchanged: dict[str, np.ndarray]):
    """The per-video CSV row of one pair and mode: the pair's means, its transfer scores, and the baseline's means
    as ``baseline_<metric>``."""
    return {
        "part": "animation",
        "video": name,
        "mode": mode,
        "frames": frames,
        **{metric: formulas.nanmean(v) for metric, v in values.items()},
        **transfer_scores(values, unchanged),
        **{f"baseline_{metric}": formulas.nanmean(v) for metric, v in unchanged.items()},
    }


def transfer_scores(values: dict[str, np.ndarray], baseline: dict[str, np.ndarray]) -> dict[str, float]:
    """The transfer scores that ``values`` and the source-unchanged ``baseline`` (same frames) both allow."""
    return {
        name: formulas.transfer_score(values[distance], baseline[distance])
        for name, distance in TRANSFER_METRICS.items()
        if distance in values and distance in baseline
    }


def summarise(
    per_frame: dict[str, np.ndarray], prefix: str, metrics: dict[str, float], reasons: dict[str, str]
) -> None:
    """Pooled means over frames into ``metrics``; a metric defined on no frame gets a reason instead of NaN."""
    for name, values in per_frame.items():
        value = formulas.nanmean(values)
        if math.isfinite(value):
            metrics[f"{prefix}/{name}"] = value
        else:
            reasons[f"{prefix}/{name}"] = "defined on no frame (no keypoints / face found in both videos)"


def summarise_transfer(
    per_mode: dict[str, dict[str, np.ndarray]],
    baseline: dict[str, np.ndarray],
    metrics: dict[str, float],
    reasons: dict[str, str],
) -> None:
    """Pooled transfer scores ``anim/<mode>/transfer_*`` over all frames of all pairs into ``metrics`` (an
    undefined one gets a reason instead), and the baseline's own, 0 by definition, beside them."""
    scored = set()
    for mode, values in per_mode.items():
        for name, value in transfer_scores(values, baseline).items():
            key = f"anim/{mode}/{name}"
            if np.isfinite(value):
                metrics[key] = value
                scored.add(name)
            else:
                reasons[key] = (
                    f"undefined: the source-unchanged baseline's {TRANSFER_METRICS[name]} is 0 (or undefined) on "
                    "every frame where both are defined, so there was no motion to transfer"
                )
    for name in sorted(scored):
        metrics[f"{BASELINE_PREFIX}{SOURCE_UNCHANGED}/anim/{name}"] = 0.0


def explain_missing(metrics: dict[str, float], reasons: dict[str, str], known: dict[str, str], wanted) -> None:
    """Every metric of the field that is not in ``metrics`` gets its reason in ``reasons`` (``known``: why an
    extractor or network is unavailable), so a table never silently lacks one."""
    for name in ALL_METRICS:
        if f"recon/{name}" in metrics or f"recon/{name}" in reasons:
            continue
        if name in known:
            reasons[f"recon/{name}"] = known[name]
        elif name not in wanted:
            reasons[f"recon/{name}"] = "not applicable: not selected in evaluate.metrics" + (
                " (needs a keypoint / identity extractor for this dataset's faces or bodies)"
                if name in (*KEYPOINT_METRICS, "aed")
                else ""
            )


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    columns = ["part", "video", "mode", "motion_bin", "frames", MOTION_SIZE]
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


FID_CHUNK = 32  # frames per FID update (the features' sums depend on it, to the bit)


def fid_of_features(real: list[np.ndarray], fake: list[np.ndarray]) -> float:
    """FID of every video's reference (``real``) and generated (``fake``) Inception features (frames, D), in the
    videos' order: torchmetrics' own update and compute, fed chunk by chunk as
    :meth:`cpabanim.evaluation.metric_networks.OptionalNetworkMetrics.update` fed the network, so the value is the
    one a single pass over the videos computes, to the bit."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Replay(torch.nn.Module):
        """A "feature extractor" that hands FID the features stored for each update, in order."""

        def __init__(self, num_features: int) -> None:
            super().__init__()
            self.num_features = num_features
            self.queue: list[torch.Tensor] = []

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.queue.pop(0)

    replay = Replay(int(real[0].shape[1]))
    fid = FrechetInceptionDistance(feature=replay, normalize=True)
    for video_real, video_fake in zip(real, fake):
        for start in range(0, len(video_real), FID_CHUNK):
            chunk = slice(start, start + FID_CHUNK)
            replay.queue = [torch.from_numpy(video_real[chunk]), torch.from_numpy(video_fake[chunk])]
            fid.update(torch.empty(len(video_real[chunk]), 1), real=True)
            fid.update(torch.empty(len(video_fake[chunk]), 1), real=False)
    return float(fid.compute())
