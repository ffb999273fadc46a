"""Region label maps of the training frames, for the keypoint semantic loss (the library behind the ``masks``
stage, :mod:`cpabanim.pipeline.masks`).

:func:`extract_masks` writes, per training video, the label maps uint8 (T, H, W) as a frame archive of grayscale
PNGs (:mod:`cpabanim.data.archive`: per-frame access), ``<masks_root>/shards/<kkk>/<video_id>.zip``, frame-aligned
with the processed video, at the training resolution; 0 = no region, 1..255 = region ids (ids are per frame: region
k of frame t and region k of frame t' are unrelated). Sharded like preprocess (``masks.shards`` jobs, then a
gather): ``<masks_root>/meta.json`` is the index, with the source that made them (``sam`` or ``slic``), its
settings, and each video's file.

- ``sam``: segment-anything's *automatic mask generation* (a grid of ``points_per_side``² point prompts,
  filtered by predicted IoU and stability, then NMS), the same procedure as SAM's reference ``amg.py``.
  Regions are painted largest first, so smaller parts (eyes, mouth, a hand) stay visible on top of the
  large ones (face, body) that contain them. Chosen over fixed grid prompts because it yields a partition
  into semantic parts, which is what a region-consistency loss on keypoints needs.
- ``slic``: scikit-image SLIC superpixels (offline, the embedded default: SAM weights cannot be shipped).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim import weights as weights_registry
from cpabanim.data.labels import MASKS_INDEX
from cpabanim.data.video import frame_count, read_video
from cpabanim.errors import CpabanimError, MissingWeightsError, first_line
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


def sam_labels(frames: np.ndarray, generator, min_area: float = 0.0, batch: int = 1) -> np.ndarray:
    """SAM automatic masks of each frame: ``uint8 (T, H, W, 3)`` -> ``uint8 (T, H, W)`` label maps.

    The image encoder (most of SAM's time) runs on ``batch`` frames at once; each frame's masks then come from its
    own embedding, through segment-anything's own generator (its prompts, filters and NMS), unchanged."""
    import torch

    predictor = generator.predictor
    model = predictor.model
    out = np.zeros(frames.shape[:3], dtype=np.uint8)
    with torch.inference_mode():
        for first in range(0, len(frames), batch):
            chunk = frames[first : first + batch]
            inputs = [torch.as_tensor(predictor.transform.apply_image(f), device=predictor.device) for f in chunk]
            stacked = torch.stack([x.permute(2, 0, 1) for x in inputs])  # every frame of a video has one size
            features = model.image_encoder(model.preprocess(stacked))
            for offset, frame in enumerate(chunk):
                with precomputed_embedding(predictor, features[offset : offset + 1], tuple(stacked.shape[-2:])):
                    masks = generator.generate(np.ascontiguousarray(frame))
                out[first + offset] = masks_to_labels(masks, frame.shape[:2], min_area)
    return out


@contextlib.contextmanager
def precomputed_embedding(predictor, features, input_size: tuple[int, int]):
    """While inside, the predictor's ``set_image`` installs ``features`` (the frame's embedding, computed in a batch)
    instead of running the image encoder on the frame again: the generator calls it once per frame (one crop layer,
    the whole frame)."""

    def install(image: np.ndarray, image_format: str = "RGB") -> None:
        predictor.reset_image()
        predictor.original_size, predictor.input_size = image.shape[:2], input_size
        predictor.features, predictor.is_image_set = features, True

    predictor.set_image = install
    try:
        yield
    finally:
        del predictor.set_image  # the class's own again


def sam_checkpoint(sam: Mapping[str, Any], weights_dir: str | Path) -> Path:
    """The SAM checkpoint of ``sam`` (``masks.sam``): its ``checkpoint`` if set, else the official file name of
    its ``model_type`` in ``weights_dir`` (``paths.weights``)."""
    if sam.get("checkpoint"):
        return Path(sam["checkpoint"])
    return weights_registry.sam_weights_path(SAM_WEIGHT_NAMES[sam["model_type"]], weights_dir)


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


OWNER = "cpabanim masks"


def mask_settings(masks_cfg: Mapping[str, Any], weights_dir: str | Path, sam_model=None) -> dict[str, Any]:
    """What defines the label maps: the source and its settings (for SAM, which checkpoint)."""
    source = masks_cfg["source"]
    settings = {"source": source, **({"sam": masks_cfg["sam"]} if source == "sam" else {"slic": masks_cfg["slic"]})}
    settings["every"] = masks_cfg["every"]
    if source == "sam":
        settings["checkpoint"] = (
            "random-init (test)" if sam_model is not None else str(sam_checkpoint(masks_cfg["sam"], weights_dir))
        )
    return settings


def extract_masks(
    masks_cfg: Mapping[str, Any],
    processed_root: str | Path,
    masks_root: str | Path,
    weights_dir: str | Path,
    device: str = "cpu",
    sam_model=None,
) -> dict[str, Any]:
    """Every shard of the masks (:func:`extract_masks_shard`), then :func:`gather_masks`: ``cpabanim masks`` without
    ``--shard``. Returns the index."""
    for shard in range(int(masks_cfg["shards"])):
        extract_masks_shard(masks_cfg, processed_root, masks_root, weights_dir, shard, device, sam_model)
    return gather_masks(masks_cfg, masks_root, weights_dir, sam_model)


def extract_masks_shard(
    masks_cfg: Mapping[str, Any],
    processed_root: str | Path,
    masks_root: str | Path,
    weights_dir: str | Path,
    shard: int,
    device: str = "cpu",
    sam_model=None,
) -> dict[str, Any]:
    """Label maps of the training videos of ``processed_root`` (``{paths.processed}``) whose names hash to ``shard``
    (of ``masks.shards``), as ``masks_cfg`` (the ``masks`` params) says: one archive of label PNGs per video in
    ``<masks_root>/shards/<kkk>/`` and the shard's record last. A video's archive made for the same settings and the
    same frames is kept (a resumed shard redoes only the video it was on). ``weights_dir`` (``paths.weights``) holds
    the official SAM checkpoint when ``masks.sam.checkpoint`` is empty; ``device``: where SAM runs; ``sam_model``
    overrides loading it (tests pass a randomly initialised SAM)."""
    from cpabanim.data import archive, layout

    count = int(masks_cfg["shards"])
    layout.check_shard(shard, count, "masks.shards")
    videos = layout.split_videos(processed_root, "train")
    sources = processed_sources(processed_root)
    folder = layout.claim_shard_folder(masks_root, shard, (MASKS_INDEX,), OWNER)
    (folder / layout.SHARD_MARKER).unlink(missing_ok=True)  # not done until this run writes it again
    settings = mask_settings(masks_cfg, weights_dir, sam_model)
    record: dict[str, Any] = {"config": settings, "shards": count, "videos": {}}
    generator = None
    mine = [name for name in videos if layout.shard_of(name, count) == shard]
    for name in progress_bar(mine, desc=f"masks ({settings['source']}) shard {shard}/{count}", unit="video"):
        target = files.contained_path(folder, name + archive.SUFFIX)
        # the video's frames as its index records them (a dataset laid out by hand: its frame count)
        source = sources.get(name) or f"{frame_count(videos[name])} frames"
        made_by = hashlib.sha256(json.dumps([settings, source], sort_keys=True).encode()).hexdigest()
        kept = archive.read_record(target)
        if not (kept and kept.get("made_by") == made_by):
            frames = read_video(videos[name])
            every = int(masks_cfg["every"])  # masks of frames 0, k, 2k...: training uses the nearest
            if settings["source"] == "slic":
                slic = masks_cfg["slic"]
                labels = slic_labels(frames[::every], slic["n_segments"], slic["compactness"], slic["sigma"])
            else:
                if generator is None:
                    model = sam_model if sam_model is not None else load_sam(masks_cfg["sam"], weights_dir, device)
                    generator = sam_generator(model, masks_cfg["sam"])
                min_area, batch = masks_cfg["sam"]["min_region_area"], int(masks_cfg["batch_frames"])
                labels = sam_labels(frames[::every], generator, min_area, batch)
            members = [archive.encode_png(frame) for frame in labels]
            archive.write_archive(target, members, {"made_by": made_by, "frames": len(frames), "every": every})
            kept = {"frames": len(frames)}
        record["videos"][name] = {"frames": int(kept["frames"]), "file": str(target.relative_to(masks_root))}
    for stale in folder.iterdir():
        if stale.name not in (files.OWNER_FILE, *(Path(v["file"]).name for v in record["videos"].values())):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    files.write_json(folder / layout.SHARD_MARKER, record)
    return record


def processed_sources(processed_root: str | Path) -> dict[str, str]:
    """``{training video: the sha256 of its frames}`` from the processed index (empty for a dataset without one):
    a video whose frames changed gets new masks."""
    from cpabanim.data import layout

    index = files.read_json(Path(processed_root) / layout.MANIFEST, corrupt_ok=True)
    return {name: entry.get("sha256", "") for name, entry in ((index.get("videos") or {}).get("train") or {}).items()}


def gather_masks(
    masks_cfg: Mapping[str, Any], masks_root: str | Path, weights_dir: str | Path, sam_model=None
) -> dict[str, Any]:
    """Write ``<masks_root>/meta.json``, the masks' index (source, settings, each training video's archive and frame
    count), from the records of every shard, each of which must be done for the same settings."""
    from cpabanim.data import layout

    out, count = Path(masks_root), int(masks_cfg["shards"])
    files.check_output_folder(out, own=lambda name: name in (layout.SHARDS_FOLDER, MASKS_INDEX, files.OWNER_FILE))
    settings = mask_settings(masks_cfg, weights_dir, sam_model)
    records = [layout.read_shard_record(out, k, count, settings, "masks") for k in range(count)]
    videos = {name: entry for record in records for name, entry in record["videos"].items()}
    shards = out / layout.SHARDS_FOLDER
    for stale in shards.iterdir() if shards.is_dir() else []:  # an earlier, larger masks.shards
        if not stale.name.isdigit() or int(stale.name) >= count:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if (out / "train").is_dir():  # the one-file-per-video .npz layout of cpabanim before archives
        shutil.rmtree(out / "train")
    meta = {
        "source": settings["source"],
        "settings": settings,
        "shards": count,
        "videos": {"train": dict(sorted(videos.items()))},
    }
    files.write_json(out / MASKS_INDEX, meta)
    return meta
