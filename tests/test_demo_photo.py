"""``cpabanim demo`` on a whole photo (issue 23): faces of every size found, the animated face pasted back into
the photo at its own resolution, ``--face`` among several faces, and the one-line message for a photo without
one. Real faces come from ../shared/data/faces (skipped when absent); the paste-back itself is checked on
synthetic data everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpabanim import cli
from cpabanim.commands.demo.panels import panel_header
from cpabanim.commands.demo.paste import feather_mask, paste_back
from cpabanim.data.movie import movie_info
from cpabanim.data.video import read_video
from tests.conftest import SHARED_FACES, requires_faces
from tests.eval.conftest import moving_blob_video, write_video
from tests.test_demo import SIZE, checkpoint  # noqa: F401 - the tiny checkpoint fixture

HEIGHT, WIDTH = 1080, 720  # a full-body portrait
DRIVING_FRAMES = 6


def demo(*args: str) -> int:
    return cli.main(["demo", *args])


def one_line_error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_feather_mask_is_one_inside_and_fades_to_zero_at_the_border():
    mask = feather_mask(64, 0.125)
    assert mask.shape == (64, 64) and mask[16:48, 16:48].min() == 1.0
    assert mask[0].max() < 0.05 and mask[:, -1].max() < 0.05
    assert np.all(np.diff(mask[32, :32]) >= 0)  # rises monotonically towards the inside


def test_paste_back_moves_only_the_box_and_keeps_the_photo_size():
    photo = np.full((90, 61, 3), 200, np.uint8)
    crops = np.zeros((2, 32, 32, 3), np.uint8)
    crops[1] = 50
    box = np.array([10.5, 20.0, 50.5, 60.0])  # a 40 px square at a sub-pixel position
    out = paste_back(photo, crops, box)
    assert out.shape == (2, 90, 61, 3) and out.dtype == np.uint8
    assert (out[:, :18] == 200).all() and (out[:, 62:] == 200).all() and (out[:, :, :9] == 200).all()
    assert (out[0, 35:45, 25:36] == 0).all() and (out[1, 35:45, 25:36] == 50).all()  # the crop, inside
    assert 0 < out[0, 21, 30, 0] < 200  # feathered at the border
    # a box reaching past the photo's edge is clipped, not an error
    assert paste_back(photo, crops, np.array([-20.0, -20.0, 20.0, 20.0]))[0, 0, 0, 0] < 200


@pytest.fixture(scope="module")
def blob_driving(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("driving") / "blob"
    write_video(folder, moving_blob_video(1, frames=DRIVING_FRAMES, size=64))
    return folder


def test_paste_back_without_faces_gives_the_photo_size_and_full_size_frames(checkpoint, blob_driving, tmp_path):  # noqa: F811
    """--crop none --paste-back: the centre square animated and pasted back into an odd-sized photo (made even)."""
    photo = tmp_path / "wide.png"
    Image.fromarray(moving_blob_video(3, frames=1, size=121)[0, :75]).save(photo)  # 121 x 75
    out = tmp_path / "r.mp4"
    args = ["--source", str(photo), "--driving", str(blob_driving), "--checkpoint", str(checkpoint)]
    args += ["--out", str(out), "--crop", "none", "--paste-back", "--frames", str(tmp_path / "f"), "--device", "cpu"]
    assert demo(*args) == 0
    header = panel_header(75)
    # source | driving (scaled to the photo's height) | result, odd sizes padded by one pixel for H.264
    assert read_video(out).shape == (DRIVING_FRAMES, header + 76, 121 + 75 + 121 + 1, 3)
    frames = sorted((tmp_path / "f").glob("*.png"))
    assert len(frames) == DRIVING_FRAMES and np.asarray(Image.open(frames[0])).shape == (75, 121, 3)


def face_frame(clip: str, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A frame of a real clip and its face box (the largest)."""
    from cpabanim.data.faces import detect_faces

    frame = read_video(SHARED_FACES / clip, max_frames=2, stride=max(1, index))[1 if index else 0]
    return frame, detect_faces(frame)[0]


def paste_face(canvas: np.ndarray, frame: np.ndarray, box: np.ndarray, face: int, centre: tuple[int, int]):
    """Paste ``frame`` scaled so its face is ``face`` px wide, the face centred at ``centre`` (x, y); -> the
    face's box in the canvas."""
    import cv2

    scale = face / (box[2] - box[0])
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    face_centre = (box[:2] + box[2:]) / 2 * scale
    x0, y0 = int(centre[0] - face_centre[0]), int(centre[1] - face_centre[1])
    h, w = small.shape[:2]
    canvas[max(0, y0) : y0 + h, max(0, x0) : x0 + w] = small[max(0, -y0) :, max(0, -x0) :][
        : canvas.shape[0] - max(0, y0), : canvas.shape[1] - max(0, x0)
    ]
    return box * scale + [x0, y0, x0, y0]


