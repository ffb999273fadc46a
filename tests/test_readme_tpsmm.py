"""The README's "Use a published TPSMM model" commands, run as they are written.

TPSMM's published `vox.pth.tar` cannot be downloaded here; a checkpoint in its layout with random values stands in
(tests/test_import_checkpoint.py builds it from TPSMM's module structure, at a small width: the import reads the
sizes from the tensors). The commands are taken from the README's code block, so the README cannot drift from what
works. On real faces (../shared/data/faces) they run verbatim, face crop and ``--find-best-frame`` included; without
the clips, on a synthetic photo with ``--crop none`` instead of the face options (the face detector needs a face).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpabanim.data.video import read_video

from .conftest import PROJECT_ROOT, SHARED_FACES
from .test_import_checkpoint import tpsmm_checkpoint

SECTION = "### Use a published TPSMM model"
BIN = Path(sys.executable).parent
FRAMES = 4  # driving frames: the model runs at the preset's 256 px on the CPU


def readme_commands() -> list[str]:
    """The command lines of the section's bash block."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def write_mp4(frames: np.ndarray, path: Path) -> None:
    from cpabanim.commands.demo.panels import write_video

    write_video(frames, path, fps=10)


def real_inputs(folder: Path) -> None:
    """photo.jpg: a frame of one real clip; driving.mp4: FRAMES frames of another."""
    clips = sorted(SHARED_FACES.glob("*.mp4"))
    photo = read_video(clips[0], max_frames=2)[0]
    Image.fromarray(photo).save(folder / "photo.jpg", quality=95)
    write_mp4(read_video(clips[1], max_frames=FRAMES), folder / "driving.mp4")


def synthetic_inputs(folder: Path) -> None:
    """A photo and a driving video without faces: a bright disc that moves across a gradient."""
    size = 96
    y, x = np.mgrid[:size, :size]
    frames = []
    for t in range(FRAMES):
        disc = (x - 30 - 4 * t) ** 2 + (y - 48) ** 2 < 15**2
        frame = np.stack([x * 2, y * 2, np.full_like(x, 90)], -1).astype(np.uint8)
        frame[disc] = (240, 220, 200)
        frames.append(frame)
    Image.fromarray(frames[0]).save(folder / "photo.jpg", quality=95)
    write_mp4(np.stack(frames), folder / "driving.mp4")


def run_commands(folder: Path, commands: list[str]) -> None:
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "cpabanim", line
        done = subprocess.run([str(BIN / "cpabanim"), *argv[1:]], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.fixture
def tpsmm_folder(tmp_path: Path) -> Path:
    """A checkout's root as the README's commands expect it (its params.yaml, presets and experiments), holding
    ``vox.pth.tar`` as TPSMM's Logger writes it (random weights)."""
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path)
    for folder in ("presets", "experiments"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder)
    torch.save(tpsmm_checkpoint(), tmp_path / "vox.pth.tar")
    return tmp_path


def check_result(folder: Path) -> None:
    from cpabanim.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(folder / "models" / "tpsmm-vox.pt")
    assert model.params["motion"] == "tps"
    result = read_video(folder / "result.mp4")
    assert result.shape[0] == FRAMES and result.std() > 0, result.shape


@pytest.mark.skipif(not SHARED_FACES.is_dir(), reason=f"real face clips not found at {SHARED_FACES}")
def test_the_readme_commands_as_written_on_real_faces(tpsmm_folder: Path) -> None:
    real_inputs(tpsmm_folder)
    run_commands(tpsmm_folder, readme_commands())
    check_result(tpsmm_folder)


def test_the_readme_commands_without_the_face_options(tpsmm_folder: Path) -> None:
    synthetic_inputs(tpsmm_folder)
    commands = [line.replace(" --find-best-frame", "") for line in readme_commands()]
    commands = [f"{line} --crop none" if line.startswith("cpabanim demo") else line for line in commands]
    run_commands(tpsmm_folder, commands)
    check_result(tpsmm_folder)
