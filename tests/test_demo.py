"""``cpabanim demo``: a photo + a driving video + a checkpoint trained for a few steps here -> a video.

Synthetic inputs (a moving disc over texture, photos of odd sizes) prove the outputs' frame count and size, the
three modes, --frames, --panels, --crop none and the one-line errors; real talking faces (../shared/data/faces,
skipped when absent) prove --crop face and --find-best-frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpabanim import cli
from cpabanim.data.movie import movie_info
from cpabanim.data.video import read_video
from tests.conftest import PROJECT_ROOT, SHARED_FACES, requires_faces
from tests.eval.conftest import moving_blob_video, write_video

SIZE = 32  # the tiny checkpoint's training resolution
FRAMES = 7


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny CPAB model (1 group) trained for 3 steps at 32 px."""
    from cpabanim.training.loop import train
    from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

    root = tmp_path_factory.mktemp("demo_model")
    params = tiny_params(root, motion="cpab", max_steps=3, checkpoint_every=0, dropout_epoch=0)
    params["data"]["frame_size"] = SIZE
    return Path(train(job_of(params), dataset=MovingBlobDataset(num_items=4, size=SIZE))["checkpoint"])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A 60x80 photo and a 7-frame 64x50 driving video (a frame folder): neither square nor the model's size."""
    root = tmp_path_factory.mktemp("demo_inputs")
    write_video(root / "driving", np.ascontiguousarray(moving_blob_video(1, frames=FRAMES, size=64)[:, :, 7:57]))
    Image.fromarray(moving_blob_video(2, frames=1, size=80)[0, :60]).save(root / "photo.png")
    return root / "photo.png", root / "driving"


def demo(*args: str) -> int:
    """``cpabanim demo ARGS`` through the real CLI; returns its exit code."""
    return cli.main(["demo", *args])


def test_demo_writes_labelled_panels_png_frames_and_explanations(checkpoint, inputs, tmp_path):
    photo, driving = inputs
    out = tmp_path / "result.mp4"
    assert (
        demo(
            "--source",
            str(photo),
            "--driving",
            str(driving),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--crop",
            "none",
            "--frames",
            str(tmp_path / "frames"),
            "--explain",
            str(tmp_path / "explain"),
            "--device",
            "cpu",
        )
        == 0
    )
    video = read_video(out)
    header = max(12, 2 * round(SIZE / 20))
    assert video.shape == (FRAMES, header + SIZE, 3 * SIZE, 3)  # source | driving | result under labels
    assert video[:, :header].mean() < 100  # the dark label strip
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(FRAMES)]
    assert np.asarray(Image.open(pngs[0])).shape == (SIZE, SIZE, 3)  # lossless frames: the result only
    # the mp4's result panel is the PNG frame, up to H.264's loss
    result_panel = video[3, header:, 2 * SIZE :].astype(float)
    assert np.abs(result_panel - np.asarray(Image.open(pngs[3]), dtype=float)).mean() < 20
    names = sorted(p.name for p in (tmp_path / "explain").glob("*.png"))
    assert names == ["contributions.png", "flow.png", "keypoints.png", "occlusion.png", "overview.png"]
    labels = Image.open(tmp_path / "explain" / "contributions.png").text["Description"]
    for name in ("background affine", "partial CPAB 1", "global CPAB"):
        assert name in labels


@pytest.mark.parametrize("mode", ["relative", "standard", "avd"])
def test_every_mode_gives_one_frame_per_driving_frame(checkpoint, inputs, tmp_path, mode):
    from cpabanim.commands.demo.photo import animate_photo

    photo, driving = inputs
    out = animate_photo(
        photo,
        driving,
        checkpoint,
        tmp_path / f"{mode}.mp4",
        mode=mode,
        crop="none",
        panels="result",
        fps=10,
        device="cpu",
        progress=False,
    )
    assert read_video(out).shape == (FRAMES, SIZE, SIZE, 3)


