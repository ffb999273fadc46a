"""read_video on every accepted format, and a clear DataError naming the file for each kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cpabanim.data.video import MIN_SOURCE_SIDE, read_video, resize_frames, write_frames
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


@pytest.mark.parametrize(
    "case",
    [
        "empty_mp4",
        "corrupt_mp4",
        "one_frame",
        "mixed_sizes",
        "empty_folder",
        "bad_strip",
        "missing",
        "unsupported",
        "symlink_loop",
        "dangling_symlink",
    ],
)
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
    elif case == "symlink_loop":
        path = tmp_path / "loop.mp4"
        path.symlink_to(path)
    elif case == "dangling_symlink":
        path = tmp_path / "gone"
        path.symlink_to(tmp_path / "deleted-video")
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


def test_grayscale_is_one_rule_for_every_container_accepted_as_rgb(tmp_path):
    """8-bit and 16-bit grayscale PNG frames, a gray PNG strip and a gray mp4 all read as R = G = B."""
    gray = moving_square_video(4, 32)[..., 1]  # (T, H, W) uint8
    folder = tmp_path / "gray8"
    folder.mkdir()
    for i, frame in enumerate(gray):
        Image.fromarray(frame, mode="L").save(folder / f"{i:05d}.png")
    expected = np.repeat(gray[..., None], 3, axis=-1)
    assert np.array_equal(read_video(folder), expected)
    deep = tmp_path / "gray16"
    deep.mkdir()
    for i, frame in enumerate(gray):
        Image.fromarray(frame.astype(np.uint16) * 257).save(deep / f"{i:05d}.png")  # 16-bit PNG, full range
    assert np.array_equal(read_video(deep), expected)  # scaled to 8 bits, not clipped to white
    Image.fromarray(np.concatenate(list(gray), axis=1), mode="L").save(tmp_path / "strip.png")
    assert np.array_equal(read_video(tmp_path / "strip.png"), expected)
    mp4 = read_video(write_mp4(tmp_path / "gray.mp4", expected))
    assert mp4.shape == expected.shape and np.abs(mp4.astype(int) - expected).mean() < 8
    assert np.abs(mp4[..., 0].astype(int) - mp4[..., 2]).max() <= 2  # still gray after the codec


def test_frames_below_the_minimum_size_are_refused_not_upscaled():
    tiny = np.zeros((3, 9, 17, 3), np.uint8)  # the 17x9 video of issue 10
    with pytest.raises(DataError, match=r"17x9 pixels are below the 32 px minimum") as info:
        resize_frames(tiny, 64, source="clip.mp4")
    assert str(info.value).startswith("clip.mp4: ")
    assert MIN_SOURCE_SIDE == 32
    edge = moving_square_video(2, MIN_SOURCE_SIDE)
    assert resize_frames(edge, 64).shape == (2, 64, 64, 3)  # exactly the minimum is upscaled
    with pytest.raises(DataError, match="31x40"):
        resize_frames(np.zeros((2, 40, 31, 3), np.uint8), 16)  # the short side counts, even when shrinking


def test_a_failed_frame_write_removes_the_partial_folder_and_names_it(tmp_path, monkeypatch):
    import errno

    from PIL import Image as PILImage

    from cpabanim.errors import CpabanimError

    frames = moving_square_video(4, 32)
    write_frames(frames, tmp_path / "clip")  # a complete earlier version stays untouched
    saved = []

    def disk_full_after_two(self, fp, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(fp)
        return original(self, fp, *args, **kwargs)

    original = PILImage.Image.save
    monkeypatch.setattr(PILImage.Image, "save", disk_full_after_two)
    with pytest.raises(CpabanimError) as info:
        write_frames(frames[::-1], tmp_path / "clip")
    assert str(tmp_path / "clip") in str(info.value) and "No space left" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no hidden partial folder left
    monkeypatch.undo()
    assert np.array_equal(read_video(tmp_path / "clip"), frames)


@pytest.mark.parametrize("container", ["mp4", "gif", "folder", "strip"])
def test_a_shrink_while_decoding_gives_the_frames_of_a_shrink_after(tmp_path, container, monkeypatch):
    """``read_video(..., shrink=f)`` == ``f(read_video(...))`` for every container, stride and start, decoded a
    chunk at a time (the chunk made small here so that a clip spans several, the last one short)."""
    import cpabanim.data.movie as movie
    from cpabanim.data.listing import square_resizer

    monkeypatch.setattr(movie, "DECODE_CHUNK", 3)
    frames = np.ascontiguousarray(moving_square_video(23, 48)[:, :, 4:44])  # 48x40: not square
    path = tmp_path / "clip"
    if container == "mp4":
        write_mp4(path.with_suffix(".mp4"), frames)
        path = path.with_suffix(".mp4")
    elif container == "gif":
        path = write_gif(path.with_suffix(".gif"), frames)
    elif container == "folder":
        path = write_frame_folder(path, frames)
    else:
        path = path.with_suffix(".png")
        Image.fromarray(np.concatenate(list(frames), axis=1)).save(path)
    shrink = square_resizer(32, path)
    calls = []
    counted = lambda chunk: calls.append(len(chunk)) or shrink(chunk)  # noqa: E731
    for options in ({}, {"max_frames": 10, "stride": 2, "start": 3}):
        options = {**options, "frame_shape": (48, 40)} if container == "strip" else options
        after = shrink(read_video(path, **options))
        during = read_video(path, **options, shrink=counted)
        assert during.shape == after.shape and np.array_equal(during, after), options
    if container == "mp4":  # decord's batches: never more than a chunk at the decoded size
        assert max(calls) == 3 and sum(calls) == 23 + 10, calls
