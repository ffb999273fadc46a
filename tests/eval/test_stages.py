"""reconstruct -> animate -> evaluate end to end on a tiny fake dataset, with the identity animator."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cpabanim.animation.pairs import choose_pairs
from cpabanim.data.frames import read_frames
from cpabanim.evaluation.cache import ExtractionCache

IDENTITY = ("reconstruct.animator=identity", "animate.animator=identity", "animate.num_pairs=2")


def test_identity_animator_gives_perfect_reconstruction_metrics(fake_dataset):
    project = fake_dataset
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, *IDENTITY) == 0, stage
    out = project.outputs
    # lossless frames, one per driving frame, plus viewing files
    for number in range(3):
        generated = read_frames(out / "reconstruction" / f"video{number}")
        assert np.array_equal(generated, read_frames(project.processed / "test" / f"video{number}"))
        assert (out / "reconstruction" / f"video{number}.mp4").stat().st_size > 0
        assert (out / "reconstruction" / f"video{number}.gif").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recon/l1"] == 0.0
    assert metrics["recon/psnr"] == pytest.approx(100.0)
    assert metrics["recon/ssim"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["recon/frames"] == 15
    assert all(isinstance(v, float) for v in metrics.values())
    # the no-motion baseline beside it, on the same frames: copying frame 0 is perfect only on frame 0
    videos = [read_frames(project.processed / "test" / f"video{n}").astype(np.float64) / 255 for n in range(3)]
    copy_l1 = np.concatenate([np.abs(v - v[:1]).mean(axis=(1, 2, 3)) for v in videos]).mean()
    assert metrics["baseline/copy_source/recon/l1"] == pytest.approx(copy_l1, rel=1e-6)
    assert metrics["baseline/copy_source/recon/psnr"] < 100 and "baseline/copy_source/recon/frames" not in metrics
    assert metrics["baseline/source_unchanged/anim/l1_first"] == 0.0
    assert not any(k.startswith("baseline/source_unchanged/anim/relative") for k in metrics)  # one for all modes
    # animation metrics exist for every mode; the identity "animation" is the driving video
    pairs = json.loads((out / "animation" / "pairs.json").read_text())["pairs"]
    assert len(pairs) == 2 and all(p["source"] != p["driving"] for p in pairs)
    for mode in ("relative", "standard", "avd"):
        assert f"anim/{mode}/l1_first" in metrics
        pair = pairs[0]
        generated = read_frames(out / "animation" / pair["name"] / mode)
        assert np.array_equal(generated, read_frames(project.processed / "test" / pair["driving"]))
    # the default has no faces: AKD / MKR / AED are recorded as not applicable, LPIPS / FID as not selected
    reasons = json.loads((out / "metrics_unavailable.json").read_text())
    for name in ("akd", "mkr", "aed", "lpips", "fid"):
        assert "recon/" + name not in metrics and "not applicable" in reasons["recon/" + name]
    with open(out / "metrics_per_video.csv") as handle:
        rows = list(csv.DictReader(handle))
    # the rows of all frames first, then those of each motion-size bin (optical flow here: not synthetic, no faces)
    pooled = [r for r in rows if not r["motion_bin"]]
    assert len(pooled) == 3 + 2 * 3 and {r["part"] for r in pooled} == {"reconstruction", "animation"}
    assert rows[: len(pooled)] == pooled and {r["motion_bin"] for r in rows} == {"", "small", "medium", "large"}
    assert all(float(r["motion_size"]) > 0 for r in pooled)  # the blob moves
    sizes = [metrics[f"motion_bin/{b}/recon/motion_size"] for b in ("small", "medium", "large")]
    assert sizes == sorted(sizes) and sum(metrics[f"motion_bin/{b}/recon/frames"] for b in ("small", "large")) > 0


class SourceAnimator:
    """Always predicts the source image: reconstruction L1 of frame t is then mean |frame_t - frame_0|."""

    def reconstruct(self, source, driving):
        return {"prediction": source.clone()}

    def animate(self, source, driving_video, mode="relative"):
        return source.expand(len(driving_video), -1, -1, -1).clone()


def test_reconstruction_l1_matches_a_direct_computation(fake_dataset, monkeypatch):
    project = fake_dataset
    monkeypatch.setattr(
        "cpabanim.animation.reconstruct.load_animator", lambda *a: (SourceAnimator(), {"animator": "source"})
    )
    monkeypatch.setattr("cpabanim.animation.pairs.load_animator", lambda *a: (SourceAnimator(), {"animator": "source"}))
    for stage in ("reconstruct", "animate", "evaluate"):
        assert project.run(stage, "animate.num_pairs=1", "animate.modes=[relative]") == 0, stage
    videos = [read_frames(project.processed / "test" / f"video{n}").astype(np.float64) / 255 for n in range(3)]
    expected = np.concatenate([np.abs(v - v[:1]).mean(axis=(1, 2, 3)) for v in videos]).mean()
    metrics = json.loads((project.outputs / "metrics.json").read_text())
    assert metrics["recon/l1"] == pytest.approx(expected, rel=1e-6)  # float32 pixels
    assert 0 < metrics["recon/ssim"] < 1 and metrics["recon/psnr"] < 100
    assert metrics["anim/relative/l1_first"] == 0.0  # the source itself
    # this animator *is* the no-motion baseline: its scores equal the baseline's, computed on the same frames
    for name in ("l1", "psnr", "ssim"):
        assert metrics[f"baseline/copy_source/recon/{name}"] == pytest.approx(metrics[f"recon/{name}"], rel=1e-6)
    assert metrics["baseline/source_unchanged/anim/l1_first"] == 0.0
    with open(project.outputs / "metrics_per_video.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["part"] == "reconstruction"]
    assert all(float(r["baseline_l1"]) == pytest.approx(float(r["l1"]), rel=1e-5) for r in rows)


def test_pairs_are_seeded_and_cross_identity(tmp_path):
    videos = []
    for name in ("a", "b", "c", "d"):
        (tmp_path / name).mkdir()
        for t in range(3):
            (tmp_path / name / f"{t:05d}.png").touch()
        videos.append(tmp_path / name)
    first, again, other = choose_pairs(videos, 5, 0), choose_pairs(videos, 5, 0), choose_pairs(videos, 5, 1)
    assert first == again and first != other
    assert len({(p["source"], p["driving"]) for p in first}) == 5
    assert all(p["source"] != p["driving"] and 0 <= p["source_frame"] < 3 for p in first)


def test_extraction_cache_reuses_results_by_content(tmp_path):
    calls = []

    class Counting:
        name = "counting-v1"

        def __call__(self, frames):
            calls.append(len(frames))
            return frames.reshape(len(frames), -1).mean(axis=1, keepdims=True).astype(float)

    cache = ExtractionCache(tmp_path / "cache")
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    first = cache(Counting(), frames)
    assert np.array_equal(cache(Counting(), frames.copy()), first) and calls == [2]
    changed = frames.copy()
    changed[0, 0, 0, 0] += 1
    cache(Counting(), changed)
    assert calls == [2, 2] and (cache.hits, cache.misses) == (1, 2)


def test_user_errors_exit_cleanly(fake_dataset, caplog):
    project = fake_dataset
    assert project.run("reconstruct") == 1  # no checkpoint trained yet
    assert "cpabanim train" in caplog.text
    assert project.run("reconstruct", *IDENTITY) == 0
    assert project.run("animate", *IDENTITY) == 0
    # akd with no keypoint extractor (auto would record it as not applicable here: this data names no source)
    assert project.run("evaluate", "evaluate.metrics=[l1, akd]", "evaluate.keypoints=none") == 1
    assert "evaluate.keypoints" in caplog.text
    assert project.run("animate", "animate.modes=[sideways]") == 1
    assert "sideways" in caplog.text


def test_evaluate_without_outputs_says_what_to_run(fake_dataset, caplog):
    assert fake_dataset.run("evaluate") == 1
    assert "cpabanim reconstruct" in caplog.text


def test_metrics_without_weights_are_recorded_as_unavailable(fake_dataset, monkeypatch):
    """Body AED without re-id weights, LPIPS/FID without their weights on disk: reasons, never made-up numbers."""
    project = fake_dataset
    monkeypatch.setenv("TORCH_HOME", str(project.root / "empty_torch_home"))  # no downloaded weights there
    for stage in ("reconstruct", "animate"):
        assert project.run(stage, *IDENTITY) == 0
    assert project.run("evaluate", "evaluate.metrics=[l1, aed, lpips, fid]", "evaluate.identity=reid") == 0
    metrics = json.loads((project.outputs / "metrics.json").read_text())
    reasons = json.loads((project.outputs / "metrics_unavailable.json").read_text())
    assert metrics["recon/l1"] == 0.0
    assert not any(key.endswith(("aed", "aed_source", "lpips", "fid")) for key in metrics)
    assert "reid_weights" in reasons["recon/aed"]
    assert "weights" in reasons["recon/lpips"] and "weights" in reasons["recon/fid"]


class Counting:
    """An extractor that counts its calls (its output: each frame's mean)."""

    name = "counting-v1"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, frames):
        self.calls += 1
        return frames.reshape(len(frames), -1).mean(axis=1, keepdims=True).astype(float)


