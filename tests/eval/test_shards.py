"""Sharded reconstruct and evaluate (docs/evaluation.md, "Shards"): 1 shard and N give the same files, byte for
byte; a real SIGKILL mid-run is resumed, redoing only what was in flight; a study of 2 experiments x 2 seeds
extracts each test frame once (the shared extraction cache)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpabanim.config.layers import load_params
from cpabanim.data import layout
from tests.conftest import PROJECT_ROOT

checkpoint = pytest.importorskip("cpabanim.models.checkpoint", reason="the model package is not available")

METRICS_FILES = ("metrics.json", "metrics_unavailable.json", "metrics_per_video.csv")
SMALL = ("animate.num_pairs=3", "animate.modes=[relative]")


def dataset(project, num_test: int) -> None:
    """The embedded default's synthetic source, ``num_test`` test videos of 6 frames written by the real
    preprocess, and an untrained checkpoint of the default model (predictions that differ from the driving
    frames)."""
    from cpabanim.config.typed import ModelConfig
    from cpabanim.data.preprocess import preprocess
    from cpabanim.models.full import AnimationModel

    sets = [f"data.synthetic.num_test={num_test}", "data.synthetic.num_frames=6", "data.synthetic.num_train=2"]
    sets.append("data.frame_size=32")
    params = load_params(project.params, overrides=[*project.base, *sets])
    preprocess(params["data"], params["data"]["seed"], project.root / "raw", project.processed)
    model = AnimationModel(ModelConfig.from_mapping(params["model"]))
    checkpoint.save_checkpoint(project.avd / "last.pt", model, params=params)


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (marks and temporary files aside), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_one_shard_and_three_give_the_same_files(project):
    dataset(project, num_test=5)
    runs = {}
    for shards in (1, 3):
        outputs = project.root / f"outputs{shards}"
        options = [*SMALL, f"paths.outputs={outputs}", f"reconstruct.shards={shards}", f"evaluate.shards={shards}"]
        for stage in ("reconstruct", "animate", "evaluate"):
            assert project.run(stage, *options) == 0, stage
        runs[shards] = outputs / "default" / "seed0"
    one, three = runs[1], runs[3]
    # the videos are spread over the shards, each in the shard its name hashes to
    used = [json.loads((three / "shards" / "reconstruct" / f"{k:03d}" / "done.json").read_text()) for k in range(3)]
    assert sum(1 for record in used if record["videos"]) > 1
    for k, record in enumerate(used):
        assert all(layout.shard_of(name, 3) == k for name in record["videos"])
    # the reconstruction folder as one job writes it: frames, viewing videos, explanation, index, L1 table
    recon = folder_bytes(one / "reconstruction")
    assert recon == folder_bytes(three / "reconstruction") and len(recon) > 5 * 6
    assert {"index.json", "l1_per_frame.csv"} <= set(recon) and any(k.startswith("explain/") for k in recon)
    for name in METRICS_FILES:
        assert (one / name).read_bytes() == (three / name).read_bytes(), name
    metrics = json.loads((one / "metrics.json").read_text())
    assert 0 < metrics["recon/l1"] < 1 and metrics["recon/frames"] == 30 and "anim/relative/l1_first" in metrics
    # the motion sizes and the metrics per motion-size bin are in those files too: they survive sharding
    assert sum(metrics[f"motion_bin/{b}/recon/frames"] for b in ("small", "medium", "large")) == 30
    assert "motion_bin/large/recon/l1" in metrics and "motion_bin/large/anim/relative/mkr_driving" in metrics
    table = (one / "metrics_per_video.csv").read_text().splitlines()
    assert table[0].startswith("part,video,mode,motion_bin,frames,motion_size,")
    assert sum(",large," in line for line in table) >= 2  # a video's and a pair's rows of the large bin at least
    # the pooled L1 of reconstruct: one mean over every frame, whatever the shards
    index = json.loads((three / "reconstruction" / "index.json").read_text())
    assert index["l1"] == pytest.approx(metrics["recon/l1"], rel=1e-5)


def _cli(project, stage: str, *options: str) -> list[str]:
    argv = [sys.executable, "-m", "cpabanim", stage, "--params", str(project.params)]
    for item in (*project.base, *options):
        argv += ["--set", item]
    return argv


def _kill_when(argv: list[str], done: Path, pattern: str, count: int, cwd: Path) -> set[Path]:
    """Start ``argv`` and SIGKILL it once ``done`` holds ``count`` files matching ``pattern``: the files then."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    job = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(done.glob(pattern))) < count and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()[-2000:]
    return set(done.glob(pattern))


