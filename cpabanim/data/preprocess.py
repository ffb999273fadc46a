"""Raw videos -> ``<processed_root>/{train,test}/<video_id>/<00000>.png`` (the library behind the ``preprocess``
stage, :mod:`cpabanim.pipeline.preprocess`).

Frames are square ``data.frame_size`` RGB PNGs, written deterministically (same params -> same bytes),
with ``<processed_root>/manifest.json`` listing every video (frame count, pixel sha256) and every skipped
input with its reason. A video that cannot be used is skipped and recorded, never fatal. Every video is
written under the safe form of the dataset's name (:mod:`cpabanim.data.names`); ``<processed_root>/names.json``
records the dataset's name of each one that changed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.data import names, sources
from cpabanim.data.video import frame_count, frames_digest, read_video, resize_frames, write_frames
from cpabanim.errors import ConfigError, DataError
from cpabanim.progress import progress_bar

log = logging.getLogger(__name__)
SPLITS = ("train", "test")


def folder_videos(folder: Path, test_fraction: float) -> list[tuple[str, Path]]:
    """``(split, video)`` for a folder of the user's videos: its train/ and test/ if present, else a split of
    the sorted videos (the last ``test_fraction`` of them, at least one, go to test)."""
    folder = Path(folder)
    if has_own_split(folder):
        # every entry, symlink loops and folders without frames included: read_video refuses what it cannot
        # use and the manifest lists it as skipped, rather than it disappearing without a trace
        return [(s, v) for s in SPLITS for v in _candidate_videos(folder / s)]
    videos = _candidate_videos(folder)
    if len(videos) < 2:
        raise DataError(f"{folder}: need at least two videos (one for train, one for test), found {len(videos)}")
    num_test = test_count(len(videos), test_fraction)
    return [("train", v) for v in videos[:-num_test]] + [("test", v) for v in videos[-num_test:]]


def has_own_split(folder: Path) -> bool:
    """Whether a folder of the user's videos brings its own train/ and test/ split."""
    return (Path(folder) / "train").is_dir() and (Path(folder) / "test").is_dir()


def test_count(num_videos: int, test_fraction: float) -> int:
    """How many of ``num_videos`` (>= 2) go to test: the ``test_fraction`` share, at least one, never all."""
    return min(num_videos - 1, max(1, round(num_videos * test_fraction)))


