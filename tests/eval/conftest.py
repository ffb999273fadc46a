"""Fixtures of the evaluation tests: a tiny processed dataset in tmp_path and a stage runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpabanim.cli import main
from cpabanim.config.paths import AVD_FOLDER

from ..conftest import PROJECT_ROOT


def write_video(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")


def moving_blob_video(seed: int, frames: int = 5, size: int = 64) -> np.ndarray:
    """uint8 (T, size, size, 3): a coloured disc moving over a textured background (deterministic)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for t in range(frames):
        frame = background.copy()
        cx, cy = size / 3 + 3 * t, size / 2 + rng.uniform(-2, 2)
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (size / 6) ** 2] = colour
        out.append(frame)
    return np.stack(out)


class Project:
    """A params.yaml pointing every path into tmp_path, and ``run(stage, *overrides)`` through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.params = root / "params.yaml"
        shutil.copy(PROJECT_ROOT / "params.yaml", self.params)
        self.processed = root / "processed"
        self.base = [
            f"paths.processed={self.processed}",
            f"paths.outputs={root / 'outputs'}",
            f"paths.checkpoints={root / 'checkpoints'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "tracking.enabled=false",  # the files are checked here; tracking in tests/pipeline/test_tracking.py
        ]
        self.outputs, self.checkpoints = self.experiment_folders()
        # the model the stages read: the avd stage's (reconstruct and animate check that it exists; the identity
        # animator never reads the empty folder)
        self.avd = self.checkpoints.parent / AVD_FOLDER / self.checkpoints.name
        self.avd.mkdir(parents=True, exist_ok=True)

    def experiment_folders(self) -> tuple[Path, Path]:
        """(outputs, checkpoints) of the params' experiment, as the stages resolve them."""
        from cpabanim.config.layers import load_params
        from cpabanim.config.paths import ExperimentPaths

        params = load_params(self.params, overrides=self.base)
        paths = ExperimentPaths.of(params["paths"], params["experiment"], params["seed"])
        return paths.outputs, paths.checkpoints

    def run(self, stage: str, *overrides: str) -> int:
        argv = [stage, "--params", str(self.params)]
        for item in (*self.base, *overrides):
            argv += ["--set", item]
        return main(argv)


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def fake_dataset(project) -> Project:
    """Three tiny test videos (5 frames, 64 px) in ``{processed}/test/``."""
    for number in range(3):
        write_video(project.processed / "test" / f"video{number}", moving_blob_video(number))
    return project


SYNTHETIC = ("data.synthetic.num_train=2", "data.synthetic.num_test=3", "data.synthetic.num_frames=6")


@pytest.fixture
def synthetic_dataset(project) -> Project:
    """The embedded default's synthetic source, tiny (3 test videos of 6 frames, 64 px), written by the real
    preprocess (so ``{processed}/manifest.json`` names the source, as ``evaluate.keypoints: auto`` reads it)."""
    from cpabanim.config.layers import load_params
    from cpabanim.data.preprocess import preprocess

    params = load_params(project.params, overrides=[*project.base, *SYNTHETIC])
    preprocess(params["data"], params["data"]["seed"], project.root / "raw", project.processed)
    return project
