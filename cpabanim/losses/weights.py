"""Registry of the pretrained weights the losses use (SAM's checkpoints are in ``cpabanim.data.sources.SAM_WEIGHTS``), and where they are looked for (never downloaded here).

Each entry gives the official URL, the file name and what is known of its hash, for a download stage
(``cpabanim download --weights NAME`` or ``--weights auto``) to fetch and verify. Lookup order: ``{paths.weights}/<filename>``, then the
torch hub cache (``$TORCH_HOME/hub/checkpoints/<filename>``, where torchvision/torch.hub put them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpabanim.errors import MissingWeightsError


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    filename: str
    sha256_prefix: str | None  # torchvision/torch.hub convention: the first hex digits of the file's sha256
    used_by: str


WEIGHTS: dict[str, WeightFile] = {
    "vgg19": WeightFile(
        "vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "vgg19-dcbb9e9d.pth", "dcbb9e9d",
        "loss.perceptual=vgg (torchvision VGG19, ImageNet)"),
    "dino_vitb8": WeightFile(
        "dino_vitb8", "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
        "dino_vitbase8_pretrain.pth", None,  # DINO publishes no hash; the download stage records the sha256 it gets
        "loss.structure=dino (DINO ViT-B/8, facebookresearch/dino)"),
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
        f"Get it with `cpabanim download --weights {name}` or download {entry.url} into {candidates[0].parent}.{hint}")


def verify_hash(path: Path, name: str) -> bool:
    """True when the file's sha256 starts with the registry's prefix (or no prefix is known)."""
    import hashlib

    prefix = WEIGHTS[name].sha256_prefix
    if not prefix:
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(prefix)
