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

:func:`safe_torch_load` is the one ``torch.load`` of the package (checkpoints, imports, weight files, re-id
weights): the zip directory is checked for decompression bombs first (:func:`check_archive`), and a refusal is one
line that tells a pickle that would run code from a file that is not PyTorch weights (:func:`pickle_runs_code`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
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


# A zip record that inflates more than this is refused as a decompression bomb: torch.save stores its records
# uncompressed, so a real checkpoint or weight file is near 1:1. Records under RATIO_CHECKED_ABOVE inflate to
# nothing dangerous whatever their ratio; nothing may inflate past the larger of MAX_UNPACKED_BYTES and the
# file's own size (a stored file holds what it inflates to).
MAX_COMPRESSION_RATIO = 100
RATIO_CHECKED_ABOVE = 1 << 20
MAX_UNPACKED_BYTES = 8 << 30
_PICKLE_READ_LIMIT = 64 << 20  # bytes of a pickle scanned to tell a code-running pickle from random bytes
# pickle instructions that import or call something: a pickle holding one of them builds objects, i.e. runs code
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
# what the refusal says instead of torch's advice to retry unsafely (docs/reliability.md: never suggested)
UNSAFE_ADVICE = "never unpickle it in full unless you trust where it came from"


def check_archive(path: Path, what: str, fix: str) -> None:
    """Refuse a zip (torch's file format) whose records would inflate past the bounds above, from its directory
    alone and before torch reads a byte of it: torch would inflate a 4 GiB record of a 4 MB file into memory.
    Anything else (a bare pickle, random bytes, a broken zip) is left to torch's reader, which names it."""
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
        size = path.stat().st_size
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    for record in records:
        if record.file_size > RATIO_CHECKED_ABOVE and record.file_size > MAX_COMPRESSION_RATIO * record.compress_size:
            raise CpabanimError(
                f"{what} {path} refused: its record {record.filename} inflates {record.compress_size} bytes to "
                f"{record.file_size} (over {MAX_COMPRESSION_RATIO}:1, a decompression bomb; torch never compresses "
                f"its files); {fix}"
            )
    total = sum(record.file_size for record in records)
    if total > max(MAX_UNPACKED_BYTES, size):
        raise CpabanimError(
            f"{what} {path} refused: its records inflate to {total} bytes, more than the "
            f"{MAX_UNPACKED_BYTES >> 30} GiB a file of {size} bytes may hold here; {fix}"
        )


def _pickle_bytes(path: Path) -> bytes:
    """The pickle torch would unpickle: a zip's ``data.pkl`` record (its size already bounded by
    :func:`check_archive`) or the head of a bare file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return archive.read(names[0])[:_PICKLE_READ_LIMIT] if names else b""
    with open(path, "rb") as handle:
        return handle.read(_PICKLE_READ_LIMIT)


def pickle_runs_code(path: str | Path) -> bool:
    """True when ``path`` holds a well-formed pickle that imports or calls something (a pickle of objects, not of
    tensors), read with :mod:`pickletools`, which parses the instructions without executing any. Random bytes
    and truncated files are not well-formed: False. Tells the two refusals of :func:`safe_torch_load` apart."""
    import io
    import pickletools

    try:
        operations = {op.name for op, _, _ in pickletools.genops(io.BytesIO(_pickle_bytes(Path(path))))}
    except Exception:  # any malformed stream: genops raises ValueError, EOFError, struct errors, ...
        return False
    return bool(operations & _CODE_OPCODES)


def _torch_reason(exc: BaseException) -> str:
    """Torch's error in one line without its advice to retry with the unsafe loader (never an option here)."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if detail:
        reason = detail.group(1).split(". Please use")[0].strip()
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
        reason = lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {reason}"[:300]


def _load_failure(path: Path, exc: BaseException, what: str, fix: str) -> CpabanimError:
    """The one line for a file torch's safe loader refused: a pickle that would run code (named, with the warning
    never to load it unsafely), else a file that is not PyTorch weights (corrupt, truncated, another format)."""
    called = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if called or (isinstance(exc, pickle.UnpicklingError) and pickle_runs_code(path)):
        calls = f": it calls {called.group(1)}" if called else ""
        return CpabanimError(
            f"{what} {path}: refused: loading it would run code (a pickle with objects other than tensors{calls}); "
            f"{UNSAFE_ADVICE} — {fix}"
        )
    return CpabanimError(
        f"{what} {path} is not a PyTorch weights file (corrupt, truncated or another format: "
        f"{_torch_reason(exc)}); {fix}"
    )


def safe_torch_load(path: str | Path, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` after :func:`check_archive`; any failure is one
    :class:`CpabanimError` line (:func:`_load_failure`), never torch's pages of advice.

    Args:
        path: the file.
        what: what the file should be, for the message ("checkpoint", "weight file (vgg19)").
        fix: the sentence that tells the user what to do (delete and re-download / retrain / where to get it).
    A file whose pickle asks for code (any global outside torch's allow-list and the numpy arrays of
    format-1 checkpoints) is refused as unsafe: it is never loaded with the unsafe loader.
    """
    import warnings

    import torch

    path = Path(path)
    check_archive(path, what, fix)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # the refusal below says it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        KeyError,
        AttributeError,
        TypeError,
    ) as exc:  # truncated zip, random bytes, unreadable file, a refused pickle: torch raises all of these
        raise _load_failure(path, exc, what, fix) from None


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


def sam_weights_path(name: str, weights_dir: str | Path) -> Path:
    """Where the official SAM checkpoint ``name`` (sam_vit_b, ...) lives once downloaded: its file name in
    ``weights_dir`` (``paths.weights``)."""
    from urllib.parse import urlparse

    return Path(weights_dir) / Path(urlparse(SAM_WEIGHTS[name]["url"]).path).name