def test_best_frame_animates_forwards_and_backwards_from_it(checkpoint, inputs):
    """--find-best-frame from frame s = relative motion from s over driving[s:], and over driving[s::-1] reversed."""
    import torch

    from cpabanim.animation.animate import animate_frames
    from cpabanim.animation.animator import load_model
    from cpabanim.commands.demo.photo import prepare_inputs

    model, _ = load_model(checkpoint, torch.device("cpu"))
    data = prepare_inputs(*inputs, SIZE, "none", {})
    s = 3
    both, _ = animate_frames(model, data.source, data.driving, "relative", s, torch.device("cpu"))
    forward, _ = animate_frames(model, data.source, data.driving[s:], "relative", 0, torch.device("cpu"))
    backward, _ = animate_frames(model, data.source, data.driving[s::-1], "relative", 0, torch.device("cpu"))
    assert both.shape == data.driving.shape
    assert np.abs(both[s:].astype(int) - forward).max() <= 1
    assert np.abs(both[: s + 1].astype(int) - backward[::-1]).max() <= 1
    # relative motion: the starting frame means "no motion", whichever frame it is
    other, _ = animate_frames(model, data.source, data.driving[1:], "relative", 0, torch.device("cpu"))
    assert np.abs(forward[0].astype(int) - other[0]).max() <= 1


def test_normalised_landmarks_ignore_position_and_scale():
    from cpabanim.evaluation.formulas import normalised_keypoints, pose_distance_per_frame

    points = np.random.default_rng(0).uniform(0, 100, (68, 2))
    assert np.allclose(normalised_keypoints(points), normalised_keypoints(3.0 * points + [40.0, -7.0]))
    moved = np.stack([3.0 * points + [40.0, -7.0], np.full_like(points, np.nan)])
    distances = pose_distance_per_frame(moved, points)
    assert distances[0] == pytest.approx(0.0, abs=1e-12) and np.isnan(distances[1])


def one_line_error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_missing_checkpoint_is_a_one_line_error(inputs, tmp_path, caplog):
    photo, driving = inputs
    assert (
        demo(
            "--source",
            str(photo),
            "--driving",
            str(driving),
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--out",
            str(tmp_path / "r.mp4"),
            "--crop",
            "none",
        )
        == 1
    )
    assert "none.pt not found" in one_line_error(caplog)
    caplog.clear()
    # the default checkpoint is the experiment's model with its AVD trained, where `cpabanim avd` writes it
    assert (
        demo(
            "--source",
            str(photo),
            "--driving",
            str(driving),
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
            "--set",
            f"paths.checkpoints={tmp_path / 'ckpts'}",
            "--out",
            str(tmp_path / "r.mp4"),
        )
        == 1
    )
    assert str(tmp_path / "ckpts" / "default" / "avd" / "seed0" / "last.pt") in one_line_error(caplog)
    caplog.clear()
    assert (
        demo(
            "--source",
            str(photo),
            "--driving",
            str(driving),
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
            "--experiment",
            "tps",
            "--set",
            f"paths.checkpoints={tmp_path / 'ckpts'}",
            "--out",
            str(tmp_path / "r.mp4"),
        )
        == 1
    )
    assert str(tmp_path / "ckpts" / "tps" / "avd" / "seed0" / "last.pt") in one_line_error(caplog)


def test_unreadable_video_is_a_one_line_error(checkpoint, inputs, tmp_path, caplog):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    assert (
        demo(
            "--source",
            str(inputs[0]),
            "--driving",
            str(bad),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "r.mp4"),
            "--crop",
            "none",
        )
        == 1
    )
    assert "broken.mp4" in one_line_error(caplog)


def test_photo_without_a_face_is_a_one_line_error_naming_it(checkpoint, inputs, tmp_path, caplog):
    photo, driving = inputs
    assert (
        demo(
            "--source",
            str(photo),
            "--driving",
            str(driving),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "r.mp4"),
            "--crop",
            "face",
        )
        == 1
    )
    message = one_line_error(caplog)
    assert str(photo) in message and "no face" in message and "--crop none" in message


