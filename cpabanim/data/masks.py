"""Region label maps of the training frames, for the keypoint semantic loss (the library behind the ``masks``
stage, :mod:`cpabanim.pipeline.masks`).

:func:`extract_masks` writes, per training video: ``<masks_root>/train/<video_id>.npz`` holding ``labels``:
uint8 (T, H, W), frame-aligned with ``<processed_root>/train/<video_id>/``, at the training resolution;
0 = no region, 1..255 = region ids (ids are per frame: region k of frame t and region k of frame t' are
unrelated). ``<masks_root>/meta.json`` records which source made them (``sam`` or ``slic``) and its settings.

- ``sam``: segment-anything's *automatic mask generation* (a grid of ``points_per_side``² point prompts,
  filtered by predicted IoU and stability, then NMS), the same procedure as SAM's reference ``amg.py``.
  Regions are painted largest first, so smaller parts (eyes, mouth, a hand) stay visible on top of the
  large ones (face, body) that contain them. Chosen over fixed grid prompts because it yields a partition
  into semantic parts, which is what a region-consistency loss on keypoints needs.
- ``slic``: scikit-image SLIC superpixels (offline, the embedded default: SAM weights cannot be shipped).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim import weights as weights_registry
from cpabanim.data.video import read_video
from cpabanim.errors import CpabanimError, DataError, MissingWeightsError, first_line
from cpabanim.progress import progress_bar

log = logging.getLogger(__name__)
SAM_WEIGHT_NAMES = {"vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h"}


# ---------------------------------------------------------------------------------------------------------
# label maps


def slic_labels(frames: np.ndarray, n_segments: int = 24, compactness: float = 10.0, sigma: float = 1.0) -> np.ndarray:
    """SLIC superpixels of each frame: ``uint8 (T, H, W, 3)`` -> ``uint8 (T, H, W)`` labels 1..n (0 unused)."""
    from skimage.segmentation import slic

    out = np.zeros(frames.shape[:3], dtype=np.uint8)
    for t, frame in enumerate(frames):
        labels = slic(
            frame, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=1, channel_axis=-1
        )
        out[t] = np.minimum(labels, 255)
    return out


def masks_to_labels(masks: list[dict[str, Any]], shape: tuple[int, int], min_area: float = 0.0) -> np.ndarray:
    """SAM's mask records (``segmentation`` bool (H, W), ``area``) -> ``uint8 (H, W)`` label map.

    Largest regions are painted first and smaller ones over them, so nested parts survive; at most 255
    regions (the largest ones); regions under ``min_area`` (fraction of the frame) are dropped.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    keep = [m for m in masks if m["area"] >= min_area * shape[0] * shape[1]]
    keep = sorted(keep, key=lambda m: -int(m["area"]))[:255]
    for index, mask in enumerate(keep, start=1):
        labels[np.asarray(mask["segmentation"], dtype=bool)] = index
    # renumber 1..k in order of first appearance (row-major): the same masks give the same bytes
    present = [v for v in dict.fromkeys(labels.ravel().tolist()) if v]
    lut = np.zeros(256, dtype=np.uint8)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint8)
    return lut[labels]


def sam_generator(model, cfg: dict[str, Any]):
    """A ``SamAutomaticMaskGenerator`` over ``model`` (a ``segment_anything.modeling.Sam``) with the settings
    ``cfg`` (``masks.sam``)."""
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(
        model,
        points_per_side=cfg["points_per_side"],
        pred_iou_thresh=cfg["pred_iou_thresh"],
        stability_score_thresh=cfg["stability_score_thresh"],
        points_per_batch=64,
    )


def sam_labels(frames: np.ndarray, generator, min_area: float = 0.0) -> np.ndarray:
    """SAM automatic masks of each frame: ``uint8 (T, H, W, 3)`` -> ``uint8 (T, H, W)`` label maps."""
    import torch

    out = np.zeros(frames.shape[:3], dtype=np.uint8)
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            out[t] = masks_to_labels(generator.generate(np.ascontiguousarray(frame)), frame.shape[:2], min_area)
    return out


def sam_checkpoint(sam: Mapping[str, Any], weights_dir: str | Path) -> Path:
    """The SAM checkpoint of ``sam`` (``masks.sam``): its ``checkpoint`` if set, else the official file name of
    its ``model_type`` in ``weights_dir`` (``paths.weights``)."""
    if sam.get("checkpoint"):
        return Path(sam["checkpoint"])
    from cpabanim.data.download import weights_path

    return weights_path(SAM_WEIGHT_NAMES[sam["model_type"]], Path(weights_dir))