def _candidate_videos(folder: Path) -> list[Path]:
    """The entries of ``folder`` that may be videos, sorted: all but hidden files and notes (.md/.txt/.json/.csv)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() not in (".md", ".txt", ".json", ".csv") and not p.name.startswith(".")
    )


def _name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def video_names(videos: list[Path]) -> dict[Path, str]:
    """The dataset's name of each video file or frame folder: its stem, or its whole file name where another
    entry of the same folder has that stem (``good2.mp4`` and ``good2.gif`` are two videos, both kept: a name
    dropping one of them without a word would lose it). Such a rename is logged, naming the files."""
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for video in videos:
        by_stem.setdefault((video.parent, _name(video)), []).append(video)
    for (parent, stem), group in by_stem.items():
        if len(group) > 1:
            listed = " and ".join(v.name for v in group)
            log.warning("%s: %s share the name %r; each is kept, named by its whole file name", parent, listed, stem)
    return {video: stem if len(group) == 1 else video.name for (_, stem), group in by_stem.items() for video in group}


def segment_starts(video: Path, name: str, segments: int, max_frames: int, stride: int) -> list[tuple[str, int]]:
    """``(name, first frame)`` of each video that ``video`` (named ``name``) gives (``data.folder.segments``):
    itself from frame 0 when ``segments`` is 1, else up to ``segments`` consecutive pieces of ``max_frames`` frames
    after ``stride`` (at least two frames each), named in the field's form ``<name>#000``, ``<name>#001``... An
    unreadable video gives one item, whose reading fails and is recorded as skipped."""
    if segments == 1:
        return [(name, 0)]
    try:
        count = frame_count(video)
    except DataError:
        count = 0
    span = max_frames * stride  # raw frames per segment
    starts = [start for start in range(0, count, span) if count - start > stride][:segments] or [0]
    return [(names.FIELD_SEPARATOR.join([name, f"{index:03d}"]), start) for index, start in enumerate(starts)]


def plan(data: Mapping[str, Any], seed: int, raw_root: str | Path) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(split, name, make)`` where ``make()`` returns ``uint8 (T, S, S, 3)`` or raises DataError; ``name``
    is the dataset's own name of the video (a file name, the field's ``#`` name), :func:`preprocess` makes it safe.

    ``data``: the ``data`` params; ``seed``: the synthetic source's seed; ``raw_root``: ``{paths.raw}``, where
    ``download`` put the mgif archive and the YouTube videos."""
    raw_root = Path(raw_root)
    size = int(data["frame_size"])
    source = data["source"]
    if source == "synthetic":
        from cpabanim.data import synthetic

        cfg = data["synthetic"]
        for split, count in (("train", cfg["num_train"]), ("test", cfg["num_test"])):
            for index, (video_id, obj, background) in enumerate(synthetic.video_plan(split, count, seed)):

                def make(split=split, index=index, obj=obj, background=background):
                    rng = np.random.default_rng([seed, synthetic._SPLIT_CODE[split], 1, index])
                    return synthetic.render_video(obj, background, cfg["num_frames"], size, rng)

                yield split, video_id, make
    elif source == "folder":
        cfg = data["folder"]
        if not cfg["dir"] or not Path(cfg["dir"]).is_dir():
            raise ConfigError(f"data.folder.dir={cfg['dir']!r} is not a folder of videos")
        videos = folder_videos(Path(cfg["dir"]), cfg["test_fraction"])
        video_name = video_names([video for _, video in videos])
        for split, video in videos:
            for name, start in segment_starts(
                video, video_name[video], cfg["segments"], cfg["max_frames"], cfg["stride"]
            ):

                def make(video=video, start=start):
                    read = {"max_frames": cfg["max_frames"], "stride": cfg["stride"], "start": start}
                    # cropped and resized as decoded: the clip is never held at its own size
                    if not cfg["faces"]:
                        return read_video(video, **read, shrink=square_resizer(size, video))
                    from cpabanim.data.faces import face_crop_streamed

                    return face_crop_streamed(
                        lambda shrink: read_video(video, **read, shrink=shrink),
                        size,
                        cfg["margin"],
                        cfg["smooth_sigma"],
                        cfg["detect_every"],
                        source=video,
                    )[0]

                yield split, name, make
    elif data.get("source_dir") or source == "mgif":
        root = sources.find_split_root(data.get("source_dir") or raw_root / "mgif" / "unpacked")
        for split in SPLITS:
            for video, name in video_names(sorted((root / split).iterdir())).items():

                def make(video=video):
                    return read_video(video, shrink=square_resizer(size, video))

                yield split, name, make
    else:  # vox / taichi / ted from the published metadata and the videos `download` fetched
        videos_dir = raw_root / source / "videos"
        metadata = sources.metadata_path(source, data["metadata"], raw_root / source, fetch=False)
        for chunk in sources.read_metadata(metadata):
            split = "test" if chunk.partition == "test" else "train"

            def make(chunk=chunk):
                video = videos_dir / f"{chunk.youtube_id}.mp4"
                if not video.is_file():
                    raise DataError(f"{chunk.youtube_id}: video not downloaded (see the download manifest)")
                return sources.crop_chunk(video, chunk, size)

            yield split, chunk.field_name, make


def resplit_usable(
    manifest: dict[str, Any], out: Path, order: list[str], test_fraction: float, clip_of: Mapping[str, str]
) -> None:
    """Split a folder of the user's videos among those that could be used: the last ``test_fraction`` of its
    clips (in ``order``, the sorted file names; ``clip_of``: video name -> the clip it was cut from, itself
    unless ``data.folder.segments`` cut it) become the test split, moved there on disk and in ``manifest``; the
    segments of one clip stay in one split. Decided after decoding, so an unreadable, too short or faceless video
    at the end of the list does not leave test empty."""
    usable = [name for name in order if any(name in manifest["videos"][s] for s in SPLITS)]
    clips = list(dict.fromkeys(clip_of[name] for name in usable))
    if len(clips) < 2:
        return
    num_test = test_count(len(clips), test_fraction)
    test_clips = set(clips[len(clips) - num_test :])
    wanted = {name: "test" if clip_of[name] in test_clips else "train" for name in usable}
    for split in SPLITS:
        for name in [n for n in manifest["videos"][split] if wanted[n] != split]:
            target = files.contained_path(out, wanted[name], name)
            target.parent.mkdir(parents=True, exist_ok=True)
            (out / split / name).rename(target)
            manifest["videos"][wanted[name]][name] = manifest["videos"][split].pop(name)
            log.info("%s goes to %s: the split is taken among the videos that could be used", name, wanted[name])


