"""Stage ``cpabanim evaluate``: the field's metrics on the reconstructions and animations.

Reconstruction (generated frame t vs driving frame t of the same test video), pooled over all frames of all
videos as the pose-evaluation scripts do: ``recon/l1``, ``recon/psnr``, ``recon/ssim``, ``recon/akd``,
``recon/mkr``, ``recon/aed`` (+ ``recon/lpips``, ``recon/fid`` where their weights exist).

Animation (no ground truth exists for a cross-identity animation), per mode
(:mod:`cpabanim.evaluation.animation_metrics`): motion transfer relative to the source left unchanged,
``anim/<mode>/transfer_akd`` and ``anim/<mode>/transfer_motion`` (0 = no better than no motion, 1 = the driving
keypoints reproduced), from ``anim/<mode>/akd_driving`` (keypoints of the animation vs the driving frames) and
``anim/<mode>/akd_motion`` (their motion since frame 0 vs the driving video's); ``anim/<mode>/mkr_driving``
(driving keypoints the animation lost); ``anim/<mode>/aed_source`` (identity of the animation vs the source
image: how well the identity is kept) and ``anim/<mode>/l1_first`` (first animated frame vs the source image:
identity kept, 0 = the source unchanged, which the no-motion baseline wins by construction).

Baselines, on the same frames, so every number can be read against "no motion at all":
``baseline/copy_source/recon/<metric>`` (the prediction of frame t is the source frame 0) and
``baseline/source_unchanged/anim/<metric>`` (every animated frame is the source image; one value for all modes,
as the pairs and frames are the same; its transfer scores are 0 by definition).
:func:`cpabanim.evaluation.baselines.baseline_key` maps a model metric to its baseline.

Writes ``{paths.outputs}/metrics.json`` (flat numbers, for DVC and MLflow), ``metrics_unavailable.json``
(for every metric not computed: why) and ``metrics_per_video.csv``. Extractor results are cached per video by
content hash (``evaluate.cache_dir``), so re-evaluating after a new checkpoint only extracts the new frames.
``evaluate.keypoints: auto`` is resolved from the processed dataset's source
(:func:`cpabanim.evaluation.extractors.resolve_keypoints`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.data.frames import read_frames, to_tensor
from cpabanim.data.layout import split_videos
from cpabanim.errors import DataError
from cpabanim.evaluation import formulas
from cpabanim.evaluation.animation_metrics import evaluate_animation, summarise_transfer
from cpabanim.evaluation.baselines import BASELINE_PREFIX, COPY_SOURCE, SOURCE_UNCHANGED
from cpabanim.evaluation.cache import ExtractionCache
from cpabanim.evaluation.extractors import resolve_keypoints
from cpabanim.evaluation.formulas import KEYPOINT_METRICS, keypoint_metrics
from cpabanim.evaluation.metric_networks import Extractors, OptionalNetworkMetrics
from cpabanim.progress import progress_bar
from cpabanim.runtime import resolve_device

log = logging.getLogger(__name__)

PIXEL_METRICS = ("l1", "psnr", "ssim")
ALL_METRICS = (*PIXEL_METRICS, *KEYPOINT_METRICS, "aed", "lpips", "fid")


def pixel_metrics(generated: torch.Tensor, reference: torch.Tensor, wanted: list[str]) -> dict[str, np.ndarray]:
    """Per-frame L1 / PSNR / SSIM of (T, 3, H, W) in [0, 1], in chunks (SSIM's memory grows with T)."""
    functions = {"l1": formulas.l1_per_frame, "psnr": formulas.psnr_per_frame, "ssim": formulas.ssim_per_frame}
    out = {}
    for name in wanted:
        if name in functions:
            out[name] = (
                torch.cat([functions[name](g, r) for g, r in zip(generated.split(32), reference.split(32))])
                .double()
                .numpy()
            )
    return out


def evaluate_reconstruction(
    recon_root: Path, tests: dict[str, Path], wanted, extractors, networks, rows
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-frame values of every reconstruction metric and of the copy-source baseline on the same frames,
    concatenated over videos; one CSV row per video (the baseline's values as ``baseline_<metric>`` columns)."""
    index_path = recon_root / "index.json"
    if not index_path.is_file():
        raise DataError(f"{index_path} not found: run `cpabanim reconstruct` first")
    index = json.loads(index_path.read_text())
    per_frame: dict[str, list[np.ndarray]] = defaultdict(list)
    baseline: dict[str, list[np.ndarray]] = defaultdict(list)
    for video in progress_bar(sorted(index["videos"]), desc="evaluate reconstruction", unit="video"):
        generated = read_frames(recon_root / video)
        if video not in tests:
            raise DataError(f"reconstruction of {video}: the test split has no such video (run `cpabanim reconstruct`)")
        reference = read_frames(tests[video])
        # Frames are matched by video name and index, as pose-evaluation does; every generated frame needs its
        # driving frame (reconstruct.max_frames may have shortened the generated video, never lengthened it).
        if len(generated) > len(reference) or generated.shape[1:] != reference.shape[1:]:
            raise DataError(
                f"reconstruction of {video}: {generated.shape} does not match the test video {reference.shape}"
            )
        reference = reference[: len(generated)]
        values = video_metrics(generated, reference, wanted, extractors, networks)
        copied = copy_source_metrics(reference, wanted, extractors)
        for name, frame_values in values.items():
            per_frame[name].append(frame_values)
        for name, frame_values in copied.items():
            baseline[name].append(frame_values)
        rows.append(
            {
                "part": "reconstruction",
                "video": video,
                "mode": "",
                "frames": len(generated),
                **{name: formulas.nanmean(v) for name, v in values.items()},
                **{f"baseline_{name}": formulas.nanmean(v) for name, v in copied.items()},
            }
        )
    return (
        {name: np.concatenate(parts) for name, parts in per_frame.items()},
        {name: np.concatenate(parts) for name, parts in baseline.items()},
    )


def copy_source_metrics(reference: np.ndarray, wanted, extractors) -> dict[str, np.ndarray]:
    """Per-frame metrics of the no-motion baseline: the prediction of every frame of ``reference`` (T, H, W, 3)
    is its frame 0. Keypoints and embeddings are row 0 of the reference's own (extraction is per frame), so the
    baseline costs no extraction beyond the one the model's evaluation already cached."""
    copied = np.repeat(reference[:1], len(reference), axis=0)
    values = pixel_metrics(to_tensor(copied), to_tensor(reference), wanted)
    keypoints = extractors.keypoints_of(reference)
    if keypoints is not None:
        values.update(keypoint_metrics(np.repeat(keypoints[:1], len(keypoints), axis=0), keypoints, wanted))
    identity = extractors.identity_of(reference)
    if identity is not None:
        values["aed"] = formulas.embedding_distance_per_frame(np.repeat(identity[:1], len(identity), axis=0), identity)
    return values


def video_metrics(generated: np.ndarray, reference: np.ndarray, wanted, extractors, networks) -> dict[str, np.ndarray]:
    """Per-frame metrics of generated vs reference uint8 (T, H, W, 3) videos."""
    generated_t, reference_t = to_tensor(generated), to_tensor(reference)
    values = pixel_metrics(generated_t, reference_t, wanted)
    values.update(networks.update(generated_t, reference_t))
    keypoints_generated = extractors.keypoints_of(generated)
    if keypoints_generated is not None:
        values.update(keypoint_metrics(keypoints_generated, extractors.keypoints_of(reference), wanted))
    identity_generated = extractors.identity_of(generated)
    if identity_generated is not None:
        values["aed"] = formulas.embedding_distance_per_frame(identity_generated, extractors.identity_of(reference))
    return values


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


def evaluate_all(
    *,
    processed: Path,
    reconstruction: Path,
    animation: Path,
    metrics_json: Path,
    unavailable_json: Path,
    per_video_csv: Path,
    metrics: list[str],
    keypoints: str,
    identity: str,
    extractor_options: dict[str, Any],
    cache: bool,
    cache_dir: str | None,
    device: str,
) -> dict[str, float]:
    """Score ``reconstruction`` and ``animation`` against the test videos of ``processed``; writes the metrics
    (``metrics_json``), why each other metric is missing (``unavailable_json``) and one row per video and mode
    (``per_video_csv``); returns the metrics.

    ``metrics``: the metrics to compute (``l1``, ``psnr``, ``ssim``, ``akd``, ``mkr``, ``aed``, ``lpips``, ``fid``);
    ``keypoints``, ``identity``: the extractors' names (``keypoints`` may be ``auto``: chosen from the processed
    dataset's source, AKD/MKR not applicable where it has none), ``extractor_options`` their settings; ``cache``:
    reuse extractor results by content hash, in ``cache_dir`` (None: ``.eval_cache`` beside ``metrics_json``).
    """
    torch_device = resolve_device(device)
    cache_folder = cache_dir or metrics_json.parent / ".eval_cache"
    extraction_cache = ExtractionCache(cache_folder if cache else None)
    keypoints, not_applicable = resolve_keypoints(keypoints, processed)
    known = {name: not_applicable for name in KEYPOINT_METRICS if not_applicable and name in metrics}
    extractor_metrics = [name for name in metrics if name not in known]
    extractors = Extractors(extractor_metrics, keypoints, identity, extractor_options, torch_device, extraction_cache)
    networks = OptionalNetworkMetrics(metrics)

    rows: list[dict[str, Any]] = []
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    tests = split_videos(processed, "test")  # name -> the test video's file
    recon, copy_source = evaluate_reconstruction(reconstruction, tests, metrics, extractors, networks, rows)
    summarise(recon, "recon", values, reasons)
    summarise(copy_source, f"{BASELINE_PREFIX}{COPY_SOURCE}/recon", values, reasons)
    values["recon/frames"] = float(sum(row["frames"] for row in rows if row["part"] == "reconstruction"))
    fid = networks.fid_value()
    if fid is not None:
        values["recon/fid"] = fid
    per_mode, unchanged = evaluate_animation(animation, tests, metrics, extractors, rows)
    for mode, mode_values in per_mode.items():
        summarise(mode_values, f"anim/{mode}", values, reasons)
    summarise(unchanged, f"{BASELINE_PREFIX}{SOURCE_UNCHANGED}/anim", values, reasons)
    summarise_transfer(per_mode, unchanged, values, reasons)
    explain_missing(values, reasons, {**known, **extractors.reasons, **networks.reasons}, metrics)

    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    metrics_json.write_text(json.dumps(dict(sorted(values.items())), indent=2) + "\n")
    unavailable_json.write_text(json.dumps(dict(sorted(reasons.items())), indent=2) + "\n")
    write_table(rows, per_video_csv)

    from cpabanim.tracking import log_artifact, log_metrics

    log_metrics(values)
    for path in (metrics_json, unavailable_json, per_video_csv):
        log_artifact(path, "evaluation")
    log.info(
        "metrics (%d extractor results reused from the cache, %d computed): %s",
        extraction_cache.hits,
        extraction_cache.misses,
        ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())),
    )
    return values


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
    columns = ["part", "video", "mode", "frames"]
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