@pytest.fixture(scope="module")
def face_driving(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("driving") / "d0"
    write_video(folder, read_video(SHARED_FACES / "d0.mp4", max_frames=DRIVING_FRAMES, stride=5))
    return folder


def run_demo(photo: np.ndarray, driving: Path, checkpoint: Path, tmp_path: Path, *extra: str) -> np.ndarray:  # noqa: F811
    """``cpabanim demo --crop face`` on ``photo`` -> the video it wrote (``--out`` in ``extra`` overrides)."""
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.mp4"
    args = ["--source", str(path), "--driving", str(driving), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert demo(*args, "--crop", "face", "--device", "cpu", *extra) == 0
    if "--out" in extra:
        return np.zeros(0)
    return read_video(out).astype(np.int16)


def changed(video: np.ndarray, photo: np.ndarray, box: np.ndarray) -> float:
    """How far the box's pixels are from the photo's (mean absolute difference): the model's face pasted there
    (a checkpoint trained for 3 steps hardly moves, but it redraws the face)."""
    x0, y0, x1, y1 = box.astype(int)
    region = (slice(None), slice(max(0, y0), y1), slice(max(0, x0), x1))
    return float(np.abs(video[region] - photo[region[1:]]).mean())


@requires_faces
@pytest.mark.parametrize("face", [80, 40])
def test_small_face_in_a_full_body_photo_is_animated_in_place(checkpoint, face_driving, tmp_path, face):  # noqa: F811
    canvas = np.full((HEIGHT, WIDTH, 3), 228, np.uint8)
    box = paste_face(canvas, *face_frame("d11.mp4"), face, (WIDTH // 2, 260))
    video = run_demo(canvas, face_driving, checkpoint, tmp_path, "--panels", "result", "--frames", str(tmp_path / "f"))
    assert video.shape == (DRIVING_FRAMES, HEIGHT, WIDTH, 3)  # the photo's size
    assert changed(video, canvas, box) > 10.0  # the model's face pasted in place (H.264 alone: < 2)
    assert np.abs(video[:, 700:] - canvas[700:]).mean() < 2  # far from it, the photo (up to H.264's loss)
    assert np.asarray(Image.open(tmp_path / "f" / "00000.png")).shape == (HEIGHT, WIDTH, 3)
    if face == 80:  # the model's crop without paste-back; the labelled panels with it
        assert run_demo(canvas, face_driving, checkpoint, tmp_path, "--no-paste-back", "--panels", "result").shape == (
            DRIVING_FRAMES,
            SIZE,
            SIZE,
            3,
        )
        run_demo(canvas, face_driving, checkpoint, tmp_path, "--panels", "all", "--out", str(tmp_path / "all.mp4"))
        # source | driving (scaled to the photo's height) | result; movie_info: read_video would shrink it
        expected = (DRIVING_FRAMES, panel_header(HEIGHT) + HEIGHT, 2 * WIDTH + HEIGHT)
        assert movie_info(tmp_path / "all.mp4")[1:] == expected


@requires_faces
def test_two_faces_the_largest_by_default_and_face_picks_the_other(checkpoint, face_driving, tmp_path, caplog):  # noqa: F811
    canvas = np.full((HEIGHT, WIDTH, 3), 228, np.uint8)
    big = paste_face(canvas, *face_frame("d11.mp4"), 120, (200, 300))
    small = paste_face(canvas, *face_frame("d12.mp4"), 70, (520, 800))
    default = run_demo(canvas, face_driving, checkpoint, tmp_path, "--panels", "result")
    assert changed(default, canvas, big) > 10.0 and changed(default, canvas, small) < 5.0
    other = run_demo(canvas, face_driving, checkpoint, tmp_path, "--panels", "result", "--face", "1")
    assert changed(other, canvas, small) > 10.0 and changed(other, canvas, big) < 5.0
    path = tmp_path / "photo.png"
    assert (
        demo("--source", str(path), "--driving", str(face_driving), "--checkpoint", str(checkpoint), "--face", "2") == 1
    )
    assert "--face 2: the photo" in one_line_error(caplog) and "has 2 face(s)" in one_line_error(caplog)


def test_photo_without_a_face_is_one_line(checkpoint, blob_driving, tmp_path, caplog):  # noqa: F811
    path = tmp_path / "empty.png"
    canvas = np.full((HEIGHT, WIDTH, 3), 228, np.uint8)
    canvas[::40] = 90  # a few stripes, nothing like a face
    Image.fromarray(canvas).save(path)
    args = ["--source", str(path), "--driving", str(blob_driving), "--checkpoint", str(checkpoint), "--crop", "face"]
    assert demo(*args, "--out", str(tmp_path / "r.mp4")) == 1
    assert one_line_error(caplog) == (
        f"no face found in the photo {path} (faces of 30 px and up are searched; "
        "use --crop none to animate it uncropped)"
    )


def test_a_photo_too_small_is_one_line_naming_the_photo(checkpoint, blob_driving, tmp_path, caplog):  # noqa: F811
    path = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(path)
    args = ["--source", str(path), "--driving", str(blob_driving), "--checkpoint", str(checkpoint), "--crop", "none"]
    assert demo(*args, "--out", str(tmp_path / "r.mp4")) == 1
    assert one_line_error(caplog) == (
        f"the photo {path} is 1x1 pixels: below the 32 px minimum of its short side; use a larger photo"
    )
    assert not (tmp_path / "r.mp4").exists()


def test_bench_demo_runs_on_tiny_inputs(tmp_path, capsys):
    """`cpabanim bench demo --quick`: two short driving videos, a peak RSS each and their ratio (never asserted
    against the goal: a smoke run)."""
    import json
    import math

    out = tmp_path / "demo.json"
    assert cli.main(["bench", "demo", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in ("peak_rss_mb_2s", "peak_rss_mb_4s", "rss_ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert "ratio" in capsys.readouterr().out
