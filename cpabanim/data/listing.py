"""Every data source lists its videos the same way: :class:`Item` (position, split, name, shard key, a reader), so
that sharding, resume and storage are written once for all of them (:mod:`cpabanim.data.preprocess`).

:func:`list_items` covers each ``data.source``: ``synthetic`` (rendered here), ``folder`` (your videos, face crops,
segments), a copy (``data.source_dir``, the unpacked ``mgif`` archive: the field's ``train/``, ``test/`` layout)
and ``vox`` / ``taichi`` / ``ted`` (chunks of the published metadata cut from the videos ``download`` fetched).
Listing is cheap: no video is decoded; ``keep(key)`` leaves out another shard's items before anything of theirs is
probed (a long video's segments are found from its header, for the shard that owns it only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cpabanim.data import archive, copies, names, sources
from cpabanim.data.video import frame_count, list_frame_files, read_video, resize_frames
from cpabanim.errors import ConfigError, DataError

SPLITS = ("train", "test")
# a reader gives uint8 (T, S, S, 3) frames, or the PNG bytes of frames that need no change (a copy at frame_size)
Frames = np.ndarray | list[bytes]


@dataclass(frozen=True)
class Item:
    """One video of a source. ``position``: its place in the source's listing (a folder's split is taken in this
    order); ``name``: the dataset's own name (a file name, the field's ``#`` name; made safe where it is stored);
    ``key``: what decides its shard (the video file it comes from: a long video's segments stay together);
    ``read()``: its frames, or a :class:`DataError` saying why it cannot be used."""

    position: int
    split: str
    name: str
    key: str
    read: Callable[[], Frames]


def list_items(
    data: Mapping[str, Any], seed: int, raw_root: str | Path, keep: Callable[[str], bool] = lambda key: True
) -> Iterator[Item]:
    """The videos of ``data`` (the ``data`` params; ``seed``: the synthetic source's; ``raw_root``: ``{paths.raw}``,
    where ``download`` put archives and YouTube videos) whose shard key ``keep`` accepts, in listing order."""
    source = data["source"]
    if source == "synthetic":
        items = synthetic_items(data, seed)
    elif source == "folder":
        items = folder_items(data, keep)
    elif data.get("source_dir") or source == "mgif":
        where = copies.copy_location(data["source_dir"], Path(raw_root), source) if data.get("source_dir") else None
        items = copy_items(data, where or Path(raw_root) / "mgif" / "unpacked", keep)
    else:
        items = metadata_items(data, Path(raw_root))
    return (item for item in items if keep(item.key))


def synthetic_items(data: Mapping[str, Any], seed: int) -> Iterator[Item]:
    from cpabanim.data import synthetic

    cfg, size, position = data["synthetic"], int(data["frame_size"]), 0
    for split, count in (("train", cfg["num_train"]), ("test", cfg["num_test"])):
        for index, planned in enumerate(synthetic.video_plan(split, count, seed)):

            def read(split=split, index=index, planned=planned):
                return synthetic.render_planned(split, index, planned, cfg["num_frames"], size, seed, cfg["motion"])

            yield Item(position, split, planned[0], planned[0], read)
            position += 1


def folder_items(data: Mapping[str, Any], keep: Callable[[str], bool]) -> Iterator[Item]:
    """Your videos (``data.folder``): cropped to the face (or the centre square) and resized as they are decoded,
    never held at their own size; ``segments`` cuts a long one into pieces, all in its shard."""
    cfg, size = data["folder"], int(data["frame_size"])
    if not cfg["dir"] or not Path(cfg["dir"]).is_dir():
        raise ConfigError(f"data.folder.dir={cfg['dir']!r} is not a folder of videos")
    videos = folder_videos(Path(cfg["dir"]), cfg["test_fraction"])
    video_name = video_names([video for _, video in videos], keep)
    position = 0
    for split, video in videos:
        key = video_name[video]
        if not keep(key):  # another shard's: its header is not even read
            position += cfg["segments"]
            continue
        for offset, (name, start) in enumerate(
            segment_starts(video, key, cfg["segments"], cfg["max_frames"], cfg["stride"])
        ):

            def read(video=video, start=start):
                frames = {"max_frames": cfg["max_frames"], "stride": cfg["stride"], "start": start}
                if not cfg["faces"]:
                    return read_video(video, **frames, shrink=square_resizer(size, video))
                from cpabanim.data.faces import face_crop_streamed

                return face_crop_streamed(
                    lambda shrink: read_video(video, **frames, shrink=shrink),
                    size,
                    cfg["margin"],
                    cfg["smooth_sigma"],
                    cfg["detect_every"],
                    source=video,
                )[0]

            yield Item(position + offset, split, name, key, read)
        position += cfg["segments"]


def copy_items(data: Mapping[str, Any], folder: Path, keep: Callable[[str], bool] = lambda key: True) -> Iterator[Item]:
    """A copy in the field's layout (``train/``, ``test/`` of frame folders, movies, gifs or strips), read in place
    from a folder or a zip (:mod:`cpabanim.data.copies`). A frame folder whose frames are already 8-bit RGB PNGs of
    ``data.frame_size`` is stored as it is (no decode and re-encode: :func:`stored_as_is`); anything else is decoded
    and resized."""
    size, position = int(data["frame_size"]), 0
    if copies.is_zip(folder):
        videos = copies.zip_videos(folder)
        for split in SPLITS:
            entries = [
                (entry, PurePosixPath(entry).stem if len(m) == 1 and m[0].endswith(entry) else entry)
                for entry, m in videos[split].items()
            ]
            for entry, name in unique_names(entries, keep).items():

                def read(entry=entry, members=videos[split][entry], name=name):
                    return copies.read_zip_video(
                        folder, entry, members, size, square_resizer(size, f"{folder}:{entry}")
                    )

                yield Item(position, split, name, name, read)
                position += 1
        return
    root = sources.find_split_root(folder)
    for split in SPLITS:
        for video, name in video_names(sorted((root / split).iterdir()), keep).items():

            def read(video=video):
                kept = stored_as_is(video, size)
                return kept if kept is not None else read_video(video, shrink=square_resizer(size, video))

            yield Item(position, split, name, name, read)
            position += 1


def stored_as_is(video: Path, size: int) -> list[bytes] | None:
    """The PNG bytes of a frame folder when every frame is an 8-bit RGB PNG of ``size`` x ``size`` (what
    preprocessing would write), else None (the folder is decoded)."""
    if not video.is_dir():
        return None
    frames = list_frame_files(video)
    if len(frames) < 2 or any(f.suffix.lower() != ".png" for f in frames):
        return None
    kept = []
    for frame in frames:
        data = frame.read_bytes()
        if not archive.is_plain_rgb_png(data, size):
            return None
        kept.append(data)
    return kept


def metadata_items(data: Mapping[str, Any], raw_root: Path) -> Iterator[Item]:
    """``vox`` / ``taichi`` / ``ted``: each chunk of the metadata, cut from its downloaded YouTube video."""
    source, size = data["source"], int(data["frame_size"])
    videos_dir = raw_root / source / "videos"
    metadata = sources.metadata_path(source, data["metadata"], raw_root / source, fetch=False)
    for position, chunk in enumerate(sources.read_metadata(metadata)):

        def read(chunk=chunk):
            video = videos_dir / f"{chunk.youtube_id}.mp4"
            if not video.is_file():
                raise DataError(f"{chunk.youtube_id}: video not downloaded (see the download manifest)")
            return sources.crop_chunk(video, chunk, size)

        split = "test" if chunk.partition == "test" else "train"
        yield Item(position, split, chunk.field_name, chunk.field_name, read)


# ---------------------------------------------------------------------------------------------------------
# a folder of the user's videos


def folder_videos(folder: Path, test_fraction: float) -> list[tuple[str, Path]]:
    """``(split, video)`` for a folder of the user's videos: its train/ and test/ if present, else a split of
    the sorted videos (the last ``test_fraction`` of them, at least one, go to test)."""
    folder = Path(folder)
    if has_own_split(folder):
        # every entry, symlink loops and folders without frames included: read_video refuses what it cannot
        # use and the manifest lists it as skipped, rather than it disappearing without a trace
        return [(s, v) for s in SPLITS for v in candidate_videos(folder / s)]
    videos = candidate_videos(folder)
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


def candidate_videos(folder: Path) -> list[Path]:
    """The entries of ``folder`` that may be videos, sorted: all but hidden files and notes (.md/.txt/.json/.csv)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() not in (".md", ".txt", ".json", ".csv") and not p.name.startswith(".")
    )


