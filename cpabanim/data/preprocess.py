"""Raw videos -> a dataset of frame archives, in shards (the library behind the ``preprocess`` stage,
:mod:`cpabanim.pipeline.preprocess`; docs/data.md, "Storage" and "Shards")::

    <processed>/shards/<kkk>/<split>/<video>.zip   one file per video: its square data.frame_size RGB PNG frames
    <processed>/shards/<kkk>/done.json              shard k's record, written when the shard is whole
    <processed>/manifest.json                       the index: each video's split, file, frame count and sha256,
                                                    and every input that was skipped, with the reason
    <processed>/names.json                          the dataset's own name of every video whose name was made safe

A video's shard is a hash of its source's name (:func:`cpabanim.data.layout.shard_of`); each shard is its own job
(:func:`preprocess_shard`: Snakemake wildcards, DVC ``foreach`` stages, SLURM jobs) and :func:`gather` writes the
index from the shards' records. **Resume**: each archive is written whole or not at all, and carries the digest of
the config that made it, so a killed, requeued or retried shard redoes only the video it was writing. 1 shard and N
shards give the same archives, byte for byte. Same params -> same bytes; a video that cannot be used is skipped and
recorded, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.data import archive, layout, names
from cpabanim.data.listing import Item, has_own_split, list_items, test_count
from cpabanim.errors import DataError
from cpabanim.progress import progress_bar

log = logging.getLogger(__name__)
SPLITS = layout.SPLITS
OWNER = "cpabanim preprocess"
INDEX_FILES = (layout.MANIFEST, names.NAMES_FILE, files.OWNER_FILE)  # what the gather writes beside the shards


def video_config(data: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """What defines the processed videos: the ``data`` keys of :data:`cpabanim.data.layout.VIDEO_KEYS` (not how the
    work is split, nor what only training reads), and the synthetic seed."""
    return {"data": {k: data[k] for k in layout.VIDEO_KEYS}, "seed": seed}


def digest_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def preprocess(data: Mapping[str, Any], seed: int, raw_root: str | Path, processed_root: str | Path) -> dict[str, Any]:
    """Every shard of ``data`` (the ``data`` params; ``seed``: the synthetic source's; ``raw_root``: ``{paths.raw}``),
    one after the other, then :func:`gather`: what ``cpabanim preprocess`` does without ``--shard``. Returns the
    manifest."""
    for shard in range(int(data["shards"])):
        preprocess_shard(data, seed, raw_root, processed_root, shard)
    return gather(data, seed, processed_root)


def preprocess_shard(
    data: Mapping[str, Any], seed: int, raw_root: str | Path, processed_root: str | Path, shard: int
) -> dict[str, Any]:
    """Write the videos of shard ``shard`` (of ``data.shards``) into ``<processed_root>/shards/<kkk>/`` and its record
    ``done.json`` last; an archive already there for the same config is kept as it is. Returns the record."""
    count = int(data["shards"])
    layout.check_shard(shard, count, "data.shards")
    # listed first: a source that cannot be listed (bad metadata) writes nothing
    items = list(list_items(data, seed, raw_root, keep=lambda key: layout.shard_of(key, count) == shard))
    folder = layout.claim_shard_folder(processed_root, shard, INDEX_FILES, OWNER)
    (folder / layout.SHARD_MARKER).unlink(missing_ok=True)  # not done until this run writes it again
    config = video_config(data, seed)
    made_by = digest_of(config)
    record: dict[str, Any] = {"config": config, "shards": count, "videos": [], "skipped": []}
    holders: dict[tuple[str, str], str] = {}  # (split, safe name) -> the dataset's name of the video stored there
    for item in progress_bar(items, desc=f"preprocess shard {shard}/{count}", unit="video"):
        try:  # one safe file name, never a path outside the shard's folder
            video_id = names.safe_name(item.name)
            holder = holders.setdefault((item.split, video_id), item.name)
            if holder != item.name:
                raise DataError(f"{item.name!r} and {holder!r} have the same safe name {video_id!r}: rename one")
            path = files.contained_path(folder, item.split, video_id + archive.SUFFIX)
            entry = stored_video(item, path, made_by)
        except DataError as err:
            skip(record, item, err)
            continue
        entry.update(position=item.position, split=item.split, name=video_id, original=item.name, key=item.key)
        entry["file"] = str(path.relative_to(processed_root))
        record["videos"].append(entry)
    remove_stale(folder, {Path(processed_root) / e["file"] for e in record["videos"]})
    files.write_json(folder / layout.SHARD_MARKER, record)
    log.info(
        "preprocess shard %d/%d: %d videos, %d skipped", shard, count, len(record["videos"]), len(record["skipped"])
    )
    return record


def stored_video(item: Item, path: Path, made_by: str) -> dict[str, Any]:
    """``{"frames", "sha256"}`` of the archive of ``item`` at ``path``: the one there when the same config made it
    (a resumed shard), else the frames read and written now. ``sha256``: of the PNG frames in order."""
    kept = archive.read_record(path)
    if kept and kept.get("made_by") == made_by and kept.get("name") == item.name:
        return {"frames": kept["frames"], "sha256": kept["sha256"]}
    frames = item.read()
    if len(frames) < 2:
        raise DataError(f"{item.name}: fewer than two frames")
    members = frames if isinstance(frames, list) else [archive.encode_png(f) for f in np.asarray(frames)]
    digest = hashlib.sha256()
    for member in members:
        digest.update(hashlib.sha256(member).digest())
    entry = {"frames": len(members), "sha256": digest.hexdigest()}
    archive.write_archive(path, members, {"made_by": made_by, "name": item.name, **entry})
    return entry


def remove_stale(folder: Path, kept: set[Path]) -> None:
    """Remove what an earlier run left in a shard's folder that this one did not make: archives of another config or
    shard count, temporary files of a killed write."""
    for split in SPLITS:
        for path in (folder / split).iterdir() if (folder / split).is_dir() else []:
            if path not in kept:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def gather(data: Mapping[str, Any], seed: int, processed_root: str | Path) -> dict[str, Any]:
    """Write ``manifest.json`` (the index) and ``names.json`` from the records of every shard, each of which must be
    done for the same params. A folder of the user's videos without its own split is split here, among the videos
    that could be used. Returns the manifest."""
    out, count, config = Path(processed_root), int(data["shards"]), video_config(data, seed)
    files.check_output_folder(out, own=lambda name: name in (layout.SHARDS_FOLDER, *INDEX_FILES))
    records = [layout.read_shard_record(out, k, count, config, "preprocess") for k in range(count)]
    entries = sorted((e for r in records for e in r["videos"]), key=lambda e: e["position"])
    manifest: dict[str, Any] = {
        "source": data["source"],
        "frame_size": data["frame_size"],
        "config": config,
        "shards": count,
        "videos": {s: {} for s in SPLITS},
        "skipped": sorted((s for r in records for s in r["skipped"]), key=lambda s: s["position"]),
    }
    originals: dict[str, str] = {}  # safe name -> the dataset's name, over both splits
    for entry in entries:
        name, split = entry["name"], entry["split"]
        try:
            check_unique(
                name, entry["original"], originals.get(name, entry["original"]), name in manifest["videos"][split]
            )
        except DataError as err:
            manifest["skipped"].append({"position": entry["position"], "split": split, "video": entry["original"]})
            manifest["skipped"][-1]["reason"] = str(err)
            continue
        originals[name] = entry["original"]
        manifest["videos"][split][name] = {k: entry[k] for k in ("frames", "sha256", "file")}
    if data["source"] == "folder" and not has_own_split(Path(data["folder"]["dir"])):
        order = [e["name"] for e in entries if e["name"] in originals]
        resplit_usable(manifest, order, data["folder"]["test_fraction"], {e["name"]: e["key"] for e in entries})
    for split in SPLITS:  # by name: the index's bytes do not depend on the listing or the shards' order
        manifest["videos"][split] = dict(sorted(manifest["videos"][split].items()))
    remove_other_layouts(out, count)
    names.write_record(out, originals)
    files.write_json(out / layout.MANIFEST, manifest)
    if not manifest["videos"]["train"] or not manifest["videos"]["test"]:
        raise DataError(
            f"preprocess produced no {'train' if not manifest['videos']['train'] else 'test'} videos "
            f"(see {out / layout.MANIFEST} for what was skipped and why)"
        )
    return manifest


def remove_other_layouts(out: Path, count: int) -> None:
    """Shards beyond ``count`` (an earlier, larger ``data.shards``) and the frame folders of cpabanim before
    archives (``train/``, ``test/``): their videos would otherwise sit beside the dataset, unindexed."""
    shards = out / layout.SHARDS_FOLDER
    for folder in shards.iterdir() if shards.is_dir() else []:
        if not folder.name.isdigit() or int(folder.name) >= count:
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    for split in SPLITS:
        if (out / split).is_dir():
            shutil.rmtree(out / split)


def resplit_usable(
    manifest: dict[str, Any], order: list[str], test_fraction: float, clip_of: Mapping[str, str]
) -> None:
    """Split a folder of the user's videos among those that could be used: the last ``test_fraction`` of its
    clips (in ``order``, the listing's order of the usable videos; ``clip_of``: video name -> the clip it was cut
    from) become the test split, in the index only (the archives stay where their shard wrote them); the segments
    of one clip stay in one split. Decided after decoding, so an unreadable, too short or faceless video at the end
    of the list does not leave test empty."""
    clips = list(dict.fromkeys(clip_of[name] for name in order))
    if len(clips) < 2:
        return
    test_clips = set(clips[len(clips) - test_count(len(clips), test_fraction) :])
    for name in order:
        wanted = "test" if clip_of[name] in test_clips else "train"
        other = "train" if wanted == "test" else "test"
        if name in manifest["videos"][other]:
            manifest["videos"][wanted][name] = manifest["videos"][other].pop(name)
            log.info("%s goes to %s: the split is taken among the videos that could be used", name, wanted)


def check_unique(video_id: str, original: str, holder: str, in_split: bool) -> None:
    """A :class:`DataError` unless ``video_id``, the safe name of ``original``, leads back to that one video: not
    when ``holder``, the dataset's name of the video already named ``video_id`` (``original`` if none), is another
    name, nor when ``in_split`` (its split has a video of that name already: ``a.mp4`` and ``a.gif``)."""
    if holder != original:
        raise DataError(
            f"{original!r} and {holder!r} have the same safe name {video_id!r} (docs/data.md, Names): rename one"
        )
    if in_split:
        raise DataError(f"{original!r}: its split has another video named {video_id!r}: rename one")


def skip(record: dict[str, Any], item: Item, err: DataError) -> None:
    """Record a video that cannot be used under the dataset's own name (the file or id the user must fix)."""
    log.warning("skipping %s", err)
    record["skipped"].append({"position": item.position, "split": item.split, "video": item.name, "reason": str(err)})