def square_resizer(size: int, source: Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (n, H, W, 3) -> (n, size, size, 3): each frame's centre square, resized (``read_video``'s shrink)."""
    return lambda frames: resize_frames(centre_square(frames), size, source=source)


def centre_square(frames: np.ndarray) -> np.ndarray:
    height, width = frames.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return frames[:, top : top + side, left : left + side]


def preprocess(data: Mapping[str, Any], seed: int, raw_root: str | Path, processed_root: str | Path) -> dict[str, Any]:
    """Write the processed dataset of ``data`` (the ``data`` params; ``seed`` and ``raw_root`` as :func:`plan`)
    and its manifest into ``processed_root`` (``{paths.processed}``); reuse videos already written with the
    same config. Videos are named by :func:`cpabanim.data.names.safe_name` and ``names.json`` records the
    dataset's name of each renamed one. Returns the manifest."""
    out = Path(processed_root)
    config = {
        "data": {k: v for k, v in data.items() if k not in ("augmentation", "id_sampling", "num_repeats")},
        "seed": seed,
    }
    items = list(plan(data, seed, raw_root))
    files.claim_output_folder(out, "cpabanim preprocess")  # it removes stale videos: never in a folder of the user's
    previous = files.read_json(out / "manifest.json", corrupt_ok=True)
    reuse = previous.get("config") == config
    manifest: dict[str, Any] = {
        "source": data["source"],
        "frame_size": data["frame_size"],
        "config": config,
        "videos": {s: {} for s in SPLITS},
        "skipped": [],
    }
    originals: dict[str, str] = {}  # safe name -> the dataset's name, over both splits
    seen: set[tuple[str, str]] = set()  # (split, safe name) of the videos planned so far
    order: list[str] = []  # the safe names, in the plan's order (resplit_usable)
    clip_of: dict[str, str] = {}  # safe name -> the clip it comes from (a segment's clip, else itself)
    segmented = data["source"] == "folder" and data["folder"]["segments"] > 1
    auto_split = data["source"] == "folder" and not has_own_split(Path(data["folder"]["dir"]))
    for split, original, make in progress_bar(items, desc="preprocess", unit="video"):
        try:  # names come from metadata and file names: one safe folder name, never a path outside paths.processed
            video_id = names.safe_name(original)
            check_unique(video_id, original, originals.get(video_id, original), (split, video_id) in seen)
            seen.add((split, video_id))
            if auto_split:  # an earlier run may have put this video in the other split (see resplit_usable)
                split = next((s for s in SPLITS if video_id in previous.get("videos", {}).get(s, {})), split)
            folder = files.contained_path(out, split, video_id)
        except DataError as err:
            _skip(manifest, split, original, err)
            continue
        originals[video_id] = original
        order.append(video_id)
        clip_of[video_id] = original.rsplit(names.FIELD_SEPARATOR, 1)[0] if segmented else original
        done = previous.get("videos", {}).get(split, {}).get(video_id)
        if reuse and done and folder.is_dir() and len(list(folder.glob("*.png"))) == done["frames"]:
            manifest["videos"][split][video_id] = done
            continue
        try:
            frames = make()
            if len(frames) < 2:
                raise DataError(f"{original}: fewer than two frames")
        except DataError as err:
            _skip(manifest, split, original, err)
            continue
        write_frames(frames, folder)
        manifest["videos"][split][video_id] = {"frames": int(len(frames)), "sha256": frames_digest(frames)}
    if auto_split:
        resplit_usable(manifest, out, order, data["folder"]["test_fraction"], clip_of)
    # videos of an earlier configuration that this one no longer produces would silently join the dataset
    for split in SPLITS:
        if (out / split).is_dir():
            for stale in (out / split).iterdir():
                if stale.name not in manifest["videos"][split]:
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    kept = {video_id for split in SPLITS for video_id in manifest["videos"][split]}
    names.write_record(out, {video_id: originals[video_id] for video_id in kept})
    if not manifest["videos"]["train"] or not manifest["videos"]["test"]:
        files.write_json(out / "manifest.json", manifest)
        raise DataError(
            f"preprocess produced no {'train' if not manifest['videos']['train'] else 'test'} videos "
            f"(see {out / 'manifest.json'} for what was skipped and why)"
        )
    files.write_json(out / "manifest.json", manifest)
    return manifest


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


def _skip(manifest: dict[str, Any], split: str, original: str, err: DataError) -> None:
    """Record a video that cannot be used under the dataset's own name (the file or id the user must fix)."""
    log.warning("skipping %s", err)
    manifest["skipped"].append({"split": split, "video": original, "reason": str(err)})
