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
content hash (``evaluate.cache_dir``, shared by every run), so re-evaluating after a new checkpoint only extracts
the new frames, and the test videos' frames are extracted once for every experiment and seed.
``evaluate.keypoints: auto`` is resolved from the processed dataset's source
(:func:`cpabanim.evaluation.extractors.resolve_keypoints`).

Sharded (``evaluate.shards``; docs/evaluation.md, "Shards and resume"):
:func:`cpabanim.evaluation.shards.evaluate_shard` stores the per-frame values of each test video and of each pair
its video drives, and :func:`cpabanim.evaluation.gather.gather_evaluation` pools them in the order of one pass
over every video; :func:`cpabanim.evaluation.gather.evaluate_all` runs every shard, then the gather.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from cpabanim.data.frames import read_frames, to_tensor
from cpabanim.errors import DataError
from cpabanim.evaluation import formulas
from cpabanim.evaluation.formulas import keypoint_metrics

log = logging.getLogger(__name__)


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


def read_reconstruction(recon_root: Path, video: str, tests: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The reconstruction of ``video`` and its driving frames (uint8 (T, H, W, 3) each), checked to match."""
    generated = read_frames(recon_root / video)
    if video not in tests:
        raise DataError(f"reconstruction of {video}: the test split has no such video (run `cpabanim reconstruct`)")
    reference = read_frames(tests[video])
    # Frames are matched by video name and index, as pose-evaluation does; every generated frame needs its
    # driving frame (reconstruct.max_frames may have shortened the generated video, never lengthened it).
    if len(generated) > len(reference) or generated.shape[1:] != reference.shape[1:]:
        raise DataError(f"reconstruction of {video}: {generated.shape} does not match the test video {reference.shape}")
    return generated, reference[: len(generated)]


def copy_source_metrics(reference: np.ndarray, wanted, extractors) -> dict[str, np.ndarray]:
    """Per-frame metrics of the no-motion baseline: the prediction of every frame of ``reference`` (T, H, W, 3)
    is its frame 0. Keypoints and embeddings are row 0 of the reference's own (extraction is per frame), so the
    baseline costs no extraction beyond the one the model's evaluation already cached."""
    copied = np.repeat(reference[:1], len(reference), axis=0)
    values = pixel_metrics(to_tensor(copied), to_tensor(reference), wanted)
    keypoints = extractors.keypoints_of(reference, "reference")
    if keypoints is not None:
        values.update(keypoint_metrics(np.repeat(keypoints[:1], len(keypoints), axis=0), keypoints, wanted))
    identity = extractors.identity_of(reference, "reference")
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
        values.update(keypoint_metrics(keypoints_generated, extractors.keypoints_of(reference, "reference"), wanted))
    identity_generated = extractors.identity_of(generated)
    if identity_generated is not None:
        reference_identity = extractors.identity_of(reference, "reference")
        values["aed"] = formulas.embedding_distance_per_frame(identity_generated, reference_identity)
    return values
