"""Videos that would hang or exhaust memory (issue 24): pipes, frames over the pixel budget, files cut short."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from cpabanim.data import movie, preprocess
from cpabanim.data.video import read_video
from tests.data.helpers import folder_source_params, moving_square_video, write_mp4


@pytest.mark.timeout(60)
def test_a_fifo_named_like_a_video_is_skipped_not_waited_on(tmp_path):
    folder = tmp_path / "videos"
    for i in range(2):
        write_mp4(folder / f"clip{i}.mp4", moving_square_video(6, 64, seed=i))
    os.mkfifo(folder / "clip.png")
    os.mkfifo(folder / "pipe.mp4")
    data, seed = folder_source_params(folder, test_fraction=0.5)
    manifest = preprocess.preprocess(data, seed, tmp_path / "raw", tmp_path / "processed")
    skipped = {s["video"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"clip", "pipe"} and all("not a regular file" in r for r in skipped.values())
    assert sorted(manifest["videos"]["train"]) + sorted(manifest["videos"]["test"]) == ["clip0", "clip1"]


def test_frames_over_the_pixel_budget_are_decoded_downscaled(tmp_path, monkeypatch):
    """The budget (1920x1088 by default) shrinks a larger frame while decoding, aspect kept; shown here with a
    small budget so that the test stays cheap (an 8000x8000 clip is the benchmark's, `cpabanim bench preprocess`)."""
    write_mp4(tmp_path / "wide.mp4", np.repeat(moving_square_video(4, 96, seed=0), 2, axis=2))  # 96 x 192
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i, frame in enumerate(moving_square_video(3, 128)):
        Image.fromarray(frame).save(frames / f"{i:05d}.png")
    monkeypatch.setattr(movie, "MAX_FRAME_PIXELS", 48 * 96)
    assert read_video(tmp_path / "wide.mp4").shape == (4, 48, 96, 3)
    assert read_video(frames).shape == (3, 67, 67, 3)  # sqrt(4608) = 67.9
    assert movie.decode_size(1080, 1920, 1920 * 1088) == (1080, 1920)  # HD is untouched by the default
    assert movie.decode_size(8000, 8000, 1920 * 1088) == (1445, 1445)


def test_a_movie_cut_short_is_kept_with_a_warning_naming_what_was_read(tmp_path, caplog):
    """A file cut mid-download whose index sits at the front (+faststart) lists more frames than it has."""
    import imageio.v2 as imageio

    path = tmp_path / "whole.mp4"
    with imageio.get_writer(
        str(path), fps=25, codec="libx264", output_params=["-movflags", "+faststart"], ffmpeg_log_level="error"
    ) as writer:
        for frame in moving_square_video(60, 64, seed=3):
            writer.append_data(frame)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING, logger="cpabanim.data.movie"):
        frames = read_video(cut)
    assert 2 <= len(frames) < 60
    assert any(f"read {len(frames)} of the 60 frames" in r.getMessage() for r in caplog.records), caplog.text


def test_a_corrupt_record_is_one_line_or_rebuilt(tmp_path):
    """A manifest cut short: whoever reads it names the file; preprocess, which writes it, rebuilds it."""
    from cpabanim import files
    from cpabanim.errors import DataError

    folder = tmp_path / "videos"
    for i in range(2):
        write_mp4(folder / f"clip{i}.mp4", moving_square_video(4, 64, seed=i))
    data, seed = folder_source_params(folder, test_fraction=0.5)
    out = tmp_path / "processed"
    manifest = preprocess.preprocess(data, seed, tmp_path / "raw", out)
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"manifest.json: not readable as JSON .*; delete it"):
        files.read_json(out / "manifest.json")
    assert preprocess.preprocess(data, seed, tmp_path / "raw", out)["videos"] == manifest["videos"]


def test_a_frame_folder_holding_the_users_files_is_never_replaced(tmp_path):
    from cpabanim.data.video import write_frames
    from cpabanim.errors import CpabanimError

    mine = tmp_path / "holiday"
    mine.mkdir()
    (mine / "photo.jpg").write_bytes(b"my photo")
    (mine / "note.txt").write_text("keep me")
    with pytest.raises(CpabanimError, match="holds files cpabanim did not write .'note.txt', 'photo.jpg'."):
        write_frames(moving_square_video(2, 32), mine)
    assert sorted(p.name for p in mine.iterdir()) == ["note.txt", "photo.jpg"]
    frames = tmp_path / "frames"
    write_frames(moving_square_video(3, 32), frames)
    write_frames(moving_square_video(2, 32), frames)  # its own frames are replaced, as before
    assert sorted(p.name for p in frames.iterdir()) == ["00000.png", "00001.png"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CpabanimError, match="is not a folder"):
        write_frames(moving_square_video(2, 32), tmp_path / "a-file")
