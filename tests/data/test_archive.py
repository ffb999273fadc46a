"""Frame archives (cpabanim/data/archive.py): the same frames back, from the tail record or through the central
directory of a zip another tool wrote; a damaged file is one clear error; a video reader like any other."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from cpabanim.data import archive
from cpabanim.data.video import frame_count, is_video, read_frame_at, read_video
from cpabanim.errors import DataError
from tests.data.helpers import moving_square_video


def test_frames_come_back_as_written_and_byte_stable(tmp_path):
    frames = moving_square_video(5, 24, seed=3)
    members = [archive.encode_png(f) for f in frames]
    first = archive.write_archive(tmp_path / "a.zip", members, {"frames": 5}).read_bytes()
    assert archive.write_archive(tmp_path / "b.zip", members, {"frames": 5}).read_bytes() == first  # same bytes
    with archive.FrameArchive(tmp_path / "a.zip") as stored:
        assert len(stored) == 5 and stored.record["frames"] == 5
        assert [stored.png(i) for i in range(5)] == members  # a copy's PNGs are kept as they are
        assert np.array_equal(stored.images([4, 0]), frames[[4, 0]])
    assert is_video(tmp_path / "a.zip") and frame_count(tmp_path / "a.zip") == 5
    assert np.array_equal(read_video(tmp_path / "a.zip", start=1, stride=2), frames[[1, 3]])
    assert np.array_equal(read_frame_at(tmp_path / "a.zip", 99), frames[4])
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_a_zip_of_frames_another_tool_wrote_is_read_through_its_central_directory(tmp_path):
    frames = moving_square_video(3, 16, seed=1)
    with zipfile.ZipFile(tmp_path / "theirs.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for index, frame in enumerate(frames):
            zf.writestr(f"frame{index:03d}.png", archive.encode_png(frame))
    assert np.array_equal(read_video(tmp_path / "theirs.zip"), frames)
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as zf:
        zf.writestr("readme.txt", "not a frame")
    with pytest.raises(DataError, match="holds PNG frames only"):
        read_video(tmp_path / "notes.zip")


def test_a_damaged_archive_is_one_clear_error(tmp_path):
    members = [archive.encode_png(f) for f in moving_square_video(3, 16)]
    archive.write_archive(tmp_path / "a.zip", members, {"frames": 3})
    data = bytearray((tmp_path / "a.zip").read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # the frames are gone, the record at the end remains
    (tmp_path / "a.zip").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"a\.zip: frame 0 is not where the archive's record says"):
        read_video(tmp_path / "a.zip")
    (tmp_path / "b.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"b\.zip: not a readable frame archive"):
        read_video(tmp_path / "b.zip")
    assert archive.read_record(tmp_path / "b.zip") is None and archive.read_record(tmp_path / "absent.zip") is None