def load_sam(sam: Mapping[str, Any], weights_dir: str | Path, device: str = "cpu"):
    """The SAM model of ``sam`` (``masks.sam``), from its checkpoint (see :func:`sam_checkpoint`; device "auto" =
    cuda when available); :class:`MissingWeightsError` saying how to get it, :class:`CpabanimError` for a corrupt
    or unsafe file."""
    name = SAM_WEIGHT_NAMES[sam["model_type"]]
    path = sam_checkpoint(sam, weights_dir)
    if not path.is_file():
        raise MissingWeightsError(
            f"SAM {sam['model_type']} checkpoint not found at {path} (masks.sam.checkpoint, or the official file "
            f"name in paths.weights). Get it with `cpabanim weights {name}` (from "
            f"{weights_registry.SAM_WEIGHTS[name]['url']}, sha256 checked) or copy it there; or set masks.source=slic "
            "for offline superpixels."
        )
    state = read_sam_state(path, name)
    from segment_anything import sam_model_registry

    # built without a checkpoint: segment-anything's own loader calls torch.load without weights_only
    model = sam_model_registry[sam["model_type"]](checkpoint=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CpabanimError(
            f"SAM checkpoint {path} does not fit SAM {sam['model_type']} ({first_line(exc)}); check masks.sam."
            f"model_type, or delete it and run `cpabanim weights {name}`"
        ) from None
    from cpabanim.runtime import resolve_device

    return model.to(resolve_device(device)).eval()


def read_sam_state(path: Path, name: str) -> dict[str, Any]:
    """The state dict of a SAM checkpoint, read with ``weights_only=True``. A file under the official name is
    first checked against the official sha256 (a corrupt download is named with its fix); a file of the
    user's own (``masks.sam.checkpoint``, e.g. fine-tuned) has no known hash and is only loaded safely."""
    from cpabanim.weights import load_weights, safe_torch_load

    if path.name == Path(weights_registry.SAM_WEIGHTS[name]["url"]).name:
        return load_weights(name, path)
    return safe_torch_load(
        path,
        "SAM checkpoint (masks.sam.checkpoint)",
        f"use a segment-anything checkpoint, e.g. `cpabanim weights {name}`",
    )


# ---------------------------------------------------------------------------------------------------------
# storage


def save_labels(path: str | Path, labels: np.ndarray) -> None:
    """Write ``labels`` (uint8 (T, H, W)) as a compressed .npz readable by ``np.load``, byte-stable
    (fixed zip timestamps, unlike ``np.savez_compressed``) and atomic (:func:`cpabanim.files.write_atomically`)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(labels, dtype=np.uint8), allow_pickle=False)
    info = zipfile.ZipInfo("labels.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(info, buffer.getvalue())

    files.write_atomically(path, write)


def extract_masks(
    masks_cfg: Mapping[str, Any],
    processed_root: str | Path,
    masks_root: str | Path,
    weights_dir: str | Path,
    device: str = "cpu",
    sam_model=None,
) -> dict[str, Any]:
    """Label maps for every training video of ``processed_root`` (``{paths.processed}``) into ``masks_root``
    (``{paths.masks}``), as ``masks_cfg`` (the ``masks`` params) says; videos already done are skipped. Returns (and
    writes) ``meta.json``.

    ``weights_dir`` (``paths.weights``) holds the official SAM checkpoint when ``masks.sam.checkpoint`` is empty;
    ``device`` is where SAM runs. ``sam_model`` overrides loading the checkpoint (tests pass a randomly
    initialised SAM).
    """
    source = masks_cfg["source"]
    processed, out = Path(processed_root), Path(masks_root)
    train = processed / "train"
    if not train.is_dir():
        raise DataError(f"{train}: no training frames (run `cpabanim preprocess` first)")
    files.claim_output_folder(out, "cpabanim masks")  # it removes stale masks: never in a folder of the user's
    settings = {"source": source, **({"sam": masks_cfg["sam"]} if source == "sam" else {"slic": masks_cfg["slic"]})}
    if source == "sam":
        settings["checkpoint"] = (
            "random-init (test)" if sam_model is not None else str(sam_checkpoint(masks_cfg["sam"], weights_dir))
        )
    previous = files.read_json(out / "meta.json", corrupt_ok=True)
    if previous.get("settings") != settings:  # other source or settings: nothing done before counts
        previous = {}
    meta = {"source": source, "settings": settings, "videos": {}}
    generator = None
    videos = sorted(p for p in train.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
    for video in progress_bar(videos, desc=f"masks ({source})", unit="video"):
        target = out / "train" / f"{video.name}.npz"
        frames_count = len(list(video.glob("*.png")))
        if target.is_file() and previous.get("videos", {}).get(video.name) == frames_count:
            meta["videos"][video.name] = frames_count
            continue
        frames = read_video(video)
        if source == "slic":
            slic = masks_cfg["slic"]
            labels = slic_labels(frames, slic["n_segments"], slic["compactness"], slic["sigma"])
        else:
            if generator is None:
                model = sam_model if sam_model is not None else load_sam(masks_cfg["sam"], weights_dir, device)
                generator = sam_generator(model, masks_cfg["sam"])
            labels = sam_labels(frames, generator, masks_cfg["sam"]["min_region_area"])
        save_labels(target, labels)
        meta["videos"][video.name] = int(len(frames))
        # meta.json after each video: an interrupted run resumes where it stopped
        files.write_json(out / "meta.json", meta)
    for stale in (out / "train").glob("*.npz") if (out / "train").is_dir() else []:
        if stale.stem not in meta["videos"]:
            stale.unlink()
    files.write_json(out / "meta.json", meta)
    return meta
