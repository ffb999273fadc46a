"""read_video on every accepted format, and a clear DataError naming the file for each kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cpabanim.data.video import read_video, resize_frames, write_frames
from cpabanim.errors import DataError
from tests.data.helpers import moving_square_video, write_frame_folder, write_gif, write_mp4


def test_frame_folder_roundtrip_is_lossless_and_byte_stable(tmp_path):
    frames = moving_square_video(6, 32)
    write_frames(frames, tmp_path / "a")
    write_frames(frames, tmp_path / "b")
    assert np.array_equal(read_video(tmp_path / "a"), frames)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"{i:05d}.png" for i in range(6)]
    for name in names:  # DVC hashes these files: same pixels must give the same bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_mp4_gif_and_strip_read_as_rgb_uint8(tmp_path):
    frames = moving_square_video(8, 32)
    mp4 = read_video(write_mp4(tmp_path / "v.mp4", frames))
    assert mp4.shape == (8, 32, 32, 3) and mp4.dtype == np.uint8
    assert np.abs(mp4.astype(int) - frames).mean() < 8  # lossy codec, same content
    gif = read_video(write_gif(tmp_path / "v.gif", frames))
    assert gif.shape == (8, 32, 32, 3) and np.abs(gif.astype(int) - frames).mean() < 8
    strip = np.concatenate(list(frames), axis=1)  # the field's wide strip: H x (T*W) x 3
    Image.fromarray(strip).save(tmp_path / "strip.png")
    assert np.array_equal(read_video(tmp_path / "strip.png"), frames)
    assert np.array_equal(read_video(tmp_path / "strip.png", max_frames=3, stride=2), frames[[0, 2, 4]])
    assert read_video(tmp_path / "v.mp4", max_frames=3, stride=2).shape[0] == 3


@pytest.mark.parametrize("case", ["empty_mp4", "corrupt_mp4", "one_frame", "grayscale", "mixed_sizes",
                                  "empty_folder", "bad_strip", "missing", "unsupported"])
def test_bad_inputs_raise_data_error_naming_the_file(tmp_path, case):
    frames = moving_square_video(4, 16)
    if case == "empty_mp4":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
    elif case == "corrupt_mp4":
        path = tmp_path / "corrupt.mp4"
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    elif case == "one_frame":
        path = write_frame_folder(tmp_path / "one", frames[:1])
    elif case == "grayscale":
        path = tmp_path / "gray"
        path.mkdir()
        for i in range(3):
            Image.fromarray(frames[i, ..., 0]).save(path / f"{i:05d}.png")
    elif case == "mixed_sizes":
        path = write_frame_folder(tmp_path / "mixed", frames)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path / "00004.png")
    elif case == "empty_folder":
        path = tmp_path / "nothing"
        path.mkdir()
    elif case == "bad_strip":
        path = tmp_path / "strip.png"
        Image.fromarray(np.zeros((16, 40, 3), np.uint8)).save(path)  # 40 is not a multiple of 16
    elif case == "missing":
        path = tmp_path / "absent.mp4"
    else:
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    with pytest.raises(DataError, match=str(path.name)):
        read_video(path)


def test_resize_frames_to_square():
    frames = moving_square_video(3, 32)
    small = resize_frames(frames, 16)
    assert small.shape == (3, 16, 16, 3) and small.dtype == np.uint8
    assert resize_frames(frames, 32) is frames