def _name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def video_names(videos: list[Path], keep: Callable[[str], bool] = lambda name: True) -> dict[Path, str]:
    """The dataset's name of each video file or frame folder of one folder (:func:`unique_names`)."""
    named = unique_names([(video, _name(video)) for video in videos], keep, lambda video: video.name)
    return {video: named[video] for video in videos}


def unique_names(entries: list[tuple[Any, str]], keep: Callable[[str], bool], whole=lambda entry: entry) -> dict:
    """``{entry: its dataset name}`` for ``(entry, stem)`` pairs of one folder: its stem, or its whole file name
    (``whole(entry)``) where another entry has that stem (``good2.mp4`` and ``good2.gif`` are two videos, both kept:
    a name dropping one of them without a word would lose it). Such a rename is logged, naming the files, by the
    shard that ``keep`` says holds the first of them (once, not by every shard that lists the folder)."""
    import logging

    by_stem: dict[str, list[Any]] = {}
    for entry, stem in entries:
        by_stem.setdefault(stem, []).append(entry)
    names = {}
    for stem, group in by_stem.items():
        if len(group) > 1 and keep(str(whole(group[0]))):
            listed = " and ".join(str(whole(e)) for e in group)
            logging.getLogger(__name__).warning(
                "%s share the name %r; each is kept, named by its whole file name", listed, stem
            )
        names.update({entry: stem if len(group) == 1 else str(whole(entry)) for entry in group})
    return names


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


def square_resizer(size: int, source: Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (n, H, W, 3) -> (n, size, size, 3): each frame's centre square, resized (``read_video``'s shrink)."""
    return lambda frames: resize_frames(centre_square(frames), size, source=source)


def centre_square(frames: np.ndarray) -> np.ndarray:
    height, width = frames.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return frames[:, top : top + side, left : left + side]
