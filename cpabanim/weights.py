"""The pretrained weights the project uses (VGG19, DINO, SAM), where they are looked for, and the one safe way any
PyTorch file (weights and checkpoints) is read.

Each entry gives the official URL, the file name and what is known of its hash, for a download stage
(``cpabanim weights NAME`` or ``cpabanim weights auto``) to fetch and verify. Lookup order:
``{paths.weights}/<filename>``, then the torch hub cache (``$TORCH_HOME/hub/checkpoints/<filename>``, where
torchvision/torch.hub put them).

:func:`load_weights` is the one way a weight file is read: its hash is checked first (the registry's prefix,
SAM's full sha256, or for DINO, which publishes none, the ``<file>.sha256`` the download stage recorded),
then it is loaded with ``torch.load(weights_only=True)``. A corrupt file is one error line naming the file and
the fix (delete it, ``cpabanim weights NAME``), never a suggestion to load it unsafely.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpabanim.errors import CpabanimError, MissingWeightsError

SIDECAR_SUFFIX = ".sha256"  # the sha256 the download stage saw, beside a file whose publisher gives none
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already hashed in this process


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    filename: str
    sha256_prefix: str | None  # torchvision/torch.hub convention: the first hex digits of the file's sha256
    used_by: str


# The normalisation every ImageNet-trained network here expects (VGG19, DINO, the re-id network): one home.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images):
    """(B, 3, H, W) RGB in [0, 1] -> ImageNet-normalised, on the images' device and dtype."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


WEIGHTS: dict[str, WeightFile] = {
    "vgg19": WeightFile(
        "vgg19",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "vgg19-dcbb9e9d.pth",
        "dcbb9e9d",
        "loss.perceptual=vgg (torchvision VGG19, ImageNet)",
    ),
    "dino_vitb8": WeightFile(
        "dino_vitb8",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
        "dino_vitbase8_pretrain.pth",
        None,  # DINO publishes no hash; the download stage records the sha256 it gets
        "loss.structure=dino (DINO ViT-B/8, facebookresearch/dino)",
    ),
}


def search_paths(name: str, weights_dir: str | Path | None = None) -> list[Path]:
    """Where the file of ``name`` is looked for, in order."""
    import torch

    entry = WEIGHTS[name]
    paths = []
    if weights_dir is not None:
        paths.append(Path(weights_dir) / entry.filename)
    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / entry.filename)
    return paths


def find_weights(name: str, weights_dir: str | Path | None = None, alternative: str = "") -> Path:
    """Path of the weight file ``name``; raises :class:`MissingWeightsError` saying which file, where it was looked
    for and how to get it (plus the offline ``alternative`` setting, when there is one)."""
    entry = WEIGHTS[name]
    candidates = search_paths(name, weights_dir)
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in candidates)
    hint = f" Or choose the offline alternative: {alternative}." if alternative else ""
    raise MissingWeightsError(
        f"{entry.used_by} needs the weight file {entry.filename}, not found (looked in: {where}). "
        f"Get it with `cpabanim weights {name}` or download {entry.url} into {candidates[0].parent}.{hint}"
    )


def expected_hash(name: str, path: Path | None = None) -> str | None:
    """What the sha256 of weight file ``name`` must start with: the registry's prefix (torchvision's file-name
    convention), SAM's full published sha256, else the sidecar ``<path>.sha256`` written at download; None
    when nothing is known."""

    if name in SAM_WEIGHTS:
        return SAM_WEIGHTS[name]["sha256"]
    if WEIGHTS[name].sha256_prefix:
        return WEIGHTS[name].sha256_prefix
    sidecar = None if path is None else path.with_name(path.name + SIDECAR_SUFFIX)
    recorded = sidecar.read_text().split() if sidecar is not None and sidecar.is_file() else []
    return recorded[0] if recorded else None


def verify_hash(path: Path, name: str) -> bool:
    """True when the file's sha256 starts with what is expected of ``name`` (or nothing is known)."""
    from cpabanim.files import sha256_file

    prefix = expected_hash(name, Path(path))
    return not prefix or sha256_file(path).startswith(prefix)


