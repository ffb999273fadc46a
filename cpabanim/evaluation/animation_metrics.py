"""The animation part of ``cpabanim evaluate``: per-frame metrics of every animated pair and mode, the
source-unchanged baseline on the same pairs, and the motion-transfer scores relative to that baseline.

Contract: per-frame values are ``{metric: (frames,)}`` with NaN where a metric is undefined; the model's and the
baseline's arrays of a pair cover the same driving frames in the same order, so they can be compared frame by
frame after concatenation over pairs. Names are those of docs/evaluation.md:

- ``l1_first``, ``akd_driving``, ``mkr_driving``, ``aed_source`` (as before), ``akd_motion`` (AKD of the motion
  since frame 0, :func:`~cpabanim.evaluation.formulas.motion_distance_per_frame`);
- ``transfer_akd`` / ``transfer_motion``: ``1 - akd_driving / baseline akd_driving`` and the same for
  ``akd_motion`` (:func:`~cpabanim.evaluation.formulas.transfer_score`): 0 = no better than the source left
  still, 1 = the driving keypoints reproduced. MKR has no transfer score: the still source loses no keypoint,
  so its MKR is 0 (or near) and a ratio to it means nothing; read ``mkr_driving`` beside the transfer scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.data.frames import read_frames, read_still, to_tensor
from cpabanim.errors import DataError
from cpabanim.evaluation import formulas
from cpabanim.evaluation.formulas import keypoint_metrics


def driving_keypoint_metrics(keypoints: np.ndarray, driving: np.ndarray, wanted) -> dict[str, np.ndarray]:
    """``akd_driving`` / ``mkr_driving`` (those in ``wanted``) and, with AKD, ``akd_motion`` of an animation's
    keypoints (T, K, 2) against the driving video's (T, K, 2)."""
    values = keypoint_metrics(keypoints, driving, wanted, "_driving")
    if "akd" in wanted:
        values["akd_motion"] = formulas.motion_distance_per_frame(keypoints, driving)
    return values


def source_unchanged_metrics(source: np.ndarray, driving: np.ndarray, wanted, extractors) -> dict[str, np.ndarray]:
    """Per-frame animation metrics of the no-motion baseline: every animated frame is ``source`` (1, H, W, 3).

    ``l1_first`` and ``aed_source`` are 0 by construction (the bound a model can approach while keeping the
    source); ``akd_driving`` / ``mkr_driving`` say how far the driving pose is from the source's, ``akd_motion``
    how far the driving video moves from its first frame."""
    frames = len(driving)
    values: dict[str, np.ndarray] = {}
    if "l1" in wanted:
        values["l1_first"] = np.zeros(1)
    keypoints_source = extractors.keypoints_of(source, "reference")
    if keypoints_source is not None:
        still = np.repeat(keypoints_source, frames, axis=0)
        values.update(driving_keypoint_metrics(still, extractors.keypoints_of(driving, "reference"), wanted))
    identity_source = extractors.identity_of(source, "reference")
    if identity_source is not None:
        values["aed_source"] = formulas.embedding_distance_per_frame(identity_source, identity_source)
    return values


def animated_metrics(
    generated: np.ndarray, source: np.ndarray, driving: np.ndarray, wanted, extractors
) -> dict[str, np.ndarray]:
    """Per-frame metrics of one animation ``generated`` (T, H, W, 3) of ``source`` (1, H, W, 3) by ``driving``."""
    values: dict[str, np.ndarray] = {}
    if "l1" in wanted:
        values["l1_first"] = formulas.l1_per_frame(to_tensor(generated[:1]), to_tensor(source)).double().numpy()
    keypoints_generated = extractors.keypoints_of(generated)
    if keypoints_generated is not None:
        reference = extractors.keypoints_of(driving, "reference")
        values.update(driving_keypoint_metrics(keypoints_generated, reference, wanted))
    identity_generated = extractors.identity_of(generated)
    if identity_generated is not None:
        reference = extractors.identity_of(source, "reference")
        values["aed_source"] = formulas.embedding_distance_per_frame(identity_generated, reference)
    return values


def read_pair(anim_root: Path, pair: dict[str, Any], modes: list[str], tests: dict[str, Path]) -> dict[str, np.ndarray]:
    """The frames of one animated pair: ``source`` (1, H, W, 3), ``driving`` (its first ``pair["frames"]``) and
    each mode's animation, checked against the driving frames."""
    folder = anim_root / pair["name"]
    frames = {"source": read_still(folder / "source.png")}
    if pair["driving"] not in tests:
        raise DataError(f"animation {pair['name']}: the test split has no video {pair['driving']!r}")
    frames["driving"] = read_frames(tests[pair["driving"]])[: pair["frames"]]
    for mode in modes:
        frames[mode] = read_frames(folder / mode)
        if frames[mode].shape != frames["driving"].shape:
            raise DataError(
                f"animation {pair['name']}/{mode}: {frames[mode].shape} vs driving {frames['driving'].shape}"
            )
    return frames


def pair_metrics(
    frames: dict[str, np.ndarray], modes: list[str], wanted, extractors
) -> dict[str, dict[str, np.ndarray]]:
    """Per-frame values of one pair (:func:`read_pair`'s ``frames``): the source-unchanged baseline's under
    ``"unchanged"``, each mode's under its name."""
    source, driving = frames["source"], frames["driving"]
    values = {"unchanged": source_unchanged_metrics(source, driving, wanted, extractors)}
    for mode in modes:
        values[mode] = animated_metrics(frames[mode], source, driving, wanted, extractors)
    return values
