"""Stage ``cpabanim animate``: cross-identity image animation on a deterministic list of test pairs (paper §4.2).

Pairs (source image, driving video) come from different test videos, drawn with the global seed: the same
params and data always give the same list. Each pair is animated in every mode of ``animate.modes``
("standard" = absolute keypoints, "relative" = FOMM's relative motion, "avd" = animation via disentanglement).
Writes under ``{paths.outputs}/animation/``:

- ``pairs.json``: the pairs (source video and frame, driving video), modes, animator;
- ``<pair>/source.png``, ``<pair>/<mode>/<00000>.png`` (lossless), ``<pair>/<mode>.mp4`` / ``.gif``
  (source | driving | animation, for viewing).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cpabanim.errors import CpabanimError
from cpabanim.runtime import resolve_device
from cpabanim.animation.animator import load_animator
from cpabanim.data.frames import (
    frame_paths, read_frames, side_by_side, test_videos, to_tensor, to_uint8, write_frames, write_image,
    write_viewing_videos,
)
from cpabanim.animation.reconstruct import checkpoint_path

log = logging.getLogger(__name__)


def choose_pairs(videos: list[Path], num_pairs: int, seed: int) -> list[dict]:
    """A seeded list of ``{"name", "source", "source_frame", "driving"}``, source and driving from different videos.

    Drawn without replacement from all ordered pairs of distinct videos (so fewer pairs when there are few
    videos); with a single test video, it drives itself (logged: not cross-identity).
    """
    rng = np.random.default_rng(seed)
    names = [v.name for v in videos]
    candidates = list(itertools.permutations(range(len(names)), 2))
    if not candidates:
        log.warning("only one test video: it animates itself (no cross-identity pair exists)")
        candidates = [(0, 0)]
    order = rng.permutation(len(candidates))[:num_pairs]
    pairs = []
    for number, choice in enumerate(order):
        source, driving = candidates[choice]
        source_frame = int(rng.integers(0, len(frame_paths(videos[source]))))
        pairs.append({
            "name": f"{number:03d}_{names[source]}_to_{names[driving]}",
            "source": names[source],
            "source_frame": source_frame,
            "driving": names[driving],
        })
    return pairs


def animate_pairs(params, processed: Path, checkpoints: Path, out_root: Path) -> dict:
    """Animate a deterministic list of test pairs of ``processed`` with the model in ``checkpoints`` into
    ``out_root``; returns the record written to ``pairs.json``. ``params``: ``seed``, ``device``, ``animate``."""
    cfg = params["animate"]
    torch.manual_seed(params["seed"])
    device = resolve_device(params["device"])
    animator, info = load_animator(cfg["animator"], checkpoint_path(cfg["checkpoint"], checkpoints), device)
    videos = test_videos(processed)
    by_name = {v.name: v for v in videos}
    pairs = choose_pairs(videos, cfg["num_pairs"], params["seed"])
    if out_root.exists():
        shutil.rmtree(out_root)
    out_root.mkdir(parents=True)

    from cpabanim.tracking import log_artifact, log_image, set_tags

    skipped: dict[str, str] = {}
    set_tags({"cpabanim.animator": info["animator"]})
    for pair in tqdm(pairs, desc="animate", unit="pair"):
        source_uint8 = read_frames(by_name[pair["source"]])[pair["source_frame"]]
        driving_uint8 = read_frames(by_name[pair["driving"]])
        if cfg["max_frames"]:
            driving_uint8 = driving_uint8[: cfg["max_frames"]]
        pair["frames"] = len(driving_uint8)
        folder = out_root / pair["name"]
        write_image(source_uint8, folder / "source.png")
        source = to_tensor(source_uint8[None]).to(device)
        driving = to_tensor(driving_uint8).to(device)
        for mode in cfg["modes"]:
            try:
                with torch.no_grad():
                    generated = animator.animate(source, driving, mode=mode)
            except (NotImplementedError, CpabanimError) as err:
                skipped[mode] = f"the animator cannot animate in mode {mode!r}: {err}"
                log.warning("%s", skipped[mode])
                continue
            generated_uint8 = to_uint8(generated.float())
            if len(generated_uint8) != len(driving_uint8):
                raise CpabanimError(
                    f"animate({mode!r}) returned {len(generated_uint8)} frames "
                    f"for {len(driving_uint8)} driving frames"
                )
            write_frames(generated_uint8, folder / mode)
            strip = side_by_side(source_uint8, driving_uint8, generated_uint8)
            write_viewing_videos(strip, folder / mode, cfg["fps"], cfg["mp4"], cfg["gif"])
            log_image(strip[len(strip) // 2], f"animation/{pair['name']}_{mode}.png")
    record = {**info, "modes": [m for m in cfg["modes"] if m not in skipped], "skipped_modes": skipped,
              "pairs": pairs}
    (out_root / "pairs.json").write_text(json.dumps(record, indent=2))
    log_artifact(out_root / "pairs.json")
    log.info("animated %d pairs in modes %s into %s", len(pairs), record["modes"], out_root)
    return record