def test_the_cache_counts_the_test_frames_apart_and_waits_for_a_result_another_job_is_extracting(tmp_path):
    import os
    import socket
    import threading

    from cpabanim.data.video import frames_digest

    extractor, frames = Counting(), np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    first = ExtractionCache(tmp_path)
    first(extractor, frames, "reference")
    first(extractor, frames, "reference")
    assert first.counts["reference"] == {"hits": 1, "misses": 1, "frames": 2} and extractor.calls == 1
    # another job holds the lock of these frames (a live process: this one) and writes the result 0.3 s later
    other = frames + 1
    path = tmp_path / extractor.name / f"{frames_digest(other)}.npz"
    lock = path.with_name(path.name + ".lock")
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")

    def the_other_job():
        np.savez_compressed(path, values=np.full((2, 1), 7.0))
        lock.unlink()

    timer = threading.Timer(0.3, the_other_job)
    timer.start()
    second = ExtractionCache(tmp_path)
    assert np.array_equal(second(extractor, other, "reference"), np.full((2, 1), 7.0))
    timer.join()
    assert extractor.calls == 1 and second.counts["reference"] == {"hits": 1, "misses": 0, "frames": 0}
    # a lock left by a process that is gone (killed) is taken over at once
    third = frames + 2
    path = tmp_path / extractor.name / f"{frames_digest(third)}.npz"
    path.with_name(path.name + ".lock").write_text(f"{socket.gethostname()} 999999999")
    second(extractor, third)
    assert extractor.calls == 2 and second.counts["generated"]["misses"] == 1 and not list(tmp_path.rglob("*.lock"))