def _mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def test_a_killed_reconstruct_and_evaluate_resume_to_the_bytes_of_an_uninterrupted_run(project):
    dataset(project, num_test=10)
    sets = [*SMALL, "reconstruct.gif=false"]  # the viewing GIFs are slow to write (the 1 vs 3 shards test has them)
    run = project.outputs
    shard = run / "shards" / "reconstruct" / "000"
    survivors = _kill_when(_cli(project, "reconstruct", *sets), shard / "records", "*.npz", 3, project.root)
    assert 3 <= len(survivors) < 10, "the shard must be killed half-way"
    assert not (shard / "done.json").exists() and not (run / "reconstruction" / "index.json").exists()
    finished = _mtimes([*survivors, *(shard / "frames" / p.stem for p in survivors)])
    assert project.run("reconstruct", *sets) == 0
    assert _mtimes(finished) == finished  # the videos finished before the kill were not made again
    assert len(list((shard / "records").glob("*.npz"))) == 10 and not list(shard.rglob(".*.tmp*"))
    resumed = folder_bytes(run / "reconstruction")
    shutil.move(run / "shards", project.root / "killed-shards")  # an uninterrupted run, from nothing
    assert project.run("reconstruct", *sets) == 0
    assert folder_bytes(run / "reconstruction") == resumed

    assert project.run("animate", *sets) == 0
    shard = run / "shards" / "evaluate" / "000"
    survivors = _kill_when(_cli(project, "evaluate", *sets), shard / "recon", "*.npz", 3, project.root)
    assert 3 <= len(survivors) < 10, "the shard must be killed half-way"
    finished = _mtimes(survivors)
    assert project.run("evaluate", *sets) == 0
    assert _mtimes(finished) == finished
    resumed = {name: (run / name).read_bytes() for name in METRICS_FILES}
    shutil.rmtree(run / "shards" / "evaluate")
    assert project.run("evaluate", *sets) == 0
    assert {name: (run / name).read_bytes() for name in METRICS_FILES} == resumed


class ShiftAnimator:
    """A stand-in model of each run: its prediction is the driving frame, darkened by the run's own amount (each
    run's generated frames differ; the test videos, the references, are the same for every run)."""

    amount = 0

    def reconstruct(self, source, driving):
        return {"prediction": driving * (1 - 0.01 * self.amount)}  # 0.99 to 0.96

    def animate(self, source, driving_video, mode="relative"):
        return driving_video * (0.95 - 0.01 * self.amount)  # 0.94 to 0.91: never another run's frames


def test_a_study_of_two_experiments_and_two_seeds_extracts_each_test_frame_once(project, monkeypatch):
    dataset(project, num_test=4)
    sets = [*SMALL, "evaluate.shards=2"]
    (project.root / "experiments").mkdir()
    shutil.copy(PROJECT_ROOT / "experiments" / "tps.yaml", project.root / "experiments")
    animator = ShiftAnimator()
    for module in ("reconstruct", "pairs"):
        monkeypatch.setattr(f"cpabanim.animation.{module}.load_animator", lambda *a: (animator, {"animator": "shift"}))
    studied = [(experiment, seed) for experiment in ("default", "tps") for seed in (0, 1)]
    for experiment, seed in studied:  # the stages check that their inputs exist; this model reads none
        (project.root / "checkpoints" / experiment / "avd" / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    for number, (experiment, seed) in enumerate(studied):
        animator.amount = number + 1
        options = [*sets, f"experiment={experiment}", f"seed={seed}"]
        for stage in ("reconstruct", "animate", "evaluate"):
            assert project.run(stage, *options) == 0, (stage, experiment, seed)
    counts = []  # each run's extractions of the test videos' frames, from its shards' records
    for experiment, seed in studied:
        shards = project.root / "outputs" / experiment / f"seed{seed}" / "shards" / "evaluate"
        records = [json.loads((shards / f"{k:03d}" / "done.json").read_text()) for k in range(2)]
        counts.append({key: sum(r["extraction"]["reference"][key] for r in records) for key in ("misses", "frames")})
    # the test videos (6 frames each; the pairs' driving videos are the same frames) and the pairs' source images
    pairs = json.loads((project.root / "outputs" / "tps" / "seed1" / "animation" / "pairs.json").read_text())
    sources = {(p["source"], p["source_frame"]) for p in pairs["pairs"]}
    assert counts[0] == {"misses": 4 + len(sources), "frames": 4 * 6 + len(sources)}
    assert counts[1:] == [{"misses": 0, "frames": 0}] * 3  # every later run reads them from the shared cache
    cache = project.root / "outputs" / ".eval_cache"
    generated = 4 + len({p["driving"] for p in pairs["pairs"]})  # per run (two pairs may animate the same frames)
    assert len(list(cache.rglob("*.npz"))) == 4 + len(sources) + 4 * generated and not list(cache.rglob("*.lock"))
    metrics = [json.loads((project.root / "outputs" / e / f"seed{s}" / "metrics.json").read_text()) for e, s in studied]
    assert len({m["recon/l1"] for m in metrics}) == 4  # four different "models"