@requires_faces
def test_face_crop_and_best_frame_on_real_faces(checkpoint, tmp_path):
    """A 512x400 photo of one person, a talking-face mp4 of another: faces cropped, every frame animated and
    pasted back into the whole photo (the default with --crop face)."""
    photo = tmp_path / "person.jpg"
    Image.fromarray(read_video(SHARED_FACES / "d11.mp4", max_frames=2)[0][40:440]).save(photo)
    driving = SHARED_FACES / "d0.mp4"
    out = tmp_path / "face.mp4"
    assert (
        demo(
            "--source",
            str(photo),
            "--driving",
            str(driving),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--crop",
            "face",
            "--find-best-frame",
            "--panels",
            "result",
        )
        == 0
    )
    video = read_video(out)
    assert video.shape == (len(read_video(driving)), 400, 512, 3)  # the photo's size
    assert movie_info(out)[0] == pytest.approx(movie_info(driving)[0])  # the driving video's frame rate


@pytest.mark.parametrize(
    "case, expected",
    [
        ("frames holds the user's files", "holds files cpabanim did not write ('note.txt', 'photo.png')"),
        ("explain is a file", "exists and is not a folder: choose a new or empty folder for the --explain pictures"),
        ("explain holds the user's files", "holds files cpabanim did not write ('note.txt', 'photo.png')"),
        ("negative fps", "--fps -5: the frame rate must be a positive number"),
        ("tiny photo", "tiny.png is 1x1 pixels: below the 32 px minimum"),
        ("huge photo", "huge.png: refused, too many pixels"),
    ],
)
def test_bad_outputs_and_photos_are_refused_before_any_work(checkpoint, inputs, tmp_path, caplog, case, expected):
    """Each mistake is one line naming the flag or the file, and nothing of the user's is changed (issue 24)."""
    photo, driving = inputs
    args = ["--driving", str(driving), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "r.mp4")]
    args += ["--crop", "none"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "note.txt").write_text("keep me")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(mine / "photo.png")
    if case == "frames holds the user's files":
        args += ["--frames", str(mine)]
    elif case == "explain is a file":
        args += ["--explain", str(mine / "note.txt")]
    elif case == "explain holds the user's files":
        args += ["--explain", str(mine)]
    elif case == "negative fps":
        args += ["--fps", "-5"]
    elif case == "tiny photo":
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "tiny.png")
        photo = tmp_path / "tiny.png"
    elif case == "huge photo":  # a 20000x20000 PNG of one colour is 1.2 MB on disk, 1.2 GB decoded
        Image.new("L", (20000, 20000)).save(tmp_path / "huge.png")
        photo = tmp_path / "huge.png"
    assert demo("--source", str(photo), *args) == 1
    assert expected in one_line_error(caplog)
    assert not (tmp_path / "r.mp4").exists()
    assert sorted(p.name for p in mine.iterdir()) == ["note.txt", "photo.png"]
    assert (mine / "note.txt").read_text() == "keep me"


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_an_out_file_is_replaced_only_where_cpabanim_wrote_it(checkpoint, inputs, tmp_path, caplog, suffix):
    """A user's own video at --out is refused in one line and kept byte for byte; a video the demo wrote carries
    its mark, so a second run replaces it; no partial file is ever left beside it (issue 24)."""
    import imageio.v2 as imageio

    from cpabanim.commands.demo.panels import written_by_cpabanim

    photo, driving = inputs
    frames = read_video(driving)
    mine = tmp_path / f"holiday{suffix}"
    imageio.mimwrite(mine, list(frames), **({"duration": 40} if suffix == ".gif" else {"fps": 25}))
    kept = mine.read_bytes()
    args = ["--source", str(photo), "--driving", str(driving), "--checkpoint", str(checkpoint), "--crop", "none"]
    assert demo(*args, "--out", str(mine)) == 1
    assert f"--out {mine} exists and cpabanim did not write it" in one_line_error(caplog)
    assert mine.read_bytes() == kept and not written_by_cpabanim(mine)
    out = tmp_path / f"result{suffix}"
    for _ in range(2):  # the second run replaces what the first wrote
        assert demo(*args, "--out", str(out), "--panels", "result") == 0
        assert written_by_cpabanim(out) and len(read_video(out)) == len(frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, out.name])


def test_an_interrupted_video_leaves_the_file_that_was_there(tmp_path):
    from cpabanim.commands.demo.panels import VideoWriter, write_video

    frames = np.zeros((3, 16, 16, 3), np.uint8)
    out = write_video(frames, tmp_path / "result.mp4", 25)
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt), VideoWriter(out, 25) as writer:
        writer.write(frames + 255)
        raise KeyboardInterrupt
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["result.mp4"]
