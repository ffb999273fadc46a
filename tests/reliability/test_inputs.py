"""Input handling in preprocess: nothing silent (tiny videos refused, grayscale one rule, loops listed as skipped)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cpabanim.config.layers import load_params
from cpabanim.data import preprocess
from tests.conftest import PROJECT_ROOT
from tests.data.helpers import moving_square_video, write_gif, write_mp4


@pytest.fixture()
def params(tmp_path):
    p = copy.deepcopy(load_params(PROJECT_ROOT / "params.yaml"))
    p = p.to_dict() if hasattr(p, "to_dict") else p
    p["paths"] = {k: str(tmp_path / "project" / k) for k in p["paths"]}
    p["data"].update(source="folder", frame_size=32)
    p["data"]["folder"].update(dir=str(tmp_path / "videos"), faces=False, stride=1)
    return p


def test_symlink_loops_and_unusable_entries_of_a_train_test_layout_are_listed_as_skipped(params, tmp_path):
    videos = tmp_path / "videos"
    write_mp4(videos / "train" / "clip0.mp4", moving_square_video(6, 48, seed=0))
    write_mp4(videos / "test" / "clip1.mp4", moving_square_video(6, 48, seed=1))
    (videos / "train" / "loop.mp4").symlink_to(videos / "train" / "loop.mp4")  # ELOOP
    (videos / "train" / "dangling.mp4").symlink_to(videos / "deleted.mp4")
    (videos / "test" / "cycle").symlink_to(videos / "test")  # a folder that contains itself, no frames
    manifest = preprocess.preprocess(
        params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"]
    )
    assert list(manifest["videos"]["train"]) == ["clip0"] and list(manifest["videos"]["test"]) == ["clip1"]
    skipped = {(s["split"], s["video"]): s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {("train", "loop"), ("train", "dangling"), ("test", "cycle")}
    assert "symlink loop" in skipped[("train", "loop")] and "loop.mp4" in skipped[("train", "loop")]
    assert "holds no images" in skipped[("test", "cycle")]


def test_a_video_below_the_minimum_size_is_skipped_with_its_reason_and_grayscale_is_kept(params, tmp_path):
    from PIL import Image

    videos = tmp_path / "videos"
    write_mp4(videos / "a-colour.mp4", moving_square_video(6, 48, seed=0))
    (videos / "b-gray-frames").mkdir(parents=True)
    for i, frame in enumerate(moving_square_video(6, 48, seed=1)[..., 1]):  # single-channel (mode L) PNGs
        Image.fromarray(frame, mode="L").save(videos / "b-gray-frames" / f"{i:05d}.png")
    tiny = np.arange(6, dtype=np.uint8)[:, None, None, None] * 30 + np.zeros((6, 9, 17, 3), np.uint8)
    write_gif(videos / "c-tiny.gif", tiny)  # 17x9, the example (distinct frames: GIF merges equal ones)
    write_mp4(videos / "d-colour.mp4", moving_square_video(6, 48, seed=2))
    params["data"]["folder"]["test_fraction"] = 0.25
    manifest = preprocess.preprocess(
        params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"]
    )
    assert sorted(manifest["videos"]["train"]) == ["a-colour", "b-gray-frames"]
    assert list(manifest["videos"]["test"]) == ["d-colour"]
    (skip,) = manifest["skipped"]
    assert skip["video"] == "c-tiny"
    assert "c-tiny.gif: frames of 9x9 pixels are below the 32 px minimum" in skip["reason"]
    assert not list((tmp_path / "project" / "processed").rglob("c-tiny*"))  # nothing written for it


def test_two_videos_with_one_stem_are_both_kept_under_their_whole_file_names(params, tmp_path, caplog):
    """The probe: ``good2.mp4`` and ``good2.gif`` in one folder; one was dropped without a word."""
    videos = tmp_path / "videos"
    write_mp4(videos / "good1.mp4", moving_square_video(6, 48, seed=0))
    write_mp4(videos / "good2.mp4", moving_square_video(6, 48, seed=1))
    write_gif(videos / "good2.gif", moving_square_video(6, 48, seed=2))
    params["data"]["folder"]["test_fraction"] = 0.34
    with caplog.at_level("WARNING"):
        manifest = preprocess.preprocess(
            params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"]
        )
    kept = {name for split in ("train", "test") for name in manifest["videos"][split]}
    assert kept == {"good1", "good2.gif", "good2.mp4"} and not manifest["skipped"]
    (line,) = [r.getMessage() for r in caplog.records if "share the name" in r.getMessage()]
    assert "good2.gif and good2.mp4" in line and "'good2'" in line
