"""The stages end to end on CPU through the CLI (synthetic), and the folder source's skip-and-record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpabanim.cli import main
from cpabanim.data import listing, preprocess
from cpabanim.data.layout import split_videos
from cpabanim.data.video import resize_frames
from tests.conftest import PROJECT_ROOT
from tests.data.helpers import (
    folder_source_params,
    moving_square_video,
    processed_archives,
    processed_video,
    write_gif,
    write_mp4,
)


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def _stage(stage, tmp_path, *overrides):
    sets = [f"paths.{k}={tmp_path / k}" for k in ("raw", "processed", "masks", "weights")]
    sets += [
        "data.synthetic.num_train=3",
        "data.synthetic.num_test=1",
        "data.synthetic.num_frames=6",
        "data.frame_size=32",
        "train.batch_size=2",
        *overrides,
    ]  # a batch must fit the 3 training videos
    argv = [stage, "--params", str(PROJECT_ROOT / "params.yaml")]
    for item in sets:
        argv += ["--set", item]
    return main(argv)


def test_synthetic_download_preprocess_masks_via_cli_are_deterministic(tmp_path, mlflow_uri):
    assert _stage("download", tmp_path) == 0
    assert json.loads((tmp_path / "raw" / "synthetic" / "manifest.json").read_text())["source"] == "synthetic"
    assert _stage("preprocess", tmp_path) == 0
    manifest = json.loads((tmp_path / "processed" / "manifest.json").read_text())
    assert len(manifest["videos"]["train"]) == 3 and len(manifest["videos"]["test"]) == 1
    first = processed_archives(tmp_path / "processed")
    assert len(first) == 4 and all(processed_video(tmp_path / "processed", *v.split("/")).shape[0] == 6 for v in first)
    # a fresh run from scratch gives byte-identical archives (DVC hashes them)
    other = tmp_path / "again"
    assert _stage("preprocess", other) == 1  # its input is checked first: a clear error naming the download stage
    assert _stage("download", other) == 0 and _stage("preprocess", other) == 0
    assert processed_archives(other / "processed") == first
    assert _stage("masks", tmp_path) == 0
    meta = json.loads((tmp_path / "masks" / "meta.json").read_text())
    assert meta["source"] == "slic" and len(meta["videos"]["train"]) == 3
    # SAM without weights: a clear error, exit code 1, no traceback
    assert _stage("masks", tmp_path, "masks.source=sam") == 1


def _folder_of_videos(folder, names, frames):
    """Clips ``names[0:3]``, a broken file ``names[3]``.mp4 and a one-frame GIF ``names[4]``.gif in ``folder``;
    returns the folder source's data params over it (no face crop) and the seed."""
    for i, name in enumerate(names[:3]):
        write_mp4(folder / f"{name}.mp4", moving_square_video(frames, 64, seed=i))
    (folder / f"{names[3]}.mp4").write_bytes(b"this is not a video")
    write_gif(folder / f"{names[4]}.gif", moving_square_video(1, 64))
    return folder_source_params(folder, test_fraction=0.4)


def test_folder_source_records_bad_videos_and_keeps_the_rest(tmp_path):
    data, seed = _folder_of_videos(tmp_path / "my-videos", ["clip0", "clip1", "clip2", "broken", "still"], 8)
    manifest = preprocess.preprocess(data, seed, tmp_path / "raw", tmp_path / "processed")
    # sorted names, the last 40 % to test: broken clip0 clip1 | clip2 still
    assert sorted(manifest["videos"]["train"]) == ["clip0", "clip1"]
    assert sorted(manifest["videos"]["test"]) == ["clip2"]
    skipped = {s["video"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"broken", "still"}
    assert "broken.mp4" in skipped["broken"] and "at least two" in skipped["still"]
    assert processed_video(tmp_path / "processed", "train", "clip0").shape == (8, 32, 32, 3)


def test_folder_split_is_taken_among_usable_videos_and_kept_on_a_rerun(tmp_path):
    """The last videos by name are unusable: test is still the last share of the usable ones, not empty."""
    data, seed = _folder_of_videos(tmp_path / "my-videos", ["a0", "a1", "a2", "zz_broken", "zz_still"], 6)
    out = tmp_path / "processed"
    manifest = preprocess.preprocess(data, seed, tmp_path / "raw", out)
    assert sorted(manifest["videos"]["train"]) == ["a0", "a1"] and list(manifest["videos"]["test"]) == ["a2"]
    assert list(split_videos(out, "test")) == ["a2"]
    assert all("\n" not in s["reason"] for s in manifest["skipped"])  # one line, not ffmpeg's whole stderr
    frame = split_videos(out, "test")["a2"]
    written = frame.stat().st_mtime_ns
    again = preprocess.preprocess(data, seed, tmp_path / "raw", out)
    assert again["videos"] == manifest["videos"] and frame.stat().st_mtime_ns == written  # reused where it is


def test_segments_cut_long_videos_and_keep_each_clip_in_one_split(tmp_path):
    """data.folder.segments: a 20-frame clip with max_frames 6 gives segments of frames 0-5, 6-11, 12-17 and 18-19;
    a 5-frame clip one short segment; the split is by clip, so no clip has segments in both splits."""
    from cpabanim.data.video import read_video

    folder = tmp_path / "videos"
    clips = {"long": moving_square_video(20, 64, seed=0), "mid": moving_square_video(13, 64, seed=1)}
    clips["short"] = moving_square_video(5, 64, seed=2)
    for name, frames in clips.items():
        write_mp4(folder / f"{name}.mp4", frames)
    data, seed = folder_source_params(folder, test_fraction=0.34)
    data["folder"].update(segments=3, max_frames=6)
    manifest = preprocess.preprocess(data, seed, tmp_path / "raw", tmp_path / "processed")
    # sorted clips long, mid | short: three segments of long (a fourth is over `segments`), three of mid
    # (frames 12-12 would be one frame: not a segment, so two), one of short
    assert sorted(manifest["videos"]["train"]) == ["long.000", "long.001", "long.002", "mid.000", "mid.001"]
    assert list(manifest["videos"]["test"]) == ["short.000"]
    assert [manifest["videos"]["train"][f"long.00{k}"]["frames"] for k in range(3)] == [6, 6, 6]
    second = processed_video(tmp_path / "processed", "train", "long.001")
    whole = read_video(folder / "long.mp4")
    first_of_second = resize_frames(listing.centre_square(whole[6:7]), 32)
    assert np.array_equal(second[:1], first_of_second)  # the second segment starts at frame 6
    assert json.loads((tmp_path / "processed" / "names.json").read_text())["long.001"] == "long#001"