def redownload_hint(name: str, path: Path) -> str:
    """The fix for a bad weight file, as the error messages give it."""
    return f"delete {path} and download it again: `cpabanim weights {name}`"


def check_weights(path: str | Path, name: str) -> Path:
    """``path`` when its hash is the expected one for ``name``; else :class:`CpabanimError` naming the file and
    the fix. A file already checked in this process (same size and mtime) is not hashed again."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return path
    prefix = expected_hash(name, path)
    if prefix:
        from cpabanim.files import sha256_file

        actual = sha256_file(path)
        if not actual.startswith(prefix):
            raise CpabanimError(
                f"weight file {path} is corrupt or not the official {name} file (sha256 "
                f"{actual[:16]}... does not start with {prefix[:16]}); {redownload_hint(name, path)}"
            )
    _VERIFIED.add(key)
    return path


def load_weights(name: str, path: str | Path, map_location: Any = "cpu") -> Any:
    """The content (a state dict) of weight file ``name`` at ``path``: hash checked (:func:`check_weights`),
    then read with ``torch.load(weights_only=True)``; every failure is one :class:`CpabanimError` line."""

    path = check_weights(path, name)
    return safe_torch_load(path, f"weight file ({name})", redownload_hint(name, path), map_location)


def _legacy_numpy_globals() -> list[Any]:
    """The numpy globals a format-1 checkpoint's RNG state needs: constructing a plain numeric array runs no
    code, so they are safe to allow (torch documents this allow-list for numpy arrays)."""
    import numpy as np
    from numpy._core import multiarray

    uint32_dtype = type(np.dtype(np.uint32))
    return [
        multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        uint32_dtype,
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    ]  # as numpy 1.x wrote it


def _weights_only_reason(exc: BaseException) -> tuple[str | None, str]:
    """(why the file is unsafe, or None when it is merely unreadable; a one-line reason) from torch's error,
    without torch's advice to retry with the unsafe loader (never an option here)."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if detail:
        reason = detail.group(1).split(". Please use")[0].strip()
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
        reason = lines[0] if lines else type(exc).__name__
    global_name = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    operand = re.search(r"Unsupported operand (\S+)", text)
    if global_name:
        unsafe = (
            f"loading it would call {global_name.group(1)}, i.e. run code from the file; cpabanim loads only "
            "plain tensors and containers. Do not use files of unknown origin"
        )
    elif operand:  # random bytes land here as often as a pickle protocol torch's safe loader does not read
        unsafe = (
            f"it is corrupt or not a plain PyTorch file (pickle instruction {operand.group(1)}, which safe "
            "loading does not execute)"
        )
    else:
        unsafe = None
    return unsafe, f"{type(exc).__name__}: {reason}"[:300]


def safe_torch_load(path: str | Path, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one :class:`CpabanimError` line.

    Args:
        path: the file.
        what: what the file should be, for the message ("checkpoint", "weight file vgg19 (...)").
        fix: the sentence that tells the user what to do (delete and re-download / retrain).
    A file whose pickle asks for code (any global outside torch's allow-list and the numpy arrays of
    format-1 checkpoints) is refused as unsafe: it is never loaded with the unsafe loader.
    """
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe, reason = _weights_only_reason(exc)
        if unsafe:
            raise CpabanimError(f"{what} {path} refused: {unsafe}; {fix}") from None
        raise CpabanimError(f"{what} {path} is corrupt or not a PyTorch file ({reason}); {fix}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError) as exc:
        # truncated zip, random bytes, unreadable file: torch raises all of these
        _, reason = _weights_only_reason(exc)
        raise CpabanimError(f"{what} {path} is corrupt or not a PyTorch file ({reason}); {fix}") from None


# Official segment-anything checkpoints (facebookresearch/segment-anything README) and their sha256.
SAM_WEIGHTS: dict[str, dict[str, str]] = {
    "sam_vit_b": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "sha256": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    },
    "sam_vit_l": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "sha256": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    },
    "sam_vit_h": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "sha256": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    },
}
